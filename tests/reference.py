"""Independent float64 references for the normalization formulas, written from the papers, not from normlab.

Each function takes the input and the layer's parameters as plain float64 tensors and returns float64 output.
They use explicit reshapes and the textbook formulas; none of them calls normlab.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _standardize(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    n = math.prod(x.shape[d] for d in dims)
    mean = x.sum(dim=dims, keepdim=True) / n
    var = ((x - mean) ** 2).sum(dim=dims, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps)


def _per_channel(p: Tensor | None, ndim: int) -> Tensor | None:
    return None if p is None else p.reshape(-1, *([1] * (ndim - 2)))


def _affine(y: Tensor, w: Tensor | None, b: Tensor | None) -> Tensor:
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y


def batch_norm(x, w, b, eps, running_mean=None, running_var=None):
    """Train mode (batch statistics) or, with running stats given, eval mode."""
    if running_mean is not None:
        rm, rv = _per_channel(running_mean, x.dim()), _per_channel(running_var, x.dim())
        y = (x - rm) / torch.sqrt(rv + eps)
    else:
        y = _standardize(x, (0, *range(2, x.dim())), eps)
    return _affine(y, _per_channel(w, x.dim()), _per_channel(b, x.dim()))


def instance_norm(x, w, b, eps):
    return _affine(_standardize(x, tuple(range(2, x.dim())), eps), _per_channel(w, x.dim()), _per_channel(b, x.dim()))


def layer_norm(x, w, b, eps, normalized_ndim=1):
    return _affine(_standardize(x, tuple(range(x.dim() - normalized_ndim, x.dim())), eps), w, b)


def layer_norm_2d(x, w, b, eps):
    """LayerNorm over C at each position: permute C to the end, normalize, permute back."""
    perm = (0, *range(2, x.dim()), 1)
    inverse = (0, x.dim() - 1, *range(1, x.dim() - 1))
    return layer_norm(x.permute(perm), w, b, eps).permute(inverse)


def group_norm(x, w, b, eps, groups):
    n, c = x.shape[:2]
    grouped = x.reshape(n, groups, -1)
    y = _standardize(grouped, (2,), eps).reshape(x.shape)
    return _affine(y, _per_channel(w, x.dim()), _per_channel(b, x.dim()))


def rms_norm(x, w, eps, normalized_ndim=1):
    dims = tuple(range(x.dim() - normalized_ndim, x.dim()))
    ms = (x * x).mean(dim=dims, keepdim=True)
    return _affine(x / torch.sqrt(ms + eps), w, None)


def batch_renorm(x, w, b, eps, running_mean, running_var, r_max, d_max):
    """Ioffe (2017), Algorithm 1, training mode."""
    dims = (0, *range(2, x.dim()))
    mu = x.mean(dim=dims, keepdim=True)
    sigma_b = torch.sqrt(((x - mu) ** 2).mean(dim=dims, keepdim=True) + eps)
    sigma = torch.sqrt(_per_channel(running_var, x.dim()) + eps)
    r = (sigma_b / sigma).clamp(1 / r_max, r_max).detach()  # r and d are constants for backprop
    d = ((mu - _per_channel(running_mean, x.dim())) / sigma).clamp(-d_max, d_max).detach()
    y = (x - mu) / sigma_b * r + d
    return _affine(y, _per_channel(w, x.dim()), _per_channel(b, x.dim()))


def ghost_batch_norm(x, w, b, eps, virtual_batch_size):
    return torch.cat([batch_norm(chunk, w, b, eps) for chunk in x.split(virtual_batch_size)])


def filter_response_norm(x, w, b, tau, eps):
    """Singh & Krishnan (2020), Eq. 1–2: nu^2 = mean(x^2) over space; y = max(gamma x / sqrt(nu^2+eps) + beta, tau)."""
    nu2 = (x * x).mean(dim=tuple(range(2, x.dim())), keepdim=True)
    y = _affine(x / torch.sqrt(nu2 + eps), _per_channel(w, x.dim()), _per_channel(b, x.dim()))
    return torch.maximum(y, _per_channel(tau, x.dim()))


def scale_norm(x, g, eps):
    """Nguyen & Salazar (2019): g x / ||x||, with eps^2 added under the root."""
    return g * x / torch.sqrt((x * x).sum(-1, keepdim=True) + eps**2)


def dynamic_tanh(x, alpha, w, b):
    """Zhu et al. (2025): gamma * tanh(alpha x) + beta."""
    return _affine(torch.tanh(alpha * x), w, b)
