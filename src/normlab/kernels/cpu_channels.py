"""CPU fast paths for the per-sample channel norms: ``group_norm``, ``instance_norm`` and ``normalize`` when it
is a LayerNorm2d (over ``C``) or an RMS norm over the spatial dims (FilterResponseNorm); the autograd glue
around :mod:`normlab.kernels.numba_groups` and :mod:`normlab.kernels.numba_columns`.

Contiguous inputs run the channels-first kernels; ``channels_last`` (4-D) and ``channels_last_3d`` (5-D)
inputs run the channels-last kernels and get a channels-last output, as the core promises. Any other layout
is declined.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from normlab.core import functional as core
from normlab.core.stats import update_running_stats_
from normlab.kernels import buffers, cpu_common, numba_columns, numba_groups
from normlab.kernels.cpu_rows import RowNormFunction, row_forward
from normlab.kernels.numba_dtypes import as_kernel_array as arr

_LAST_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}


def channel_layout(x: Tensor) -> tuple[str, Tensor] | None:
    """``("first", (N, C, L) view)`` for a contiguous input, ``("last", (N, L, C) view)`` for a channels-last
    one, ``None`` otherwise (and for inputs the kernels do not take)."""
    if not cpu_common.plain_cpu_tensor(x) or cpu_common.tracing() or x.dim() < 2 or x.numel() == 0:
        return None
    n, c = x.shape[:2]
    if x.is_contiguous():
        return "first", x.view(n, c, -1)
    fmt = _LAST_FORMATS.get(x.dim())
    if fmt is not None and x.is_contiguous(memory_format=fmt):
        return "last", x.movedim(1, -1).reshape(n, -1, c)
    return None


def restore_layout(y3d: Tensor, layout: str, like: Tensor) -> Tensor:
    """The kernel output ``y3d`` as a tensor shaped like ``like``, in ``like``'s memory format."""
    if layout == "first":
        return y3d.view(like.shape)
    n, c = like.shape[:2]
    return y3d.view(n, *like.shape[2:], c).movedim(-1, 1)


def _to_first(x3d: Tensor, layout: str) -> Tensor:
    return x3d if layout == "first" else x3d.transpose(1, 2)


def _group_reference(groups: int, eps: float, center: bool, layout: str):
    def norm(x3d, weight, bias):
        x = _to_first(x3d, layout)
        grouped = x.unflatten(1, (groups, x.shape[1] // groups))  # (N, G, C//G, L)
        w = None if weight is None else weight.reshape(groups, -1)
        b = None if bias is None else bias.reshape(groups, -1)
        y = core.normalize(grouped, (2, 3), center=center, eps=eps, weight=w, bias=b, param_dim=1).flatten(1, 2)
        return _to_first(y, layout)

    return norm


def _group_forward(x3d, weight, bias, groups, eps, center, layout):
    """Run the group kernel: ``(y3d, mean, var)`` with ``mean``, ``var`` ``(N, G)`` float32."""
    n, channels = x3d.shape[0], x3d.shape[1 if layout == "first" else 2]
    y3d = buffers.empty(tuple(x3d.shape), x3d.dtype)
    mean, var = torch.empty(n, groups), torch.empty(n, groups)
    kernel = numba_groups.group_forward_first if layout == "first" else numba_groups.group_forward_last
    cpu_common.threads(x3d.numel())
    kernel(
        arr(x3d), groups, cpu_common.param_array(weight, channels, 1.0), cpu_common.param_array(bias, channels, 0.0),
        np.float32(eps), center, arr(y3d), mean.numpy(), var.numpy(),
    )
    return y3d, mean, var


class GroupFunction(torch.autograd.Function):
    """Group statistics per sample (GroupNorm; InstanceNorm with ``groups = C``; RMS with ``center=False``).

    Returns ``(y3d, mean, var)``; ``mean`` and ``var`` ``(N, G)`` are not differentiable (for running stats).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x3d, weight, bias, groups, eps, center, layout):  # type: ignore[override]
        y3d, mean, var = _group_forward(x3d, weight, bias, groups, eps, center, layout)
        ctx.save_for_backward(x3d, weight, bias, mean, var)
        ctx.groups, ctx.eps, ctx.center, ctx.layout = groups, eps, center, layout
        ctx.channels = x3d.shape[1 if layout == "first" else 2]
        ctx.mark_non_differentiable(mean, var)
        ctx.set_materialize_grads(False)
        return y3d, mean, var

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):  # type: ignore[override]
        x3d, weight, bias, mean, var = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        none = (None,) * 4
        if grad_y is None:
            return (None, None, None, *none)
        if torch.is_grad_enabled():  # double backward: through the reference path
            reference = _group_reference(ctx.groups, ctx.eps, ctx.center, ctx.layout)
            return (*cpu_common.differentiable_grads(reference, (x3d, weight, bias), needs, (grad_y,)), *none)
        n = x3d.shape[0]
        grad_x = buffers.empty(tuple(x3d.shape), x3d.dtype)
        partial_w, partial_b = torch.empty(n, ctx.channels), torch.empty(n, ctx.channels)
        kernel = numba_groups.group_backward_first if ctx.layout == "first" else numba_groups.group_backward_last
        cpu_common.threads(x3d.numel())
        kernel(
            arr(x3d), arr(grad_y.contiguous()), ctx.groups, cpu_common.param_array(weight, ctx.channels, 1.0),
            mean.numpy(), (var + ctx.eps).rsqrt().numpy(), ctx.center, arr(grad_x), partial_w.numpy(),
            partial_b.numpy(),
        )
        grad_w = cpu_common.reduce_partials(partial_w, weight)
        grad_b = cpu_common.reduce_partials(partial_b, bias)
        grads = (grad_x, grad_w, grad_b)
        return (*(g if need else None for g, need in zip(grads, needs)), *none)


def _column_tile(channels: int, length: int) -> int:
    """Positions per task so that a ``C × tile`` float32 block is about 128 KiB (a multiple of 16)."""
    return max(16, min(length, (32768 // channels) // 16 * 16))


def _column_forward(x3d, weight, bias, eps, center):
    n, channels, length = x3d.shape
    tile = _column_tile(channels, length)
    y3d = buffers.empty((n, channels, length), x3d.dtype)
    mean, rstd = torch.empty(n, length), torch.empty(n, length)
    cpu_common.threads(x3d.numel())
    numba_columns.column_forward(
        arr(x3d), cpu_common.param_array(weight, channels, 1.0), cpu_common.param_array(bias, channels, 0.0),
        np.float32(eps), center, tile, arr(y3d), mean.numpy(), rstd.numpy(),
    )
    return y3d, mean, rstd, tile


class ColumnFunction(torch.autograd.Function):
    """LayerNorm2d (``center=True``) or RMS over ``C`` of a contiguous ``(N, C, L)`` input."""

    @staticmethod
    def forward(ctx: FunctionCtx, x3d, weight, bias, eps, center):  # type: ignore[override]
        y3d, mean, rstd, tile = _column_forward(x3d, weight, bias, eps, center)
        ctx.save_for_backward(x3d, weight, bias, mean, rstd)
        ctx.eps, ctx.center, ctx.tile = eps, center, tile
        return y3d

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        x3d, weight, bias, mean, rstd = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # double backward: through the reference path

            def reference(x, w, b):
                return core.normalize(x, (1,), center=ctx.center, eps=ctx.eps, weight=w, bias=b, param_dim=1)

            return (*cpu_common.differentiable_grads(reference, (x3d, weight, bias), needs, (grad_y,)), None, None)
        n, channels, length = x3d.shape
        tasks = n * (-(-length // ctx.tile))
        grad_x = buffers.empty((n, channels, length), x3d.dtype)
        partial_w, partial_b = torch.empty(tasks, channels), torch.empty(tasks, channels)
        cpu_common.threads(x3d.numel())
        numba_columns.column_backward(
            arr(x3d), arr(grad_y.contiguous()), cpu_common.param_array(weight, channels, 1.0), mean.numpy(),
            rstd.numpy(), ctx.center, ctx.tile, arr(grad_x), partial_w.numpy(), partial_b.numpy(),
        )
        grads = (grad_x, cpu_common.reduce_partials(partial_w, weight), cpu_common.reduce_partials(partial_b, bias))
        return (*(g if need else None for g, need in zip(grads, needs)), None, None)


def _usable(layout, x: Tensor, weight, bias, eps) -> bool:
    return (
        layout is not None
        and isinstance(eps, (int, float))
        and not isinstance(eps, bool)
        and cpu_common.params_ok(x.shape[1], weight, bias)
    )


def _per_sample(x, groups, weight, bias, eps, center):
    """Run :class:`GroupFunction` on ``x`` in its layout: ``(y, mean, var)``, or ``None`` when declined."""
    layout = channel_layout(x)
    if not _usable(layout, x, weight, bias, eps):
        return None
    kind, x3d = layout
    if cpu_common.needs_grad(x, weight, bias):
        y3d, mean, var = GroupFunction.apply(x3d, weight, bias, groups, float(eps), center, kind)
    else:
        y3d, mean, var = _group_forward(x3d, weight, bias, groups, float(eps), center, kind)
    return restore_layout(y3d, kind, x), mean, var


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
    y, mean, var = result
    if running_mean is not None:
        count = x[0, 0].numel()
        update_running_stats_(
            running_mean, running_var, mean.mean(0), var.mean(0), count, momentum, num_batches_tracked
        )
    return y


def fast_normalize(x, dims, center=True, eps=1e-5, weight=None, bias=None, param_dim=None):
    """Fast path for :func:`normlab.core.functional.normalize` in two shapes of call: over ``C`` with
    per-channel parameters (LayerNorm2d) and over the spatial dims per channel (FilterResponseNorm)."""
    if not isinstance(x, Tensor) or x.dim() < 3 or param_dim != 1:
        return None
    if any(p is not None and p.dim() != 1 for p in (weight, bias)):
        return None
    dims = tuple(sorted(d % x.dim() for d in dims))
    if dims == tuple(range(2, x.dim())):
        result = _per_sample(x, x.shape[1], weight, bias, eps, center)
        return None if result is None else result[0]
    if dims != (1,):
        return None
    layout = channel_layout(x)
    if not _usable(layout, x, weight, bias, eps):
        return None
    kind, x3d = layout
    grad = cpu_common.needs_grad(x, weight, bias)
    if kind == "first":
        if grad:
            y3d = ColumnFunction.apply(x3d, weight, bias, float(eps), center)
        else:
            y3d = _column_forward(x3d, weight, bias, float(eps), center)[0]
        return restore_layout(y3d, kind, x)
    rows = x3d.reshape(-1, x.shape[1])  # channels-last: each position's channels are one row
    if grad:
        y2d = RowNormFunction.apply(rows, weight, bias, float(eps), center)
    else:
        y2d = row_forward(rows, weight, bias, float(eps), center)[0]
    return restore_layout(y2d.view(x3d.shape), kind, x)
