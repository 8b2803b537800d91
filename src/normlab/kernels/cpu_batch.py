"""CPU fast path for ``batch_norm``: the autograd glue around :mod:`normlab.kernels.numba_batch`.

Training (or no running statistics) uses the batch's statistics, runs the kernels' forward and backward, and
folds the statistics into the running buffers (:func:`~normlab.kernels.cpu_common.fold_running_stats`, the
update of :func:`~normlab.core.stats.update_running_stats_`), so the buffers move exactly as on the reference
path. Evaluation is one per-channel affine pass; when a gradient is needed in evaluation the call is declined
(the reference path is differentiable and the case is rare). Layouts (:func:`~normlab.kernels.cpu_common.
channel_kind`): a contiguous ``(N, C, *)`` input runs the channels-first kernels; a ``channels_last`` input, or a
2-D ``(N, C)`` one, the channels-last (rows) kernels; the output and the input gradient keep the input's layout.

**Lean glue.** BatchNorm moves few bytes per value, so at common sizes the Python around the kernels is a real
share of a call; worse, each torch or NumPy call issued between two kernels runs with cold caches (several µs).
So the glue hands the kernels the tensors' addresses and sizes (:mod:`~normlab.kernels.numba_memory`): outputs
come from :func:`~normlab.kernels.buffers.empty_like_dense`, the per-channel statistics are NumPy arrays, and the
autograd function takes the input tensor as it is, so no view or layout op is recorded around it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from normlab.core import functional as core
from normlab.kernels import buffers, cpu_common, numba_batch
from normlab.kernels.storage import KERNEL_SCALAR


def _kind(x: Tensor) -> str | None:
    """``"first"`` (an ``(N, C, L)`` view), ``"rows"`` (an ``(R, C)`` view of the positions' channel vectors, for a
    channels-last or 2-D input) or ``None``: declined."""
    kind = cpu_common.channel_kind(x)
    return "rows" if kind == "last" or (kind == "first" and x.dim() == 2) else kind


def _sizes(x: Tensor, kind: str) -> tuple:
    """The arguments every entry of :mod:`~normlab.kernels.numba_batch` takes after the addresses: the stored
    type, ``N``, ``C``, ``L`` and whether the kernel sees rows."""
    n, c = x.shape[0], x.shape[1]
    return KERNEL_SCALAR[x.dtype], n, c, x.numel() // (n * c), kind == "rows"


def _block_rows(channels: int) -> int:
    """Rows per statistics block: about 32 KiB of float32, at least 8 rows."""
    return max(8, 8192 // max(channels, 1))


def _batch_forward(x: Tensor, weight, bias, eps: float, kind: str, stats: np.ndarray) -> Tensor:
    """The normalized output, shaped and laid out like ``x``; ``stats`` ``(2, C)`` float32 receives the batch mean
    and biased variance."""
    channels = x.shape[1]
    w, b = cpu_common.param_tensor(weight, channels, 1.0), cpu_common.param_tensor(bias, channels, 0.0)
    y = buffers.empty_like_dense(x)
    numba_batch.batch_forward_at(
        x.data_ptr(), y.data_ptr(), *_sizes(x, kind), w.data_ptr(), b.data_ptr(), eps, _workers(x, channels),
        _block_rows(channels), stats,
    )
    return y


def _workers(x: Tensor, channels: int) -> int:
    """Threads for ``x`` (:func:`~normlab.kernels.cpu_common.threads`), at most one per row of the channels-last
    view."""
    return min(cpu_common.threads(x.numel()), x.numel() // channels)


class BatchFunction(torch.autograd.Function):
    """BatchNorm of ``x`` with the batch's statistics, written into ``stats`` ``(2, C)`` (mean, biased variance,
    float32; not differentiable)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x, weight, bias, eps, kind, stats):  # type: ignore[override]
        y = _batch_forward(x, weight, bias, eps, kind, stats)
        ctx.save_for_backward(x, weight, bias)
        ctx.memory_format = cpu_common.dense_format(x)
        ctx.eps, ctx.kind, ctx.stats = eps, kind, stats
        ctx.set_materialize_grads(False)
        return y

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        x, weight, bias = ctx.saved_tensors
        if grad_y is None:
            return None, None, None, None, None, None
        if torch.is_grad_enabled() or not cpu_common.backward_inputs_ok(x, ctx.memory_format, grad_y):

            def reference(x, w, b):  # (double backward: differentiable)
                return core.batch_norm(x, None, None, w, b, training=True, eps=ctx.eps)

            grads = cpu_common.reference_grads(reference, (x, weight, bias), ctx.needs_input_grad[:3], (grad_y,))
            return (*grads, None, None, None)
        channels = x.shape[1]
        w = cpu_common.param_tensor(weight, channels, 1.0)
        grad_y = grad_y.contiguous(memory_format=ctx.memory_format)
        grad_x = buffers.empty_like_dense(x)
        param_grads = np.empty((2, channels), np.float32)
        numba_batch.batch_backward_at(
            x.data_ptr(), grad_y.data_ptr(), grad_x.data_ptr(), *_sizes(x, ctx.kind), w.data_ptr(), ctx.stats,
            ctx.eps, _workers(x, channels), param_grads,
        )
        # a gradient for an input that needs none is dropped by autograd
        grad_w, grad_b = cpu_common.param_grad(param_grads[0], weight), cpu_common.param_grad(param_grads[1], bias)
        return grad_x, grad_w, grad_b, None, None, None


def _evaluate(kind: str, x: Tensor, running_mean, running_var, weight, bias, eps) -> Tensor:
    channels = x.shape[1]
    scale = cpu_common.param_array(weight, channels, 1.0) / np.sqrt(
        cpu_common.param_array(running_var, channels, 1.0) + np.float32(eps))
    shift = (cpu_common.param_array(bias, channels, 0.0) - cpu_common.param_array(running_mean, channels, 0.0)
             * scale).astype(np.float32)
    scale = scale.astype(np.float32)
    y = buffers.empty_like_dense(x)
    numba_batch.channel_affine_at(x.data_ptr(), y.data_ptr(), *_sizes(x, kind), scale, shift, _workers(x, channels))
    return y


def fast_batch_norm(
    x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
    num_batches_tracked=None,
):
    """Fast path for :func:`normlab.core.functional.batch_norm` (``None``: declined)."""
    kind = _kind(x)
    if kind is None or not isinstance(eps, (int, float)) or isinstance(eps, bool):
        return None
    channels = x.shape[1]
    if not cpu_common.params_ok(channels, weight, bias):
        return None
    if not (training or running_mean is None):  # evaluation with the running statistics
        wants_grad = cpu_common.needs_grad(x, weight, bias)
        if wants_grad or running_var is None or not cpu_common.params_ok(channels, running_mean, running_var):
            return None
        return _evaluate(kind, x, running_mean, running_var, weight, bias, float(eps))
    count = x.numel() // channels
    if training and count <= 1:
        return None  # the reference path raises the explanatory error
    stats = np.empty((2, channels), np.float32)
    if cpu_common.needs_grad(x, weight, bias):
        y = cpu_common.apply(BatchFunction, x, weight, bias, float(eps), kind, stats)
    else:
        y = _batch_forward(x, weight, bias, float(eps), kind, stats)
    if training:
        cpu_common.fold_running_stats(running_mean, running_var, stats, count, momentum, num_batches_tracked)
    return y
