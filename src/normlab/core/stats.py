r"""Statistics of the one normalization core: what to reduce, whether to centre, and the running averages.

Every normalization in normlab is the same three choices (after the unified view of normalization as a
projection onto a hypersphere):

1. **which dims are reduced** — the batch and spatial dims for BatchNorm, the feature dims for LayerNorm,
   the spatial dims for InstanceNorm, channel groups for GroupNorm;
2. **whether the mean is removed** — centred statistics (mean and variance) or the mean square only (RMSNorm);
3. **where the statistics come from** — this batch, this sample, or running averages kept across batches.

This module computes the statistics (choices 1 and 2) and keeps the running averages (choice 3).

Numerics are decided here, once: half-precision inputs (fp16, bf16) are accumulated in float32 and the
statistics are returned in float32; the variance comes from a two-pass reduction
(:func:`torch.var_mean`), so it is never negative and stays accurate when the data sit on a large offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

_HALF_TYPES = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are accumulated in: float32 for half types, the dtype itself otherwise."""
    return torch.float32 if dtype in _HALF_TYPES else dtype


class Moments(NamedTuple):
    r"""Statistics over the reduced dims, kept as size-1 dims so they broadcast against the input.

    ``mean`` is ``None`` for RMS statistics; ``var`` then holds the mean square :math:`\frac1n\sum x^2`.
    """

    mean: Tensor | None
    var: Tensor


def moments(x: Tensor, dims: Sequence[int], *, center: bool = True) -> Moments:
    r"""Mean and biased variance (or the mean square) of ``x`` over ``dims``.

    .. math::
        \mu = \frac1n \sum_{i} x_i, \qquad
        \sigma^2 = \frac1n \sum_i (x_i - \mu)^2 \quad\text{(center=True)}, \qquad
        \nu^2 = \frac1n \sum_i x_i^2 \quad\text{(center=False)}

    where the sums run over the ``n`` elements spanned by ``dims``.

    Args:
        x: input of any floating dtype; fp16/bf16 are accumulated in float32.
        dims: the dims to reduce (negative indices allowed).
        center: remove the mean (``True``) or compute the mean square only (``False``, as RMSNorm does).

    Returns:
        :class:`Moments` in float32 for half inputs (else ``x.dtype``), reduced dims kept with size 1.

    Shape:
        - x: any shape
        - mean, var: ``x.shape`` with every dim in ``dims`` set to 1

    Examples:
        >>> x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]])
        >>> m = moments(x, dims=(1,))
        >>> m.mean.flatten().tolist(), [round(v, 4) for v in m.var.flatten().tolist()]
        ([2.0, 4.0], [0.6667, 0.0])
        >>> moments(x, dims=(1,), center=False).var.flatten().tolist()
        [4.666666507720947, 16.0]
    """
    xs = x.to(compute_dtype(x.dtype))
    dims = tuple(dims)
    if center:
        var, mean = torch.var_mean(xs, dim=dims, correction=0, keepdim=True)
        return Moments(mean, var)
    return Moments(None, xs.square().mean(dim=dims, keepdim=True))


def count_batch_(momentum: float | None, num_batches_tracked: Tensor | None) -> float | None:
    """Count one more batch (``num_batches_tracked += 1`` when given) and return the running-average factor:
    ``momentum``, or ``1/t`` after ``t`` batches when ``momentum`` is ``None`` (``None`` without a counter).

    Examples:
        >>> t = torch.tensor(1)
        >>> count_batch_(None, t), t.item(), count_batch_(0.1, None)
        (0.5, 2, 0.1)
    """
    if num_batches_tracked is not None:
        num_batches_tracked.add_(1)
    if momentum is not None:
        return momentum
    return None if num_batches_tracked is None else 1.0 / float(num_batches_tracked.item())


def update_running_stats_(
    running_mean: Tensor | None,
    running_var: Tensor | None,
    batch_mean: Tensor,
    batch_var: Tensor,
    count: int,
    momentum: float | None,
    num_batches_tracked: Tensor | None = None,
) -> None:
    r"""Fold one batch's statistics into the running averages, in place (as torch.nn's BatchNorm does).

    .. math::
        \hat\mu \leftarrow (1 - m)\,\hat\mu + m\,\mu_B, \qquad
        \hat\sigma^2 \leftarrow (1 - m)\,\hat\sigma^2 + m\,\frac{n}{n-1}\sigma_B^2

    The forward pass normalizes with the biased variance :math:`\sigma_B^2`; the running variance stores the
    unbiased estimate :math:`\frac{n}{n-1}\sigma_B^2`. With ``momentum=None`` the factor is
    :math:`m = 1/t` after ``t`` batches, a cumulative (equal-weight) average. ``num_batches_tracked`` is
    incremented here when given.

    Args:
        running_mean, running_var: per-channel buffers, updated in place (``None`` skips the update).
        batch_mean, batch_var: per-channel batch statistics (biased variance), any shape with ``C`` elements.
        count: ``n``, the number of values each channel's statistics were taken over.
        momentum: the exponential-average factor, or ``None`` for a cumulative average.
        num_batches_tracked: the batch counter, incremented in place.

    Examples:
        >>> rm, rv = torch.zeros(1), torch.ones(1)
        >>> update_running_stats_(rm, rv, torch.tensor([2.0]), torch.tensor([1.0]), count=5, momentum=0.5)
        >>> rm.item(), rv.item()
        (1.0, 1.125)
    """
    factor = count_batch_(momentum, num_batches_tracked)
    if running_mean is None or running_var is None:
        return
    if factor is None:
        raise ValueError("momentum=None (a cumulative average) needs the num_batches_tracked counter")
    unbiased = batch_var * (count / max(count - 1, 1))
    with torch.no_grad():
        running_mean.lerp_(batch_mean.detach().reshape(running_mean.shape).to(running_mean.dtype), factor)
        running_var.lerp_(unbiased.detach().reshape(running_var.shape).to(running_var.dtype), factor)
