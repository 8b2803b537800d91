r"""Scale invariance: which parameters the loss does not see the length of, and their orthogonal gradients.

A weight :math:`w` followed by a normalization (BatchNorm after a bias-free conv, weight normalization's
direction :math:`v`, a standardized weight, …) enters the loss only through its direction:

.. math::
    L(\alpha w) = L(w) \quad \forall \alpha > 0.

Differentiating in :math:`\alpha` at :math:`\alpha = 1` gives :math:`\langle \nabla L(w), w\rangle = 0` — the
gradient is orthogonal to the weight — and differentiating in :math:`w` gives
:math:`\nabla L(\alpha w) = \nabla L(w)/\alpha` (Ioffe & Szegedy 2015, §3; Salimans & Kingma 2016,
arXiv:1602.07868; van Laarhoven 2017, "L2 Regularization versus Batch and Weight Normalization",
arXiv:1706.05350; Arora, Li & Lyu 2019, arXiv:1812.03981). :func:`scale_invariant_parameters` tests the
definition directly, on a float64 copy of the model: it multiplies one parameter at a time by several
:math:`\alpha` and compares the loss,

.. math::
    \text{invariant} \iff \max_\alpha \frac{|L(\alpha w) - L(w)|}{|L(w)|} \le \text{rtol},

and reports the cosine :math:`\langle g, w\rangle / (\lVert g\rVert \lVert w\rVert)` between each parameter and its
gradient (theory: 0 for invariant ones). Normalization's :math:`\epsilon` breaks invariance by a relative amount
of order :math:`\epsilon/\sigma^2`, which the default tolerance (``rtol=1e-4``) absorbs.

What the test finds depends on the model, not only on its layer types: BatchNorm in training mode removes a
conv's per-channel bias, so the conv weight is invariant with or without a bias; GroupNorm and LayerNorm remove
only a per-group mean, so a weight whose layer also adds a bias is **not** invariant. In evaluation mode
BatchNorm uses fixed running statistics and nothing before it is invariant. Weight standardization adds its
:math:`\epsilon` to the variance of the *weight*, which is about :math:`1/\text{fan-in}` at initialization, so a
freshly initialized standardized weight is invariant only to a relative :math:`\sim\epsilon\cdot\text{fan-in}`
(about :math:`10^{-3}` for a 3×3 conv with 32 input channels) and is reported as not invariant at the default
tolerance; larger weights, or a larger ``rtol``, make it invariant. Parameters the loss does not depend
on at all (a conv bias right before BatchNorm) are invariant too, with a zero gradient; their cosine is
reported as ``nan``. A parameter that is exactly zero cannot be tested (:math:`\alpha \cdot 0 = 0`): it is
reported as not invariant with a ``nan`` change — e.g. a BatchNorm :math:`\beta` at its initial value.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from normlab.analysis._layers import call_model
from normlab.analysis._table import format_table

#: a gradient is "zero" for the cosine when ‖g‖‖w‖ ≤ FLAT · |L| (the loss does not depend on the parameter)
FLAT = 1e-9


@dataclass
class ParameterInvariance:
    """The scale-invariance test of one parameter."""

    name: str  #: parameter name in the model
    shape: tuple[int, ...]
    invariant: bool  #: max relative loss change ≤ rtol over all α
    max_relative_change: float  #: :math:`\max_\alpha |L(\alpha w) - L(w)| / |L(w)|`; ``nan`` for a zero parameter
    grad_norm: float  #: ‖∂L/∂w‖ at α = 1
    cosine: float  #: cosine between gradient and weight; ``nan`` when the gradient is zero


@dataclass
class InvarianceReport:
    """The result of :func:`scale_invariant_parameters`; prints as a table."""

    parameters: list[ParameterInvariance]
    alphas: tuple[float, ...]  #: the scale factors tried
    rtol: float  #: the relative tolerance on the loss change
    loss: float  #: the loss at α = 1

    @property
    def invariant_names(self) -> list[str]:
        """Names of the parameters found scale-invariant."""
        return [p.name for p in self.parameters if p.invariant]

    def __getitem__(self, name: str) -> ParameterInvariance:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(f"no parameter named {name!r}; tested: {[p.name for p in self.parameters]}")

    def table(self) -> str:
        """One line per parameter."""
        rows = [{**vars(p), "shape": "x".join(map(str, p.shape)) or "scalar"} for p in self.parameters]
        return format_table(rows, [
            ("name", "parameter", ""), ("shape", "shape", ""), ("invariant", "invariant", ""),
            ("max_relative_change", "max ΔL/L", ".1e"), ("grad_norm", "‖g‖", ".2e"), ("cosine", "cos(g, w)", ".1e"),
        ])

    def __repr__(self) -> str:
        return f"{self.table()}\n(α ∈ {list(self.alphas)}, rtol = {self.rtol:g}, L = {self.loss:.6g})"


def _to_dtype(value, dtype: torch.dtype):
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_to_dtype(v, dtype) for v in value)
    return value


def scale_invariant_parameters(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batch: tuple | list,
    *,
    alphas: Sequence[float] = (0.5, 2.0, 10.0),
    rtol: float = 1e-4,
    dtype: torch.dtype = torch.float64,
    parameters: Sequence[str] | None = None,
    seed: int = 0,
) -> InvarianceReport:
    r"""Find the parameters of ``model`` that leave the loss unchanged when multiplied by α > 0.

    Works on a deep copy of the model cast to ``dtype`` (the model itself is not touched), in the model's
    current train/eval mode. Every loss evaluation resets the copy's buffers and the random seed, so dropout and
    running statistics cannot make two evaluations differ; the theory and the tolerance are in the module docstring.

    Args:
        model: any model; normlab and torch.nn layers and ``torch.nn.utils.parametrize`` reparametrizations
            (weight normalization's ``original0``/``original1``) all work.
        loss_fn: ``loss_fn(outputs, targets)`` returning a scalar, e.g. ``torch.nn.functional.cross_entropy``.
        batch: ``(inputs, targets)``; ``inputs`` may be a tensor or a tuple of positional inputs.
        alphas: the scale factors tried (positive, ≠ 1). Default: (0.5, 2, 10).
        rtol: largest relative loss change still called invariant. Default: 1e-4.
        dtype: precision of the test. Default: float64.
        parameters: names to test; default every parameter that requires a gradient.
        seed: the random seed set before each evaluation.

    Returns:
        :class:`InvarianceReport`; ``report.invariant_names`` lists the invariant parameters.

    Examples:
        >>> import torch.nn.functional as F
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
        >>> report = scale_invariant_parameters(model, F.cross_entropy, (torch.randn(16, 4), torch.randint(3, (16,))))
        >>> report.invariant_names, abs(report["0.weight"].cosine) < 1e-4
        (['0.weight'], True)
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError("scale_invariant_parameters: batch must be (inputs, targets), e.g. (images, labels)")
    alphas = tuple(float(a) for a in alphas)
    if not alphas or any(not a > 0 or a == 1.0 for a in alphas):
        raise ValueError(f"scale_invariant_parameters: alphas must be positive and different from 1, got {alphas}")
    if not rtol > 0:
        raise ValueError(f"scale_invariant_parameters: rtol must be positive, got {rtol!r}")
    probe = copy.deepcopy(model).to(dtype)
    inputs, targets = _to_dtype(batch[0], dtype), _to_dtype(batch[1], dtype)
    named = dict(probe.named_parameters())
    names = [n for n, p in named.items() if p.requires_grad] if parameters is None else list(parameters)
    unknown = [n for n in names if n not in named]
    if unknown:
        raise ValueError(f"scale_invariant_parameters: unknown parameter names {unknown}; valid: {list(named)}")
    buffers = {name: b.detach().clone() for name, b in probe.named_buffers()}

    def loss() -> Tensor:
        with torch.no_grad():
            for name, b in probe.named_buffers():
                b.copy_(buffers[name])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            value = loss_fn(call_model(probe, inputs), targets)
        if value.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(value.shape)}")
        return value

    base = loss()
    grads = torch.autograd.grad(base, [named[n] for n in names], allow_unused=True)
    base_value = base.item()
    if not math.isfinite(base_value):
        raise ValueError(f"scale_invariant_parameters: the loss is {base_value}; check the model and batch")
    scale = max(abs(base_value), torch.finfo(dtype).tiny)
    results = []
    for name, grad in zip(names, grads):
        param = named[name]
        original = param.detach().clone()
        changes = []
        with torch.no_grad():
            for alpha in alphas:
                param.copy_(original * alpha)
                changes.append(abs(loss().item() - base_value) / scale)
            param.copy_(original)
        g = torch.zeros_like(original) if grad is None else grad.detach()
        g_norm, w_norm = g.norm().item(), original.norm().item()
        flat = g_norm * w_norm <= FLAT * scale
        cosine = float("nan") if flat else (g * original).sum().item() / (g_norm * w_norm)
        worst = max(changes) if w_norm > 0 else float("nan")  # α·0 = 0: a zero parameter cannot be tested
        results.append(ParameterInvariance(name, tuple(original.shape), bool(worst <= rtol), worst, g_norm, cosine))
    return InvarianceReport(results, alphas, rtol, base_value)


__all__ = ["InvarianceReport", "ParameterInvariance", "scale_invariant_parameters"]
