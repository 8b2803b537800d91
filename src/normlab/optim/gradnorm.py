r"""Gradient normalization and Adaptive Gradient Clipping, applied in place between ``backward()`` and ``step()``.

Both take the parameters in any of these forms: a model (names and layers known; ConvTranspose weights
recognised), an optimizer (its param groups; names known when it was built from ``named_parameters()``),
a list of param-group dicts, ``model.named_parameters()``, a list of tensors, or one tensor. Parameters without
a gradient are skipped. Under AMP call them after ``scaler.unscale_(optimizer)`` (or let
:func:`~normlab.optim.apply_before_step` run them inside ``scaler.step``): they then see the true gradients.
Norms are accumulated in float32 for half-precision gradients.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import Tensor

from normlab._checks import check_eps
from normlab.core import compute_dtype
from normlab.optim._params import ParamEntry, Parameters, collect_parameters

__all__ = ["SCOPES", "UnitClipping", "adaptive_clip_gradients_", "normalize_gradients_"]

#: The scopes of :func:`normalize_gradients_`.
SCOPES = ("global", "group", "layer", "parameter")


def _norm(t: Tensor, dims: tuple[int, ...] | None = None) -> Tensor:
    return torch.linalg.vector_norm(t, dim=dims, keepdim=dims is not None, dtype=compute_dtype(t.dtype))


def _bucket(entry: ParamEntry, scope: str) -> str:
    if scope == "global":
        return "global"
    if scope == "group":
        return f"group{entry.group}"
    if scope == "parameter":
        return entry.label
    return entry.layer or "<root>"


@torch.no_grad()
def normalize_gradients_(parameters: Parameters, scope: str = "global", eps: float = 1e-12) -> dict[str, Tensor]:
    r"""Divide gradients by their norm, so a plain SGD step has length :math:`\eta` (normalized gradient descent).

    .. math::
        \theta \leftarrow \theta - \eta \, \frac{\nabla L}{\max(\lVert \nabla L \rVert_2, \epsilon)}

    where the norm is taken over one *scope*: all gradients together (``"global"``), each param group
    (``"group"``), each layer — the parameters of one module, e.g. a Linear's weight and bias (``"layer"``) —
    or each parameter on its own (``"parameter"``). After the call every scope's gradient has norm 1 (norms
    below ``eps`` are divided by ``eps``, so zero gradients stay zero).

    Args:
        parameters: a model, an optimizer, param groups, named parameters, tensors or one tensor (see module doc).
            ``scope="layer"`` needs names: pass the model, ``model.named_parameters()``, or an optimizer built
            from named parameters.
        scope: ``"global"``, ``"group"``, ``"layer"`` or ``"parameter"``.
        eps: smallest norm divided by.

    Returns:
        ``{scope key: norm before normalization}`` — key ``"global"``, ``"group{i}"``, the layer path
        (``"<root>"`` for the model's own parameters) or the parameter's label; 0-d tensors.

    Examples:
        >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.tensor([3.0, 4.0])
        >>> norms = normalize_gradients_([w])
        >>> round(norms["global"].item(), 4), [round(x, 4) for x in w.grad.tolist()]
        (5.0, [0.6, 0.8])
    """
    if scope not in SCOPES:
        raise ValueError(f"normalize_gradients_: scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    check_eps(eps, "normalize_gradients_")
    entries = collect_parameters(parameters, "normalize_gradients_")
    if scope == "layer" and any(e.layer is None for e in entries):
        raise ValueError(
            "normalize_gradients_: scope='layer' needs to know which parameters form a layer, but got unnamed "
            "tensors; pass the model, model.named_parameters(), or an optimizer built from named_parameters() "
            "(or use scope='group' / 'parameter')"
        )
    buckets: dict[str, list[Tensor]] = defaultdict(list)
    for entry in entries:
        buckets[_bucket(entry, scope)].append(entry.param.grad)
    norms = {}
    for key, grads in buckets.items():
        device = grads[0].device
        total = _norm(torch.stack([_norm(g).to(device) for g in grads]))
        scale = 1.0 / total.clamp_min(eps)
        for g in grads:
            g.mul_(scale.to(device=g.device, dtype=g.dtype))
        norms[key] = total
    return norms


@dataclass(frozen=True)
class UnitClipping:
    """What :func:`adaptive_clip_gradients_` saw for one parameter, one entry per unit."""

    grad_norm: Tensor  #: ``(units,)`` the gradient norm of each unit before clipping
    max_norm: Tensor  #: ``(units,)`` the allowed norm ``clipping * max(‖W_i‖, eps)``
    clipped: Tensor  #: ``(units,)`` bool, True where the unit's gradient was scaled down


@torch.no_grad()
def adaptive_clip_gradients_(parameters: Parameters, clipping: float = 0.01,
                             eps: float = 1e-3) -> dict[str, UnitClipping]:
    r"""Adaptive Gradient Clipping, unit-wise (Brock et al. 2021, NFNets, https://arxiv.org/abs/2102.06171).

    For every unit :math:`i` of a parameter :math:`W` with gradient :math:`G`:

    .. math::
        G_i \leftarrow \begin{cases}
            \lambda \dfrac{\max(\lVert W_i\rVert, \epsilon)}{\lVert G_i\rVert} G_i
                & \text{if } \lVert G_i\rVert > \lambda \max(\lVert W_i\rVert, \epsilon) \\
            G_i & \text{otherwise}
        \end{cases}

    with :math:`\lambda` = ``clipping``. Units follow the official NFNets code: one *output unit* of a weight
    (a row of a Linear weight, one filter of a Conv kernel: the norm runs over every dim but the output dim —
    dim 0, or dim 1 for a ConvTranspose weight when the model is passed), and the *whole tensor* for biases,
    gains and other vectors and scalars. ``eps`` keeps zero-initialised parameters trainable. The paper does not
    clip the final classifier: leave its parameters out of ``parameters``.

    Args:
        parameters: a model, an optimizer, param groups, named parameters, tensors or one tensor.
        clipping: :math:`\lambda`, the largest allowed ratio ‖G_i‖ / ‖W_i‖ (the paper uses 0.01–0.16 depending
            on batch size).
        eps: the smallest weight norm :math:`\epsilon` (1e-3 in the paper).

    Returns:
        ``{label: UnitClipping}`` for every parameter with a gradient.

    Examples:
        >>> w = torch.nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        >>> w.grad = torch.tensor([[0.5, 0.0], [0.0, 0.001]])
        >>> report = adaptive_clip_gradients_([w], clipping=0.1)
        >>> report["0"].clipped.tolist(), [[round(x, 4) for x in row] for row in w.grad.tolist()]
        ([True, False], [[0.1, 0.0], [0.0, 0.001]])
    """
    if isinstance(clipping, bool) or not isinstance(clipping, (int, float)) or not clipping > 0:
        raise ValueError(f"adaptive_clip_gradients_: clipping must be a positive number, got {clipping!r}")
    check_eps(eps, "adaptive_clip_gradients_")
    report = {}
    for entry in collect_parameters(parameters, "adaptive_clip_gradients_"):
        p, g = entry.param, entry.param.grad
        dims = tuple(d for d in range(p.dim()) if d != entry.unit_dim) if p.dim() > 1 else None
        weight_norm = _norm(p.detach(), dims)
        grad_norm = _norm(g, dims)
        max_norm = clipping * weight_norm.clamp_min(eps)
        clipped = grad_norm > max_norm
        factor = torch.where(clipped, max_norm / grad_norm, torch.ones_like(grad_norm))
        g.mul_(factor.to(g.dtype))
        report[entry.label] = UnitClipping(grad_norm.flatten(), max_norm.flatten(), clipped.flatten())
    return report
