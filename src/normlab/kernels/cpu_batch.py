"""CPU fast path for ``batch_norm``: the autograd glue around :mod:`normlab.kernels.numba_batch`.

Training (or no running statistics) uses the batch's statistics, runs the kernels' forward and backward, and
folds the statistics into the running buffers with the core's
:func:`~normlab.core.stats.update_running_stats_`, so the buffers move exactly as on the reference path.
Evaluation is one per-channel affine pass; when a gradient is needed in evaluation the call is declined (the
reference path is differentiable and the case is rare). Layouts: a contiguous ``(N, C, *)`` input runs the
channels-first kernels; a ``channels_last`` input, or a 2-D ``(N, C)`` one, the channels-last (rows) kernels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from normlab.core import functional as core
from normlab.core.stats import update_running_stats_
from normlab.kernels import buffers, cpu_common, numba_batch
from normlab.kernels.cpu_channels import channel_layout, restore_layout
from normlab.kernels.numba_dtypes import as_kernel_array as arr


def _layout(x: Tensor) -> tuple[str, Tensor] | None:
    """``("first", (N, C, L))`` or ``("rows", (R, C))`` views of ``x``, or ``None``."""
    if isinstance(x, Tensor) and x.dim() == 2:
        ok = cpu_common.plain_cpu_tensor(x) and not cpu_common.tracing() and x.numel() > 0 and x.is_contiguous()
        return ("rows", x) if ok else None
    layout = channel_layout(x)
    if layout is None:
        return None
    kind, x3d = layout
    return ("first", x3d) if kind == "first" else ("rows", x3d.reshape(-1, x.shape[1]))


def _restore(y: Tensor, kind: str, like: Tensor) -> Tensor:
    if kind == "first":
        return y.view(like.shape)
    if like.dim() == 2:
        return y
    return restore_layout(y.view(like.shape[0], -1, like.shape[1]), "last", like)


def _block_rows(channels: int) -> int:
    """Rows per statistics block: about 32 KiB of float32, at least 8 rows."""
    return max(8, 8192 // max(channels, 1))


def _batch_forward(xv, weight, bias, eps, kind):
    """Batch statistics and the normalized output: ``(y, mean, var)``, ``mean``/``var`` ``(C,)`` float32."""
    channels = xv.shape[1]
    y = buffers.empty(tuple(xv.shape), xv.dtype)
    chunks = cpu_common.threads(xv.numel())
    if kind == "first":
        mean, var = torch.empty(channels), torch.empty(channels)
        numba_batch.batch_forward_first(
            arr(xv), cpu_common.param_array(weight, channels, 1.0), cpu_common.param_array(bias, channels, 0.0),
            np.float32(eps), arr(y), mean.numpy(), var.numpy(),
        )
        return y, mean, var
    mean, var = torch.empty(channels), torch.empty(channels)
    numba_batch.batch_forward_last(
        arr(xv), cpu_common.param_array(weight, channels, 1.0), cpu_common.param_array(bias, channels, 0.0),
        np.float32(eps), min(chunks, xv.shape[0]), _block_rows(channels), arr(y), mean.numpy(), var.numpy(),
    )
    return y, mean, var


class BatchFunction(torch.autograd.Function):
    """BatchNorm with the batch's statistics; returns ``(y, mean, var)`` (``mean``, ``var``: ``(C,)``, not
    differentiable, float32, biased variance)."""

    @staticmethod
    def forward(ctx: FunctionCtx, xv, weight, bias, eps, kind):  # type: ignore[override]
        y, mean, var = _batch_forward(xv, weight, bias, eps, kind)
        ctx.save_for_backward(xv, weight, bias, mean, (var + eps).rsqrt())
        ctx.eps, ctx.kind = eps, kind
        ctx.mark_non_differentiable(mean, var)
        ctx.set_materialize_grads(False)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):  # type: ignore[override]
        xv, weight, bias, mean, rstd = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if grad_y is None:
            return None, None, None, None, None
        if torch.is_grad_enabled():  # double backward: through the reference path

            def reference(x, w, b):
                return core.batch_norm(x, None, None, w, b, training=True, eps=ctx.eps)

            return (*cpu_common.differentiable_grads(reference, (xv, weight, bias), needs, (grad_y,)), None, None)
        channels = xv.shape[1]
        w32 = cpu_common.param_array(weight, channels, 1.0)
        grad_y = grad_y.contiguous()
        grad_x = buffers.empty(tuple(xv.shape), xv.dtype)
        grad_w, grad_b = torch.empty(channels), torch.empty(channels)
        chunks = cpu_common.threads(xv.numel())
        if ctx.kind == "first":
            numba_batch.batch_backward_first(
                arr(xv), arr(grad_y), w32, mean.numpy(), rstd.numpy(), arr(grad_x), grad_w.numpy(), grad_b.numpy()
            )
        else:
            numba_batch.batch_backward_last(
                arr(xv), arr(grad_y), w32, mean.numpy(), rstd.numpy(), min(chunks, xv.shape[0]), arr(grad_x),
                grad_w.numpy(), grad_b.numpy(),
            )
        grads = (
            grad_x,
            None if weight is None else grad_w.reshape(weight.shape).to(weight.dtype),
            None if bias is None else grad_b.reshape(bias.shape).to(bias.dtype),
        )
        return (*(g if need else None for g, need in zip(grads, needs)), None, None)


def _evaluate(kind: str, xv: Tensor, running_mean, running_var, weight, bias, eps) -> Tensor:
    channels = xv.shape[1]
    scale = cpu_common.as_float32(weight, channels, 1.0) * (running_var.detach().float() + eps).rsqrt()
    shift = cpu_common.as_float32(bias, channels, 0.0) - running_mean.detach().float() * scale
    y = buffers.empty(tuple(xv.shape), xv.dtype)
    chunks = cpu_common.threads(xv.numel())
    if kind == "first":
        numba_batch.channel_affine_first(arr(xv), arr(scale.contiguous()), arr(shift.contiguous()), arr(y))
    else:
        chunks = min(chunks, xv.shape[0])
        numba_batch.channel_affine_last(arr(xv), arr(scale.contiguous()), arr(shift.contiguous()), chunks, arr(y))
    return y


def fast_batch_norm(
    x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
    num_batches_tracked=None,
):
    """Fast path for :func:`normlab.core.functional.batch_norm` (``None``: declined)."""
    layout = _layout(x)
    if layout is None or not isinstance(eps, (int, float)) or isinstance(eps, bool):
        return None
    kind, xv = layout
    channels = x.shape[1]
    if not cpu_common.params_ok(channels, weight, bias):
        return None
    if not (training or running_mean is None):  # evaluation with the running statistics
        wants_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, weight, bias)
        )
        if wants_grad or running_var is None or not cpu_common.params_ok(channels, running_mean, running_var):
            return None
        return _restore(_evaluate(kind, xv, running_mean, running_var, weight, bias, float(eps)), kind, x)
    count = x.numel() // channels
    if training and count <= 1:
        return None  # the reference path raises the explanatory error
    if cpu_common.needs_grad(x, weight, bias):
        y, mean, var = BatchFunction.apply(xv, weight, bias, float(eps), kind)
    else:
        y, mean, var = _batch_forward(xv, weight, bias, float(eps), kind)
    if training:
        update_running_stats_(running_mean, running_var, mean, var, count, momentum, num_batches_tracked)
    return _restore(y, kind, x)
