"""Building the right normalization layer for where a model keeps its features.

A conv net's activations are ``(N, C, H, W)`` (features on dim 1); a Transformer's are ``(B, T, C)`` (features
last). The registry records each norm's side in :attr:`normlab.registry.NormSpec.channel_dim`, and these two
helpers use it to map a request onto the model's layout:

* :func:`conv_norm` (features on dim 1): a channel-first norm is built as is (``dims=2`` picks the 2-D
  BatchNorm / InstanceNorm classes); ``"layer_norm"`` becomes ``layer_norm_2d`` (LayerNorm over the channels of
  each position, as ConvNeXt uses; for Ba et al.'s LayerNorm over ``(C, H, W)`` ask for ``group_norm`` with
  ``num_groups=1``); ``"dynamic_tanh"`` is built with ``channels_last=False``; any other feature-last norm
  (``rms_norm``, ``scale_norm``, or a feature-last class such as ``torch.nn.LayerNorm``) is wrapped in
  :class:`FeaturesLast`, which moves the channels last, normalizes, and moves them back.
* :func:`sequence_norm` (features last): a feature-last norm is built as is; a channel-first norm is wrapped in
  :class:`FeaturesFirst` (``(B, T, C)`` → ``(B, C, T)``). Norms that pool statistics over the time steps of one
  sequence (``group_norm``, ``instance_norm``, ``filter_response_norm``) are refused: in a causal language
  model they would let a token see the future. BatchNorm variants are allowed, with the caveat that their
  training statistics also mix positions (and sequences) of the batch.

``norm`` may be a registry name (any spelling), a layer class, a ``functools.partial``, or ``"none"``. A callable
the registry does not know is assumed to build a channel-first ``(N, C, *)`` layer.

Examples:
    >>> conv_norm("layer_norm", 8)
    LayerNorm2d(8, eps=1e-06, elementwise_affine=True)
    >>> type(conv_norm("rms_norm", 8)).__name__, conv_norm("rms_norm", 8)(torch.randn(2, 8, 4, 4)).shape
    ('FeaturesLast', torch.Size([2, 8, 4, 4]))
    >>> type(sequence_norm("batch_norm", 8)).__name__, sequence_norm("rms_norm", 8)(torch.randn(2, 5, 8)).shape
    ('FeaturesFirst', torch.Size([2, 5, 8]))
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch  # noqa: F401  (the doctests use it)
from torch import Tensor, nn

from normlab.registry import NormSpec, create_norm, get_norm_spec

__all__ = ["NormArg", "FeaturesLast", "FeaturesFirst", "conv_norm", "sequence_norm", "norm_spec_of", "is_none",
           "describe"]

NormArg = str | type | Callable[..., nn.Module]

# Norms whose statistics pool the time steps of each sequence: not causal.
_POOLS_OVER_TIME = ("group_norm", "instance_norm", "filter_response_norm")


class FeaturesLast(nn.Module):
    """Apply a features-last norm to a channel-first tensor: ``(N, C, *)`` → ``(N, *, C)`` → norm → back.

    Args:
        norm: a layer expecting its features on the last dim.

    Shape:
        - Input: :math:`(N, C, *)`; Output: the same shape.
    """

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class FeaturesFirst(nn.Module):
    """Apply a channel-first norm to a features-last tensor: ``(B, *, C)`` → ``(B, C, *)`` → norm → back.

    Args:
        norm: a layer expecting its features on dim 1.

    Shape:
        - Input: :math:`(B, *, C)`; Output: the same shape.
    """

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.movedim(-1, 1)).movedim(1, -1)


def norm_spec_of(norm: NormArg) -> NormSpec | None:
    """The registry entry for a name, class or partial of a registered class; None for other callables."""
    if isinstance(norm, str):
        return get_norm_spec(norm)  # an unknown name raises, listing the valid ones
    target = norm.func if isinstance(norm, functools.partial) else norm
    if isinstance(target, type):
        try:
            return get_norm_spec(target)
        except ValueError:
            return None
    return None


def is_none(norm: NormArg) -> bool:
    """True when ``norm`` asks for no normalization (``"none"`` or ``nn.Identity``)."""
    spec = norm_spec_of(norm) if norm is not None else None
    return norm is None or (spec is not None and spec.family == "none")


def _check_activation(spec: NormSpec | None) -> None:
    if spec is not None and spec.family == "weight":
        raise ValueError(f"{spec.name!r} is a weight normalization, not a layer: keep an activation norm (or "
                         f"'none') as norm= and apply it with TrainConfig.weight_norm / normlab.weight.reparametrize")


def conv_norm(norm: NormArg, num_channels: int, **kwargs: Any) -> nn.Module:
    """A norm layer for ``(N, C, H, W)`` activations (see the module docstring for the mapping).

    Args:
        norm: name, class, partial or ``"none"``.
        num_channels: C.
        **kwargs: passed to the layer (e.g. ``num_groups``, ``eps``).

    Returns:
        The layer (``nn.Identity`` for ``"none"``).
    """
    if is_none(norm):
        return nn.Identity()
    spec = norm_spec_of(norm)
    _check_activation(spec)
    if spec is None or spec.channel_dim == 1:
        return create_norm(norm, num_channels, dims=2, **kwargs)
    if isinstance(norm, str) and spec.name == "layer_norm":
        return create_norm("layer_norm_2d", num_channels, **kwargs)
    if isinstance(norm, str) and spec.name == "dynamic_tanh":
        return create_norm(norm, num_channels, **{"channels_last": False, **kwargs})
    return FeaturesLast(create_norm(norm, num_channels, **kwargs))


def sequence_norm(norm: NormArg, num_features: int, **kwargs: Any) -> nn.Module:
    """A norm layer for ``(B, T, C)`` activations of a causal sequence model (see the module docstring).

    Args:
        norm: name, class, partial or ``"none"``.
        num_features: C.
        **kwargs: passed to the layer.

    Returns:
        The layer (``nn.Identity`` for ``"none"``).
    """
    if is_none(norm):
        return nn.Identity()
    spec = norm_spec_of(norm)
    _check_activation(spec)
    if spec is not None and spec.name in _POOLS_OVER_TIME:
        raise ValueError(f"{spec.name!r} pools statistics over the time steps of each sequence, which lets a causal "
                         f"language model see future tokens; choose a per-token norm (layer_norm, rms_norm, "
                         f"dynamic_tanh, scale_norm), a batch norm, or 'none'")
    if spec is not None and spec.channel_dim == -1:
        return create_norm(norm, num_features, **kwargs)
    return FeaturesFirst(create_norm(norm, num_features, dims=1, **kwargs))


def describe(norm: NormArg) -> str:
    """A short printable name for a norm argument (its registry name when known)."""
    spec = norm_spec_of(norm) if norm is not None else None
    if spec is not None:
        return spec.name
    return getattr(norm, "__name__", None) or repr(norm)

