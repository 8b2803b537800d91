"""CPU fast paths for the per-sample channel norms: ``group_norm``, ``instance_norm`` and ``normalize`` when it
is a LayerNorm2d (over ``C``) or an RMS norm over the spatial dims (FilterResponseNorm); the autograd glue
around :mod:`normlab.kernels.numba_groups` and :mod:`normlab.kernels.numba_columns`.

Contiguous inputs run the channels-first kernels; ``channels_last`` (4-D) and ``channels_last_3d`` (5-D)
inputs run the channels-last kernels and get a channels-last output, as the core promises. Any other layout
is declined. The glue is lean in the way of :mod:`normlab.kernels.cpu_batch`: the kernels get the tensors' addresses,
the statistics are NumPy arrays, and the input tensor is handed to the autograd function as it is.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from normlab.core import functional as core
from normlab.kernels import buffers, cpu_common, numba_columns, numba_groups
from normlab.kernels.cpu_common import param_grad
from normlab.kernels.cpu_rows import fast_rows
from normlab.kernels.storage import KERNEL_SCALAR


def _group_reference(groups: int, eps: float, center: bool):
    def norm(x, weight, bias):
        grouped = x.unflatten(1, (groups, x.shape[1] // groups))  # (N, G, C//G, *)
        w = None if weight is None else weight.reshape(groups, -1)
        b = None if bias is None else bias.reshape(groups, -1)
        dims = tuple(range(2, grouped.dim()))
        return core.normalize(grouped, dims, center=center, eps=eps, weight=w, bias=b, param_dim=1).flatten(1, 2)

    return norm


def _group_forward(x, weight, bias, groups, eps, center, kind, stats):
    """Run the group kernel on ``x`` (its layout ``kind``); ``stats`` ``(2, N, G)`` float32 receives the mean
    and variance (the mean square when not centred). Returns ``y``, laid out like ``x``."""
    n, c = x.shape[0], x.shape[1]
    w, b = cpu_common.param_tensor(weight, c, 1.0), cpu_common.param_tensor(bias, c, 0.0)
    y = buffers.empty_like_dense(x)
    cpu_common.threads(x.numel())
    numba_groups.group_forward_at(
        x.data_ptr(), y.data_ptr(), KERNEL_SCALAR[x.dtype], n, c, x.numel() // (n * c), kind == "last", groups,
        w.data_ptr(), b.data_ptr(), eps, center, stats,
    )
    return y


class GroupFunction(torch.autograd.Function):
    """Group statistics per sample (GroupNorm; InstanceNorm with ``groups = C``; RMS with ``center=False``);
    ``stats`` ``(2, N, G)`` receives the statistics (not differentiable, for running statistics)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x, weight, bias, groups, eps, center, kind, stats):  # type: ignore[override]
        y = _group_forward(x, weight, bias, groups, eps, center, kind, stats)
        ctx.save_for_backward(x, weight, bias)
        ctx.groups, ctx.eps, ctx.center, ctx.kind, ctx.stats = groups, eps, center, kind, stats
        ctx.memory_format = cpu_common.dense_format(x)
        ctx.set_materialize_grads(False)
        return y

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        x, weight, bias = ctx.saved_tensors
        none = (None,) * 5
        if grad_y is None:
            return (None, None, None, *none)
        if torch.is_grad_enabled() or not cpu_common.backward_inputs_ok(x, ctx.memory_format, grad_y):
            reference = _group_reference(ctx.groups, ctx.eps, ctx.center)  # (double backward: differentiable)
            needs = ctx.needs_input_grad[:3]
            return (*cpu_common.reference_grads(reference, (x, weight, bias), needs, (grad_y,)), *none)
        n, c = x.shape[0], x.shape[1]
        w = cpu_common.param_tensor(weight, c, 1.0)
        grad_y = grad_y.contiguous(memory_format=ctx.memory_format)
        grad_x = buffers.empty_like_dense(x)
        param_grads = np.empty((2, c), np.float32)
        cpu_common.threads(x.numel())
        numba_groups.group_backward_at(
            x.data_ptr(), grad_y.data_ptr(), grad_x.data_ptr(), KERNEL_SCALAR[x.dtype], n, c, x.numel() // (n * c),
            ctx.kind == "last", ctx.groups, w.data_ptr(), ctx.stats, ctx.eps, ctx.center, param_grads,
        )
        # a gradient for an input that needs none is dropped by autograd
        return grad_x, param_grad(param_grads[0], weight), param_grad(param_grads[1], bias), *none


def _column_tile(channels: int, length: int) -> int:
    """Positions per task so that a ``C × tile`` float32 block is about 128 KiB (a multiple of 16)."""
    return max(16, min(length, (32768 // channels) // 16 * 16))


def _column_forward(x, weight, bias, eps, center, stats):
    """LayerNorm2d (or RMS) over ``C`` of a contiguous ``x``; ``stats`` ``(2, N, L)`` receives mean and rstd."""
    n, c, length = stats.shape[1], x.shape[1], stats.shape[2]
    tile = _column_tile(c, length)
    w, b = cpu_common.param_tensor(weight, c, 1.0), cpu_common.param_tensor(bias, c, 0.0)
    y = buffers.empty_like_dense(x)
    cpu_common.threads(x.numel())
    numba_columns.column_forward_at(
        x.data_ptr(), y.data_ptr(), KERNEL_SCALAR[x.dtype], n, c, length, w.data_ptr(), b.data_ptr(), eps, center,
        tile, stats,
    )
    return y, tile


class ColumnFunction(torch.autograd.Function):
    """LayerNorm2d (``center=True``) or RMS over ``C`` of a contiguous ``(N, C, *)`` input."""

    @staticmethod
    def forward(ctx: FunctionCtx, x, weight, bias, eps, center, stats):  # type: ignore[override]
        y, tile = _column_forward(x, weight, bias, eps, center, stats)
        ctx.save_for_backward(x, weight, bias)
        ctx.memory_format = torch.contiguous_format
        ctx.eps, ctx.center, ctx.tile, ctx.stats = eps, center, tile, stats
        return y

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        x, weight, bias = ctx.saved_tensors
        if torch.is_grad_enabled() or not cpu_common.backward_inputs_ok(x, ctx.memory_format, grad_y):

            def reference(x, w, b):  # (double backward: differentiable)
                return core.normalize(x, (1,), center=ctx.center, eps=ctx.eps, weight=w, bias=b, param_dim=1)

            grads = cpu_common.reference_grads(reference, (x, weight, bias), ctx.needs_input_grad[:3], (grad_y,))
            return (*grads, None, None, None)
        stats = ctx.stats
        n, c, length = stats.shape[1], x.shape[1], stats.shape[2]
        w = cpu_common.param_tensor(weight, c, 1.0)
        grad_y = grad_y.contiguous()
        grad_x = buffers.empty_like_dense(x)
        param_grads = np.empty((2, c), np.float32)
        cpu_common.threads(x.numel())
        numba_columns.column_backward_at(
            x.data_ptr(), grad_y.data_ptr(), grad_x.data_ptr(), KERNEL_SCALAR[x.dtype], n, c, length, w.data_ptr(),
            stats, ctx.center, ctx.tile, param_grads,
        )
        return grad_x, param_grad(param_grads[0], weight), param_grad(param_grads[1], bias), None, None, None


def _usable(kind, x: Tensor, weight, bias, eps) -> bool:
    return (
        kind is not None
        and isinstance(eps, (int, float))
        and not isinstance(eps, bool)
        and cpu_common.params_ok(x.shape[1], weight, bias)
    )


def _per_sample(x, groups, weight, bias, eps, center):
    """Run :class:`GroupFunction` on ``x`` in its layout: ``(y, stats)`` with ``stats`` ``(2, N, G)`` (mean,
    variance), or ``None`` when declined."""
    kind = cpu_common.channel_kind(x)
    if not _usable(kind, x, weight, bias, eps):
        return None
    stats = buffers.float32_array(2, x.shape[0], groups)
    if cpu_common.needs_grad(x, weight, bias):
        y = cpu_common.apply(GroupFunction, x, weight, bias, groups, float(eps), center, kind, stats)
    else:
        y = _group_forward(x, weight, bias, groups, float(eps), center, kind, stats)
    return y, stats


def fast_group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Fast path for :func:`normlab.core.functional.group_norm` (``None``: declined)."""
    result = _per_sample(x, num_groups, weight, bias, eps, True)
    return None if result is None else result[0]


def fast_instance_norm(
    x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True, momentum=0.1, eps=1e-5,
    num_batches_tracked=None,
):
    """Fast path for :func:`normlab.core.functional.instance_norm` with the input's own statistics."""
    if not use_input_stats or not isinstance(x, Tensor) or x.dim() < 3:
        return None
    result = _per_sample(x, x.shape[1], weight, bias, eps, True)
    if result is None:
        return None
    y, stats = result
    if running_mean is not None:
        count = x.numel() // (x.shape[0] * x.shape[1])
        cpu_common.fold_running_stats(running_mean, running_var, stats.mean(1), count, momentum, num_batches_tracked)
    return y


def fast_normalize(x, dims, center=True, eps=1e-5, weight=None, bias=None, param_dim=None):
    """Fast path for :func:`normlab.core.functional.normalize` in two shapes of call: over ``C`` with
    per-channel parameters (LayerNorm2d) and over the spatial dims per channel (FilterResponseNorm)."""
    if not isinstance(x, Tensor) or param_dim != 1:
        return None
    ndim = x.dim()
    if ndim < 3 or (weight is not None and weight.dim() != 1) or (bias is not None and bias.dim() != 1):
        return None
    dims = sorted(d % ndim for d in dims)
    if dims == list(range(2, ndim)):
        result = _per_sample(x, x.shape[1], weight, bias, eps, center)
        return None if result is None else result[0]
    if dims != [1]:
        return None
    kind = cpu_common.channel_kind(x)
    if not _usable(kind, x, weight, bias, eps):
        return None
    if kind == "last":  # channels-last: each position's channels are one row
        return fast_rows(x, x.shape[1], weight, bias, float(eps), center)
    stats = buffers.float32_array(2, x.shape[0], x.numel() // (x.shape[0] * x.shape[1]))
    if cpu_common.needs_grad(x, weight, bias):
        return cpu_common.apply(ColumnFunction, x, weight, bias, float(eps), center, stats)
    return _column_forward(x, weight, bias, float(eps), center, stats)[0]
