r"""Adversarial vulnerability: FGSM and PGD in pixel space, and robust accuracy over a range of budgets.

Attacks look for a perturbation :math:`\delta` within a budget :math:`\lVert\delta\rVert_p \le \epsilon`
(:math:`p = \infty` or 2) that raises the loss, keeping the image valid, :math:`x + \delta \in [0, 1]^d`. The
model's input normalization :math:`(x - \mu)/\sigma` is applied *inside* (``normalize=(mean, std)``), so the
budget is in pixel units whatever the model expects.

* **FGSM** (Goodfellow, Shlens & Szegedy 2015, arXiv:1412.6572): one step,
  :math:`x' = \Pi(x + \epsilon\,\mathrm{sign}(\nabla_x L))` (L∞) or
  :math:`x' = \Pi(x + \epsilon\,\nabla_x L/\lVert\nabla_x L\rVert_2)` (L2, the fast gradient method).
* **PGD** (Madry et al. 2018, arXiv:1706.06083): optionally start at a uniform random point of the ball, then
  ``steps`` steps of size :math:`\alpha` (default :math:`2.5\epsilon/\text{steps}`), each followed by the
  projection :math:`\Pi` onto the ball and onto :math:`[0, 1]`.

The projection clips :math:`\delta` to the ball first (coordinate-wise for L∞, by rescaling for L2) and then
clamps :math:`x + \delta` to :math:`[0, 1]`; clamping only moves coordinates towards :math:`x`, so the result stays
in the ball. **Why it matters here:** a perturbation passing a layer with weight :math:`W` changes its output by at
most :math:`\sigma_{max}(W)\lVert\delta\rVert`, and BatchNorm in eval mode multiplies channel :math:`c` by
:math:`\gamma_c/\sqrt{\hat\sigma^2_c+\epsilon}` — large weight norms and gains amplify perturbations
(Szegedy et al. 2014, arXiv:1312.6199; Galloway et al. 2019, arXiv:1905.02161); pair
:func:`robust_accuracy` with :func:`normlab.analysis.weight_norm_stats`.

**Gradient masking.** Accuracy must not rise as :math:`\epsilon` grows, and must eventually fall; when it does
not, the gradients are likely uninformative (Athalye, Carlini & Wagner 2018, arXiv:1802.00420; Carlini et al.
2019, "On Evaluating Adversarial Robustness", arXiv:1902.06705) and :func:`robust_accuracy` issues a
:class:`GradientMaskingWarning`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab.analysis._table import format_table

NORMS = ("linf", "l2")


class GradientMaskingWarning(UserWarning):
    """Robust accuracy did not fall as the budget grew: the attack's gradients may be masked."""


class InputNormalization(nn.Module):
    r"""``(x - mean) / std`` per channel: the input normalization a model expects, as a module.

    Args:
        mean, std: per-channel sequences (or scalars), broadcast over ``(N, C, *)``.

    Examples:
        >>> InputNormalization((0.5, 0.5), (0.25, 0.5))(torch.ones(1, 2, 1, 1)).flatten().tolist()
        [2.0, 1.0]
    """

    def __init__(self, mean: Sequence[float] | float, std: Sequence[float] | float) -> None:
        super().__init__()
        mean_t, std_t = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if (std_t <= 0).any():
            raise ValueError(f"InputNormalization: std must be positive, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t.reshape(-1))
        self.register_buffer("std", std_t.reshape(-1))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.to(x.dtype).reshape(shape)) / self.std.to(x.dtype).reshape(shape)


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), torch.empty(0))
    return tensor.device


def _with_normalization(model: nn.Module, normalize: tuple | None) -> nn.Module:
    if normalize is None:
        return model
    if not isinstance(normalize, (tuple, list)) or len(normalize) != 2:
        raise ValueError("normalize must be (mean, std), e.g. ((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))")
    return nn.Sequential(InputNormalization(*normalize).to(_device_of(model)), model)


def _check(images: Tensor, labels: Tensor, eps: float, norm: str, who: str) -> None:
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise TypeError(f"{who}: images must be a floating tensor of pixels in [0, 1]")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(
            f"{who}: images must be pixels in [0, 1] (got range [{images.min().item():.3g}, "
            f"{images.max().item():.3g}]); pass un-normalized images and give normalize=(mean, std)"
        )
    if labels.shape[:1] != images.shape[:1]:
        raise ValueError(f"{who}: {images.shape[0]} images but labels of shape {tuple(labels.shape)}")
    if not (isinstance(eps, (int, float)) and eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"{who}: eps must be a finite number ≥ 0, got {eps!r}")
    if norm not in NORMS:
        raise ValueError(f"{who}: norm must be one of {NORMS}, got {norm!r}")


def _per_sample_l2(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).reshape(-1, *([1] * (t.dim() - 1)))  # (N, 1, ...)


def project(images: Tensor, adversarial: Tensor, eps: float, norm: str) -> Tensor:
    r"""Project ``adversarial`` onto the ε-ball around ``images`` and then onto :math:`[0, 1]`.

    Examples:
        >>> x = torch.full((1, 1, 2, 2), 0.5)
        >>> project(x, x + torch.tensor([0.3, -0.3, 0.05, 0.9]).reshape(1, 1, 2, 2), 0.1, "linf").flatten().tolist()
        [0.6000000238418579, 0.4000000059604645, 0.550000011920929, 0.6000000238418579]
    """
    delta = adversarial - images
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / _per_sample_l2(delta).clamp_min(1e-12)).clamp(max=1.0)
    return (images + delta).clamp(0.0, 1.0)


def _input_gradient(model: nn.Module, x: Tensor, labels: Tensor, loss_fn: Callable) -> Tensor:
    x = x.detach().requires_grad_(True)
    loss = loss_fn(model(x), labels)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def _ascent_direction(grad: Tensor, norm: str) -> Tensor:
    if norm == "linf":
        return grad.sign()
    return grad / _per_sample_l2(grad).clamp_min(1e-12)


def fgsm(model: nn.Module, images: Tensor, labels: Tensor, eps: float, *, norm: str = "linf",
         normalize: tuple | None = None, loss_fn: Callable = F.cross_entropy) -> Tensor:
    r"""Fast gradient sign method (L∞) or fast gradient method (L2): one step of size ε (module docstring).

    The model is used as it is (call ``model.eval()`` first: in training mode BatchNorm would use and update
    batch statistics). Parameter gradients are not touched.

    Args:
        model: maps normalized images to logits.
        images: pixels in [0, 1], ``(N, C, H, W)`` (any ``(N, *)``).
        labels: ``(N,)`` class indices.
        eps: the budget ε ≥ 0 in pixel units (``8/255`` is the usual CIFAR L∞ budget).
        norm: ``"linf"`` or ``"l2"``.
        normalize: ``(mean, std)`` of the model's input normalization, applied inside; ``None`` if the model
            takes pixels.
        loss_fn: ``loss_fn(logits, labels)``; the attack ascends it. Default: cross-entropy.

    Returns:
        Adversarial images, detached, inside the ε-ball around ``images`` and inside [0, 1].

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x, y = torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0])
        >>> adv = fgsm(model, x, y, 0.1)
        >>> bool((adv - x).abs().max() <= 0.1 + 1e-6), bool(adv.min() >= 0 and adv.max() <= 1)
        (True, True)
    """
    _check(images, labels, eps, norm, "fgsm")
    if eps == 0:
        return images.detach().clone()
    net = _with_normalization(model, normalize)
    grad = _input_gradient(net, images, labels, loss_fn)
    return project(images, images + eps * _ascent_direction(grad, norm), eps, norm).detach()


def _random_start(images: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    # draw where the generator lives (a CPU generator with GPU images is fine), then move to the images
    device = generator.device if generator is not None else images.device
    shape, opts = images.shape, {"dtype": images.dtype, "device": device, "generator": generator}
    if norm == "linf":
        delta = (torch.rand(shape, **opts) * 2 - 1) * eps
    else:  # uniform in the L2 ball: a random direction, radius eps * U^(1/d)
        direction = torch.randn(shape, **opts)
        direction = direction / _per_sample_l2(direction).clamp_min(1e-12)
        d = images[0].numel()
        radius = eps * torch.rand((shape[0],) + (1,) * (len(shape) - 1), **opts) ** (1.0 / d)
        delta = direction * radius
    return project(images, images + delta.to(images.device), eps, norm)


def pgd(model: nn.Module, images: Tensor, labels: Tensor, eps: float, *, norm: str = "linf", steps: int = 10,
        step_size: float | None = None, random_start: bool = True, normalize: tuple | None = None,
        loss_fn: Callable = F.cross_entropy, generator: torch.Generator | None = None) -> Tensor:
    r"""Projected gradient descent on the loss (Madry et al. 2018), L∞ or L2, in pixel space.

    Args:
        model, images, labels, eps, norm, normalize, loss_fn: as in :func:`fgsm`.
        steps: gradient steps. Default: 10.
        step_size: :math:`\alpha`; default :math:`2.5\,\epsilon/\text{steps}` (Madry et al.'s choice).
        random_start: start from a uniform random point of the ε-ball (clamped to [0, 1]). Default: True.
        generator: random generator for the start, for reproducibility.

    Returns:
        Adversarial images, detached, inside the ε-ball around ``images`` and inside [0, 1].

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x, y = torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0])
        >>> adv = pgd(model, x, y, 0.5, norm="l2", steps=5)
        >>> bool(((adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-6).all())
        True
    """
    _check(images, labels, eps, norm, "pgd")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"pgd: steps must be a positive int, got {steps!r}")
    if eps == 0:
        return images.detach().clone()
    alpha = 2.5 * eps / steps if step_size is None else float(step_size)
    if not alpha > 0:
        raise ValueError(f"pgd: step_size must be positive, got {step_size!r}")
    net = _with_normalization(model, normalize)
    adversarial = _random_start(images, eps, norm, generator) if random_start else images.detach().clone()
    for _ in range(steps):
        grad = _input_gradient(net, adversarial, labels, loss_fn)
        adversarial = project(images, adversarial + alpha * _ascent_direction(grad, norm), eps, norm).detach()
    return adversarial


@dataclass
class RobustAccuracy:
    """Accuracy under attack for each budget; prints as a table."""

    attack: str
    norm: str
    eps: list[float]
    accuracy: list[float]  #: fraction correct on the attacked images, one per ε
    num_samples: int

    @property
    def clean_accuracy(self) -> float:
        """Accuracy at ε = 0 (nan if 0 is not among the budgets)."""
        return next((a for e, a in zip(self.eps, self.accuracy) if e == 0), float("nan"))

    def table(self) -> str:
        rows = [{"eps": e, "eps255": e * 255, "accuracy": a} for e, a in zip(self.eps, self.accuracy)]
        columns = [("eps", "ε", ".4g"), ("eps255", "ε·255", ".2f"), ("accuracy", "accuracy", ".4f")]
        return format_table(rows, columns if self.norm == "linf" else columns[::2])

    def __repr__(self) -> str:
        return f"{self.attack} ({self.norm}, {self.num_samples} samples)\n{self.table()}"


#: largest budget below which a flat accuracy curve is not called masking (usual CIFAR budgets)
MASKING_EPS = {"linf": 8 / 255, "l2": 0.5}


def _masking_findings(eps: list[float], accuracy: list[float], norm: str, tolerance: float) -> list[str]:
    order = sorted(range(len(eps)), key=eps.__getitem__)
    e, a = [eps[i] for i in order], [accuracy[i] for i in order]
    findings = [f"accuracy rose from {a[i]:.4f} at ε={e[i]:.4g} to {a[i + 1]:.4f} at ε={e[i + 1]:.4g}"
                for i in range(len(e) - 1) if a[i + 1] > a[i] + tolerance]
    if len(e) > 1 and e[-1] >= MASKING_EPS[norm] and a[0] > tolerance and a[-1] >= a[0] - tolerance:
        findings.append(f"accuracy did not fall between ε={e[0]:.4g} ({a[0]:.4f}) and ε={e[-1]:.4g} ({a[-1]:.4f})")
    return findings


def robust_accuracy(model: nn.Module, loader: Iterable, attack: str | Callable, eps_list: Sequence[float], *,
                    normalize: tuple | None = None, norm: str = "linf", max_batches: int | None = None,
                    device: torch.device | str | None = None, tolerance: float = 0.01,
                    **attack_kwargs) -> RobustAccuracy:
    r"""Accuracy of ``model`` on ``loader`` under ``attack`` at each budget in ``eps_list``.

    The model is put in evaluation mode for the measurement and restored afterwards. A
    :class:`GradientMaskingWarning` is issued when accuracy rises with ε by more than ``tolerance``, or when it
    does not fall at all although the largest ε reaches a usual budget (``8/255`` L∞, ``0.5`` L2).

    Args:
        model: maps (normalized) images to logits.
        loader: iterable of ``(images, labels)`` with pixels in [0, 1].
        attack: ``"fgsm"``, ``"pgd"``, or a callable ``attack(model, images, labels, eps)`` returning
            adversarial images (it receives the model with normalization already applied).
        eps_list: budgets, in pixel units; include 0 for the clean accuracy.
        normalize: ``(mean, std)`` of the model's input normalization.
        norm: ``"linf"`` or ``"l2"`` for the built-in attacks.
        max_batches: stop after this many batches.
        device: where to run (default: the model's device).
        tolerance: accuracy differences below this are noise for the masking check. Default: 0.01.
        **attack_kwargs: passed to :func:`pgd` (``steps``, ``step_size``, ``random_start``, ``generator``).

    Returns:
        :class:`RobustAccuracy`.

    Examples:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> loader = [(torch.rand(8, 3, 2, 2), torch.randint(3, (8,)))]
        >>> result = robust_accuracy(model, loader, "fgsm", [0.0, 0.01])
        >>> result.eps, result.num_samples
        ([0.0, 0.01], 8)
    """
    eps_values = [float(e) for e in eps_list]
    if not eps_values or any(not (e >= 0 and math.isfinite(e)) for e in eps_values):
        raise ValueError(f"robust_accuracy: eps_list must hold finite numbers ≥ 0, got {list(eps_list)}")
    if isinstance(attack, str):
        if attack not in ("fgsm", "pgd"):
            raise ValueError(f"robust_accuracy: attack must be 'fgsm', 'pgd' or a callable, got {attack!r}")
        if attack == "fgsm" and attack_kwargs:
            raise ValueError(f"robust_accuracy: fgsm takes no extra arguments, got {sorted(attack_kwargs)}")
        function = fgsm if attack == "fgsm" else pgd
        name = attack
        run = lambda net, x, y, e: function(net, x, y, e, norm=norm, **attack_kwargs)
    elif callable(attack):
        name, run = getattr(attack, "__name__", type(attack).__name__), (lambda net, x, y, e: attack(net, x, y, e))
    else:
        raise TypeError(f"robust_accuracy: attack must be a name or a callable, got {type(attack).__name__}")
    device = device or _device_of(model)
    net = _with_normalization(model, normalize).to(device)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    correct, total = [0] * len(eps_values), 0
    try:
        for index, (images, labels) in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            images, labels = images.to(device), labels.to(device)
            _check(images, labels, 0.0, norm, f"robust_accuracy({name})")
            for i, e in enumerate(eps_values):
                adversarial = images if e == 0 else run(net, images, labels, e)
                with torch.no_grad():
                    correct[i] += (net(adversarial).argmax(dim=1) == labels).sum().item()
            total += labels.shape[0]
    finally:
        for module, training in modes.items():
            module.training = training
    if total == 0:
        raise ValueError("robust_accuracy: the loader gave no samples")
    result = RobustAccuracy(name, norm, eps_values, [c / total for c in correct], total)
    findings = _masking_findings(eps_values, result.accuracy, norm, tolerance)
    if findings:
        warnings.warn(
            f"robust_accuracy({name}): possible gradient masking — {'; '.join(findings)}. Check with more PGD "
            "steps, random restarts, larger ε or a gradient-free attack before trusting these numbers "
            "(Athalye et al. 2018).", GradientMaskingWarning, stacklevel=2)
    return result


__all__ = ["GradientMaskingWarning", "InputNormalization", "RobustAccuracy", "fgsm", "pgd", "project",
           "robust_accuracy"]
