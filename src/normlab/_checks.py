"""Input checks shared by every part of normlab: each raises an error that names the problem and the fix."""

from __future__ import annotations

import torch
from torch import Tensor


def check_floating(x: Tensor, who: str) -> None:
    """Raise ``TypeError`` unless ``x`` holds floating-point values."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{who} expects a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{who} expects a floating-point tensor, got dtype {x.dtype}; "
            "convert it first, e.g. x.float() (integer images: x.float() / 255)"
        )


def check_eps(eps: float, who: str) -> None:
    """Raise ``ValueError`` unless ``eps`` is a positive number (it keeps the division finite)."""
    if isinstance(eps, Tensor):
        return
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"{who}: eps must be a positive number (it keeps the division finite), got {eps!r}")


def check_positive_int(value: int, name: str, who: str) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer ≥ 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive integer, got {value!r}")


def check_rank(x: Tensor, allowed: tuple[int, ...], who: str, layout: str) -> None:
    """Raise ``ValueError`` unless ``x.dim()`` is one of ``allowed``; ``layout`` describes the expected shape."""
    if x.dim() not in allowed:
        ranks = " or ".join(f"{r}-D" for r in allowed)
        raise ValueError(f"{who} expects a {ranks} input {layout}, got a {x.dim()}-D input of shape {tuple(x.shape)}")


def check_channels(x: Tensor, expected: int, who: str, dim: int = 1) -> None:
    """Raise ``ValueError`` unless ``x.shape[dim] == expected`` (the layer's feature count)."""
    has_dim = -x.dim() <= dim < x.dim()
    if not has_dim or x.shape[dim] != expected:
        got = x.shape[dim] if has_dim else "none"
        raise ValueError(
            f"{who} was built for {expected} features (channels) in dim {dim}, but the input of shape "
            f"{tuple(x.shape)} has {got}; build the layer with num_features={got} or fix the input layout"
        )


def memory_format_of(x: Tensor) -> torch.memory_format:
    """The memory format a layer's output should keep: channels_last(_3d) when the input has it."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format
