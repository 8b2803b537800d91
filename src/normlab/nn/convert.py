"""One layer at a time between normlab and torch.nn: same constructor arguments, same weights and buffers.

Whole-model conversion (every layer of a network) lives in :mod:`normlab.surgery`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from normlab.nn import batchnorm as bn
from normlab.nn import groupnorm as gn
from normlab.nn import layernorm as ln

# torch.nn class → (normlab class, constructor arguments read from the torch layer). The reverse table is derived.
_BN_ARGS: Callable[[nn.Module], dict] = lambda m: dict(  # noqa: E731
    num_features=m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
    track_running_stats=m.track_running_stats, bias=m.bias is not None or not m.affine,
)
TORCH_TO_NORMLAB: dict[type[nn.Module], tuple[type[nn.Module], Callable[[nn.Module], dict]]] = {
    nn.BatchNorm1d: (bn.BatchNorm1d, _BN_ARGS),
    nn.BatchNorm2d: (bn.BatchNorm2d, _BN_ARGS),
    nn.BatchNorm3d: (bn.BatchNorm3d, _BN_ARGS),
    nn.InstanceNorm1d: (bn.InstanceNorm1d, _BN_ARGS),
    nn.InstanceNorm2d: (bn.InstanceNorm2d, _BN_ARGS),
    nn.InstanceNorm3d: (bn.InstanceNorm3d, _BN_ARGS),
    nn.LayerNorm: (ln.LayerNorm, lambda m: dict(
        normalized_shape=m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine,
        bias=m.bias is not None or not m.elementwise_affine,
    )),
    nn.GroupNorm: (gn.GroupNorm, lambda m: dict(
        num_groups=m.num_groups, num_channels=m.num_channels, eps=m.eps, affine=m.affine,
        bias=m.bias is not None or not m.affine,
    )),
    nn.RMSNorm: (ln.RMSNorm, lambda m: dict(
        normalized_shape=m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine,
    )),
}
NORMLAB_TO_TORCH: dict[type[nn.Module], type[nn.Module]] = {ours: theirs for theirs, (ours, _) in
                                                           TORCH_TO_NORMLAB.items()}


def _copy_state(source: nn.Module, target: nn.Module) -> nn.Module:
    ref = next((t for t in (*source.parameters(), *source.buffers()) if t.is_floating_point()), None)
    if ref is not None:
        target.to(device=ref.device, dtype=ref.dtype)
    target.load_state_dict(source.state_dict())
    target.train(source.training)
    for name, param in source.named_parameters(recurse=False):
        getattr(target, name).requires_grad_(param.requires_grad)
    return target


def from_torch(layer: nn.Module) -> nn.Module:
    """The normlab layer equivalent to a torch.nn normalization layer, with its weights, buffers and mode.

    Args:
        layer: one of ``nn.BatchNorm1d/2d/3d``, ``nn.InstanceNorm1d/2d/3d``, ``nn.LayerNorm``, ``nn.GroupNorm``,
            ``nn.RMSNorm``.

    Returns:
        A new normlab layer on the same device and dtype, in the same train/eval mode, computing the same output.

    Examples:
        >>> t = torch.nn.BatchNorm2d(4).eval()
        >>> ours = from_torch(t)
        >>> type(ours).__name__, ours.training
        ('BatchNorm2d', False)
        >>> x = torch.randn(2, 4, 3, 3)
        >>> torch.allclose(ours(x), t(x))
        True
    """
    entry = TORCH_TO_NORMLAB.get(type(layer))
    if entry is None:
        known = ", ".join(sorted(c.__name__ for c in TORCH_TO_NORMLAB))
        raise TypeError(f"from_torch: no normlab equivalent for {type(layer).__name__}; known torch.nn layers: {known}")
    cls, arguments = entry
    return _copy_state(layer, cls(**arguments(layer)))


def to_torch(layer: nn.Module) -> nn.Module:
    """The torch.nn layer equivalent to a normlab layer, with its weights, buffers and mode.

    Layers with no torch.nn counterpart (LayerNorm2d, Batch Renorm, Ghost BatchNorm, FRN, ScaleNorm, Dynamic Tanh,
    and the rank-agnostic ``BatchNorm``/``InstanceNorm``) raise a ``TypeError`` naming the ones that convert.

    Examples:
        >>> from normlab.nn import LayerNorm
        >>> ours = LayerNorm(6)
        >>> type(to_torch(ours)).__name__
        'LayerNorm'
    """
    cls = NORMLAB_TO_TORCH.get(type(layer))
    if cls is None:
        known = ", ".join(sorted(c.__name__ for c in NORMLAB_TO_TORCH))
        raise TypeError(
            f"to_torch: {type(layer).__name__} has no torch.nn counterpart; layers that convert: {known}"
        )
    torch_layer = cls(**TORCH_TO_NORMLAB[cls][1](layer))
    return _copy_state(layer, torch_layer)
