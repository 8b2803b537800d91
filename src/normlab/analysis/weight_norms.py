r"""Weight-norm dynamics of scale-invariant weights, and a model's weight-norm statistics.

**Growth under plain SGD.** For a scale-invariant weight (see :mod:`normlab.analysis.invariance`) the gradient
is orthogonal to the weight, :math:`\langle g_t, w_t\rangle = 0`, so one SGD step
:math:`w_{t+1} = w_t - \eta g_t` can only lengthen it (Salimans & Kingma 2016, arXiv:1602.07868, §2.2;
van Laarhoven 2017, arXiv:1706.05350; Arora, Li & Lyu 2019, arXiv:1812.03981):

.. math::
    \lVert w_{t+1}\rVert^2 = \lVert w_t\rVert^2 - 2\eta\langle g_t, w_t\rangle + \eta^2\lVert g_t\rVert^2
    = \lVert w_t\rVert^2 + \eta^2\lVert g_t\rVert^2.

Because :math:`\nabla L(\alpha w) = \nabla L(w)/\alpha`, the step changes the *direction* of :math:`w` as if the
learning rate were the **effective learning rate** :math:`\eta/\lVert w_t\rVert^2`; the growing norm slowly
anneals it. :class:`WeightNormTracker` records, per step and weight, :math:`\lVert w_t\rVert`,
:math:`\lVert g_t\rVert`, the effective learning rate, the cosine between :math:`g_t` and :math:`w_t`, the angle
between :math:`w_t` and :math:`w_{t+1}` (the *angular update*), and — for plain SGD — the prediction above with
the measured relative deviation :math:`|\lVert w_{t+1}\rVert^2 - \text{pred}| / \text{pred}`.

**Equilibrium with weight decay (and momentum).** With weight decay :math:`\lambda` and heavy-ball momentum
:math:`\beta` (PyTorch's SGD: :math:`b_t = \beta b_{t-1} + g_t + \lambda w_t`, :math:`w_{t+1} = w_t - \eta b_t`),
decay shrinks the norm while the orthogonal gradient steps grow it. Writing :math:`\tilde G = \lVert g_t\rVert^2
\lVert w_t\rVert^2` (the squared gradient at unit norm, independent of :math:`\lVert w\rVert` by scale invariance)
and treating successive gradients as uncorrelated, the per-step change to first order in :math:`\eta\lambda` is

.. math::
    \Delta\lVert w\rVert^2 \approx -\frac{2\eta\lambda}{1-\beta}\lVert w\rVert^2
    + \frac{\eta^2 \lVert g\rVert^2}{(1-\beta)^2},

(the momentum buffer sums the gradients with weights :math:`\beta^k`; its cross terms with the current weight
contribute the factor :math:`1/(1-\beta)^2`), so the norm settles where both balance:

.. math::
    \lVert w^*\rVert^4 = \frac{\eta\,\tilde G}{2\lambda(1-\beta)}, \qquad
    \theta^* = \sqrt{\frac{2\eta\lambda}{1+\beta}}\ \text{(angular update per step)}.

Without momentum the balance is exact for the recursion
:math:`\lVert w_{t+1}\rVert^2 = (1-\eta\lambda)^2\lVert w_t\rVert^2 + \eta^2\tilde G/\lVert w_t\rVert^2`, giving
:math:`\lVert w^*\rVert^4 = \eta\tilde G/(\lambda(2-\eta\lambda))`, which is what :func:`equilibrium_norm` returns
for ``momentum=0``. These are the equilibrium results of van Laarhoven (2017) (no momentum) and of Wan, Zhu,
Zhang & Sun (2021, "Spherical Motion Dynamics", arXiv:2006.08419; angular update
:math:`\sqrt{2\eta\lambda/(1+\beta)}`), see also Kosson, Messmer & Jaggi (2024, "Rotational Equilibrium",
arXiv:2305.17212). :meth:`WeightNormTracker.equilibrium` estimates :math:`\tilde G` from the recorded steps and
compares the predicted norm and angle with the measured ones.

**Weight-norm statistics.** :func:`weight_norm_stats` gives each conv/linear weight's Frobenius and spectral norm
and each normalization layer's per-channel gain — larger weight norms and gains amplify input perturbations, the
mechanism behind BatchNorm's adversarial vulnerability (Galloway et al. 2019, arXiv:1905.02161) — to pair with
:func:`normlab.analysis.robust_accuracy`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from normlab.registry import norm_kind
from normlab.analysis._table import format_table


def equilibrium_norm(lr: float, weight_decay: float, unit_grad_sq: float, momentum: float = 0.0) -> float:
    r"""The equilibrium norm of a scale-invariant weight under SGD with weight decay (see the module docstring).

    .. math::
        \lVert w^*\rVert = \Big(\frac{\eta\tilde G}{\lambda(2-\eta\lambda)}\Big)^{1/4}\ (\beta = 0), \qquad
        \Big(\frac{\eta\tilde G}{2\lambda(1-\beta)}\Big)^{1/4}\ (\beta > 0,\ \text{first order in}\ \eta\lambda)

    Args:
        lr: :math:`\eta`. weight_decay: :math:`\lambda > 0`. momentum: :math:`\beta \in [0, 1)`.
        unit_grad_sq: :math:`\tilde G = \lVert g\rVert^2 \lVert w\rVert^2`, the mean squared gradient at unit norm.

    Examples:
        >>> round(equilibrium_norm(0.1, 1e-3, 2.0), 4), round(equilibrium_norm(0.1, 1e-3, 2.0, momentum=0.9), 4)
        (3.1623, 5.6234)
    """
    if not weight_decay > 0:
        raise ValueError("equilibrium_norm: weight_decay must be > 0 (without decay the norm grows without bound)")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"equilibrium_norm: momentum must be in [0, 1), got {momentum!r}")
    if momentum == 0.0:
        return (lr * unit_grad_sq / (weight_decay * (2.0 - lr * weight_decay))) ** 0.25
    return (lr * unit_grad_sq / (2.0 * weight_decay * (1.0 - momentum))) ** 0.25


def equilibrium_angular_update(lr: float, weight_decay: float, momentum: float = 0.0) -> float:
    r"""The equilibrium angle (radians) between successive weights, :math:`\sqrt{2\eta\lambda/(1+\beta)}`.

    Examples:
        >>> round(equilibrium_angular_update(0.1, 5e-4, momentum=0.9), 5)
        0.00725
    """
    return math.sqrt(2.0 * lr * weight_decay / (1.0 + momentum))


@dataclass
class WeightNormRecord:
    """One optimizer step of one tracked weight."""

    step: int  #: the tracker's step counter (0-based)
    name: str  #: parameter name
    norm: float  #: ‖w_t‖ before the step
    grad_norm: float  #: ‖g_t‖ (``param.grad``, without weight decay)
    lr: float  #: η of the parameter's group
    weight_decay: float  #: λ of the group
    momentum: float  #: β of the group (0 when the optimizer has none)
    effective_lr: float  #: η / ‖w_t‖²
    grad_cosine: float  #: ⟨g_t, w_t⟩ / (‖g_t‖‖w_t‖), 0 for scale-invariant weights
    norm_after: float  #: ‖w_{t+1}‖
    angular_update: float  #: angle between w_t and w_{t+1} in radians
    predicted_norm_sq: float  #: ‖w_t‖² + η²‖g_t‖² for plain SGD (no momentum, no decay), else nan
    relative_deviation: float  #: |‖w_{t+1}‖² − predicted| / predicted, else nan


def _plain_sgd(optimizer: torch.optim.Optimizer, group: dict) -> bool:
    return (isinstance(optimizer, torch.optim.SGD) and not group.get("momentum", 0) and not group.get(
        "weight_decay", 0) and not group.get("maximize", False))


@dataclass
class WeightNormEquilibrium:
    """Predicted against measured equilibrium of one weight over a window of recorded steps."""

    name: str
    lr: float
    weight_decay: float
    momentum: float
    unit_grad_sq: float  #: mean of ‖g‖²‖w‖² over the window, the G̃ of the formula
    predicted_norm: float  #: :func:`equilibrium_norm` (nan without weight decay or for non-SGD optimizers)
    measured_norm: float  #: mean ‖w‖ over the window
    predicted_angular_update: float  #: :func:`equilibrium_angular_update`
    measured_angular_update: float  #: mean angle between successive weights over the window


class WeightNormTracker:
    r"""Record the norm dynamics of chosen weights during training (theory in the module docstring).

    Attach it to an optimizer (``tracker.attach(optimizer)`` uses the optimizer's step pre/post hooks) or call
    :meth:`before_step` and :meth:`after_step` around ``optimizer.step()`` yourself. Norms are computed in float64
    from the weights in their own dtype.

    Args:
        model: the model whose parameters are tracked.
        parameters: parameter names to track; default every parameter with ≥ 2 dims (conv and linear weights,
            weight normalization's direction).
        every: record one step in ``every`` (the others are not measured at all). Default: 1.

    Examples:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> tracker = WeightNormTracker(model, ["0.weight"]).attach(optimizer)
        >>> for _ in range(3):
        ...     optimizer.zero_grad()
        ...     model(torch.randn(16, 4)).square().mean().backward()
        ...     optimizer.step()
        >>> [r.relative_deviation < 1e-3 for r in tracker.records]
        [True, True, True]
    """

    def __init__(self, model: nn.Module, parameters: Sequence[str] | None = None, *, every: int = 1) -> None:
        named = dict(model.named_parameters())
        if parameters is None:
            names = [n for n, p in named.items() if p.dim() >= 2 and p.requires_grad]
        else:
            names = list(parameters)
            unknown = [n for n in names if n not in named]
            if unknown:
                raise ValueError(f"WeightNormTracker: unknown parameter names {unknown}; valid: {list(named)}")
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"WeightNormTracker: every must be a positive int, got {every!r}")
        self.parameters: dict[str, nn.Parameter] = {n: named[n] for n in names}
        self.every = every
        self.records: list[WeightNormRecord] = []
        self.step_count = 0
        self._pending: dict[str, tuple] | None = None
        self._handles: list = []

    # --- hooking into a training loop -------------------------------------------------------------------------
    def attach(self, optimizer: torch.optim.Optimizer) -> WeightNormTracker:
        """Measure around every ``optimizer.step()`` from now on; returns ``self``."""
        self._handles.append(optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.before_step(opt)))
        self._handles.append(optimizer.register_step_post_hook(lambda opt, args, kwargs: self.after_step()))
        return self

    def detach(self) -> None:
        """Remove the hooks installed by :meth:`attach`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def before_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Record ‖w_t‖, ‖g_t‖ and the hyperparameters; call after ``backward()``, before ``optimizer.step()``."""
        self._pending = None
        if self.step_count % self.every:
            return
        groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        pending = {}
        for name, param in self.parameters.items():
            group = groups.get(id(param))
            if group is None or param.grad is None:
                continue
            w = param.detach().to(torch.float64).clone()
            g = param.grad.detach().to(torch.float64)
            lr = float(group["lr"])
            pending[name] = (w, g.norm().item(), (g * w).sum().item(), lr, float(group.get("weight_decay", 0.0)),
                             float(group.get("momentum", 0.0)), _plain_sgd(optimizer, group))
        self._pending = pending

    def after_step(self) -> None:
        """Record ‖w_{t+1}‖ and compare with the prediction; call right after ``optimizer.step()``."""
        pending, self._pending = self._pending, None
        step, self.step_count = self.step_count, self.step_count + 1
        if not pending:
            return
        for name, (w, g_norm, g_dot_w, lr, wd, momentum, plain) in pending.items():
            w_next = self.parameters[name].detach().to(torch.float64)
            norm, norm_after = w.norm().item(), w_next.norm().item()
            cos_step = (w * w_next).sum().item() / max(norm * norm_after, 1e-300)
            predicted = norm**2 + (lr * g_norm) ** 2 if plain else float("nan")
            self.records.append(WeightNormRecord(
                step=step, name=name, norm=norm, grad_norm=g_norm, lr=lr, weight_decay=wd, momentum=momentum,
                effective_lr=lr / norm**2 if norm > 0 else float("inf"),
                grad_cosine=g_dot_w / (g_norm * norm) if g_norm * norm > 0 else 0.0,
                norm_after=norm_after, angular_update=math.acos(min(1.0, max(-1.0, cos_step))),
                predicted_norm_sq=predicted,
                relative_deviation=abs(norm_after**2 - predicted) / predicted if plain else float("nan"),
            ))

    # --- reading the results ------------------------------------------------------------------------------------
    def history(self, name: str) -> dict[str, list[float]]:
        """Every recorded field of one weight as columns, e.g. ``history("conv.weight")["norm"]``."""
        if name not in self.parameters:
            raise KeyError(f"{name!r} is not tracked; tracked: {list(self.parameters)}")
        rows = [asdict(r) for r in self.records if r.name == name]
        fields = [f for f in WeightNormRecord.__dataclass_fields__ if f != "name"]
        return {f: [row[f] for row in rows] for f in fields}

    def equilibrium(self, window: int | None = None) -> dict[str, WeightNormEquilibrium]:
        """Predicted against measured equilibrium per weight over the last ``window`` records of each
        (default: the last half). The prediction needs SGD with weight decay and a constant learning rate
        over the window; otherwise ``predicted_norm`` is nan and only the measurements are filled in."""
        out = {}
        for name in self.parameters:
            h = self.history(name)
            count = len(h["norm"])
            if count == 0:
                continue
            size = max(1, count // 2) if window is None else min(window, count)
            part = {k: v[-size:] for k, v in h.items()}
            means = {k: sum(v) / size for k, v in part.items() if k != "step"}
            lr, wd, momentum = means["lr"], part["weight_decay"][-1], part["momentum"][-1]
            unit = sum(g * g * w * w for g, w in zip(part["grad_norm"], part["norm"])) / size
            ok = wd > 0 and 0 <= momentum < 1 and not math.isnan(unit)
            out[name] = WeightNormEquilibrium(
                name=name, lr=lr, weight_decay=wd, momentum=momentum, unit_grad_sq=unit,
                predicted_norm=equilibrium_norm(lr, wd, unit, momentum) if ok else float("nan"),
                measured_norm=means["norm"],
                predicted_angular_update=equilibrium_angular_update(lr, wd, momentum) if ok else float("nan"),
                measured_angular_update=means["angular_update"],
            )
        return out

    def table(self, last: int = 1) -> str:
        """The last ``last`` records of each tracked weight as a table."""
        per_name: dict[str, list[WeightNormRecord]] = {}
        for record in self.records:
            per_name.setdefault(record.name, []).append(record)
        rows = [asdict(r) for records in per_name.values() for r in records[-last:]]
        return format_table(rows, [
            ("step", "step", "d"), ("name", "weight", ""), ("norm", "‖w‖", ".4g"), ("grad_norm", "‖g‖", ".3g"),
            ("effective_lr", "η/‖w‖²", ".3g"), ("grad_cosine", "cos(g,w)", ".1e"),
            ("angular_update", "angle", ".2e"), ("relative_deviation", "rel.dev", ".1e"),
        ])

    def state_dict(self) -> dict:
        """The records and step counter, for checkpoints."""
        return {"step_count": self.step_count, "records": [asdict(r) for r in self.records]}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.step_count = int(state["step_count"])
        self.records = [WeightNormRecord(**r) for r in state["records"]]


@dataclass
class LayerWeightNorm:
    """The weight norms of one layer."""

    name: str
    kind: str  #: ``"conv"``, ``"linear"`` or a normalization's registry name
    frobenius: float  #: ‖W‖_F (normalization layers: ‖γ‖)
    spectral: float  #: σ_max of W reshaped to (out, in·k…) — a proxy for a conv's operator norm; nan for norms
    gain_max: float  #: normalization layers: max per-channel gain (below); nan otherwise
    gain_mean: float  #: mean per-channel gain


@dataclass
class WeightNormStats:
    """:func:`weight_norm_stats` result; prints as a table."""

    layers: list[LayerWeightNorm]

    def summary(self) -> dict[str, float]:
        """Model-level numbers: total Frobenius norm of conv/linear weights, log10 of the product of their
        spectral norms (a Lipschitz bound for a plain chain of layers), and the largest normalization gain."""
        weights = [layer for layer in self.layers if layer.kind in ("conv", "linear")]
        gains = [layer.gain_max for layer in self.layers if not math.isnan(layer.gain_max)]
        return {
            "total_frobenius": math.sqrt(sum(layer.frobenius**2 for layer in weights)),
            "log10_spectral_product": sum(math.log10(layer.spectral) for layer in weights if layer.spectral > 0),
            "max_norm_gain": max(gains) if gains else float("nan"),
        }

    def table(self) -> str:
        return format_table([asdict(layer) for layer in self.layers], [
            ("name", "layer", ""), ("kind", "kind", ""), ("frobenius", "‖W‖_F", ".4g"), ("spectral", "σ_max", ".4g"),
            ("gain_max", "gain max", ".4g"), ("gain_mean", "gain mean", ".4g"),
        ])

    def __repr__(self) -> str:
        return self.table() + "\n" + "  ".join(f"{k}={v:.4g}" for k, v in self.summary().items())


def _norm_gain(layer: nn.Module) -> Tensor | None:
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 1:
        return None
    gain = weight.detach().to(torch.float64).abs()
    running_var = getattr(layer, "running_var", None)
    if isinstance(running_var, Tensor) and not layer.training:
        gain = gain / torch.sqrt(running_var.to(torch.float64) + layer.eps)
    return gain


def weight_norm_stats(model: nn.Module) -> WeightNormStats:
    r"""Frobenius and spectral norms of every conv/linear weight, and every normalization layer's gain.

    For conv and linear layers (the effective weight, so weight-normalized layers count as what they compute):
    :math:`\lVert W\rVert_F` and :math:`\sigma_{max}` of :math:`W` reshaped to ``(out, -1)`` (for a convolution
    this is a proxy, not the operator norm of the convolution; Sedghi, Gupta & Long 2019, arXiv:1805.10408).
    For a normalization layer with a per-channel :math:`\gamma`: the gain
    :math:`|\gamma_c|/\sqrt{\hat\sigma^2_c+\epsilon}` with running statistics (BatchNorm family in eval mode —
    the factor by which the layer multiplies a small input perturbation of channel :math:`c`), else
    :math:`|\gamma_c|`. All in float64.

    Args:
        model: any model.

    Returns:
        :class:`WeightNormStats` (``.summary()`` gives model-level numbers).

    Examples:
        >>> model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.BatchNorm1d(2)).eval()
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.tensor([[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]]))
        >>> stats = weight_norm_stats(model)
        >>> [(s.kind, round(s.frobenius, 3), round(s.spectral, 3)) for s in stats.layers][0]
        ('linear', 5.0, 4.0)
    """
    layers = []
    for name, module in model.named_modules():
        kind = norm_kind(module)
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            w = module.weight.detach().to(torch.float64)
            if isinstance(module, nn.modules.conv._ConvTransposeNd):
                matrix = w.transpose(0, 1).reshape(w.shape[1], -1)  # (out, in / groups * k...)
            else:
                matrix = w.reshape(w.shape[0], -1)  # (out, in / groups * k...)
            layers.append(LayerWeightNorm(
                name, "linear" if isinstance(module, nn.Linear) else "conv", w.norm().item(),
                torch.linalg.matrix_norm(matrix, ord=2).item(), float("nan"), float("nan")))
        elif kind is not None and kind != "none":
            gain = _norm_gain(module)
            if gain is None:
                continue
            layers.append(LayerWeightNorm(
                name, kind, module.weight.detach().to(torch.float64).norm().item(), float("nan"),
                gain.max().item(), gain.mean().item()))
    return WeightNormStats(layers)


__all__ = [
    "LayerWeightNorm",
    "WeightNormEquilibrium",
    "WeightNormRecord",
    "WeightNormStats",
    "WeightNormTracker",
    "equilibrium_angular_update",
    "equilibrium_norm",
    "weight_norm_stats",
]
