"""CPU fast paths for the row norms (``layer_norm``, ``rms_norm``, ``add_layer_norm``, ``add_rms_norm``): the
autograd glue around :mod:`normlab.kernels.numba_rows`.

Each ``fast_*`` function takes the core op's arguments and returns its result, or ``None`` to decline (see
:mod:`normlab.kernels.cpu_common`); the input must be contiguous so that its trailing ``normalized_shape``
dims form rows of a 2-D view (a channels-last input's channel vectors are rows too: LayerNorm2d). The forward
keeps the per-row mean and :math:`1/\\sigma` (NumPy) for the backward, which returns the gradients for the input,
the weight and the bias (and the residual, for the fused ops); the glue is lean in the way of
:mod:`normlab.kernels.cpu_batch`: the kernels get the tensors' addresses (:mod:`~normlab.kernels.numba_memory`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from normlab.core import functional as core
from normlab.kernels import buffers, cpu_common, numba_rows
from normlab.kernels.cpu_common import param_grad
from normlab.kernels.storage import KERNEL_SCALAR


def _row_length(x: Tensor, normalized_shape: Sequence[int]) -> int | None:
    """``n`` = prod(normalized_shape) when ``x`` is a contiguous input the row kernels take, else ``None``."""
    if not cpu_common.plain_cpu_tensor(x) or x.numel() == 0 or not x.is_contiguous():
        return None
    shape = tuple(normalized_shape)
    if not shape or x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape):]) != shape:
        return None
    return math.prod(shape)


def _usable_eps(eps: object) -> bool:
    return isinstance(eps, (int, float)) and not isinstance(eps, bool)


def _row_forward(x: Tensor, n: int, weight, bias, eps: float, center: bool, stats: np.ndarray) -> Tensor:
    """LayerNorm (``center``) or RMSNorm of ``x``'s rows of ``n`` values; ``stats`` ``(2, R)`` receives the rows'
    mean and ``1/sigma``. The output is laid out like ``x``."""
    rows = stats.shape[1]
    chunks = min(cpu_common.threads(x.numel()), rows)
    w, b = cpu_common.param_tensor(weight, n, 1.0), cpu_common.param_tensor(bias, n, 0.0)
    y = buffers.empty_like_dense(x)
    numba_rows.norm_rows_forward_at(
        x.data_ptr(), y.data_ptr(), KERNEL_SCALAR[x.dtype], rows, n, w.data_ptr(), b.data_ptr(), eps, center,
        chunks, stats,
    )
    return y


def _add_forward(x, residual, n, weight, bias, eps, center, stats):
    rows = stats.shape[1]
    chunks = min(cpu_common.threads(x.numel()), rows)
    w, b = cpu_common.param_tensor(weight, n, 1.0), cpu_common.param_tensor(bias, n, 0.0)
    y, s = buffers.empty_like_dense(x), buffers.empty_like_dense(x)
    numba_rows.add_norm_rows_forward_at(
        x.data_ptr(), residual.data_ptr(), y.data_ptr(), s.data_ptr(), KERNEL_SCALAR[x.dtype], rows, n,
        w.data_ptr(), b.data_ptr(), eps, center, chunks, stats,
    )
    return y, s


def _backward(x, n, weight, bias, stats, center, layout, grad_y, grad_s):
    """``(grad_x, grad_w, grad_b)`` of the row norm of ``x``, laid out as ``layout`` (``grad_s``: the gradient of the
    fused ops' sum)."""
    grad_y = grad_y.contiguous(memory_format=layout)
    grad_s = None if grad_s is None else grad_s.contiguous(memory_format=layout)
    rows = stats.shape[1]
    chunks = min(cpu_common.threads(x.numel()), rows)
    w = cpu_common.param_tensor(weight, n, 1.0)
    grad_x = buffers.empty_like_dense(x)
    param_grads = np.empty((2, n), np.float32)
    numba_rows.norm_rows_backward_at(
        x.data_ptr(), grad_y.data_ptr(), 0 if grad_s is None else grad_s.data_ptr(), grad_x.data_ptr(),
        KERNEL_SCALAR[x.dtype], rows, n, w.data_ptr(), stats, center, chunks, param_grads,
    )
    return grad_x, param_grad(param_grads[0], weight), param_grad(param_grads[1], bias)


def _reference(center: bool, eps: float, n: int, memory_format: torch.memory_format):
    """The row norm on the core's reference path, for an input the forward saw in ``memory_format`` (whatever
    layout a saved-tensor hook hands back)."""

    def norm(x, weight, bias):
        if memory_format != torch.contiguous_format:  # the channels of a channels-last input: normalize over C
            return core.normalize(x, (1,), center=center, eps=eps, weight=weight, bias=bias, param_dim=1)
        rows = x.reshape(-1, n)
        w = None if weight is None else weight.reshape(n)
        if center:
            return core.layer_norm(rows, (n,), w, None if bias is None else bias.reshape(n), eps).view(x.shape)
        return core.rms_norm(rows, (n,), w, eps).view(x.shape)

    return norm


class RowNormFunction(torch.autograd.Function):
    """LayerNorm (``center=True``) or RMSNorm of each row of ``n`` values of ``x`` (the trailing values of a
    contiguous tensor, or the channels of a channels-last one), on the Numba kernels."""

    @staticmethod
    def forward(ctx: FunctionCtx, x, weight, bias, eps, center, n, stats):  # type: ignore[override]
        y = _row_forward(x, n, weight, bias, eps, center, stats)
        ctx.save_for_backward(x, weight, bias)
        ctx.eps, ctx.center, ctx.n, ctx.stats = eps, center, n, stats
        ctx.memory_format = cpu_common.dense_format(x)
        return y

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        x, weight, bias = ctx.saved_tensors
        if torch.is_grad_enabled() or not cpu_common.backward_inputs_ok(x, ctx.memory_format, grad_y):
            reference = _reference(ctx.center, ctx.eps, ctx.n, ctx.memory_format)  # (double backward: differentiable)
            grads = cpu_common.reference_grads(reference, (x, weight, bias), ctx.needs_input_grad[:3], (grad_y,))
        else:
            grads = _backward(x, ctx.n, weight, bias, ctx.stats, ctx.center, ctx.memory_format, grad_y, None)
        return (*grads, None, None, None, None)  # a gradient for an input that needs none is dropped by autograd


class AddRowNormFunction(torch.autograd.Function):
    """``s = x + residual`` and the LayerNorm / RMSNorm of ``s``'s rows, in one pass; returns ``(y, s)``."""

    @staticmethod
    def forward(ctx: FunctionCtx, x, residual, weight, bias, eps, center, n, stats):  # type: ignore[override]
        y, s = _add_forward(x, residual, n, weight, bias, eps, center, stats)
        ctx.save_for_backward(x, residual, weight, bias, s)
        ctx.eps, ctx.center, ctx.n, ctx.stats = eps, center, n, stats
        ctx.memory_format = cpu_common.dense_format(x)
        ctx.set_materialize_grads(False)
        return y, s

    @staticmethod
    def backward(ctx, grad_y, grad_s):  # type: ignore[override]
        x, residual, weight, bias, s = ctx.saved_tensors
        needs = ctx.needs_input_grad[:4]
        if grad_y is None and grad_s is None:
            return (None,) * 8
        if torch.is_grad_enabled() or not cpu_common.backward_inputs_ok(s, ctx.memory_format, grad_y, grad_s):
            norm = _reference(ctx.center, ctx.eps, ctx.n, ctx.memory_format)  # (double backward: differentiable)

            def fused(x, r, w, b):
                total = x + r
                return norm(total, w, b), total

            grads = cpu_common.reference_grads(fused, (x, residual, weight, bias), needs, (grad_y, grad_s))
            return (*grads, None, None, None, None)
        if grad_y is None:
            return grad_s if needs[0] else None, grad_s if needs[1] else None, *(None,) * 6
        grad_x, grad_w, grad_b = _backward(s, ctx.n, weight, bias, ctx.stats, ctx.center, ctx.memory_format, grad_y,
                                           grad_s)
        # x and residual get the same gradient, each as a view of it (as torch's own graph for
        # ``x.view(...) + residual.view(...)`` gives), so autograd need not copy it for a second leaf.
        return (
            grad_x.view(grad_x.shape) if needs[0] else None,
            grad_x.view(grad_x.shape) if needs[1] else None,
            grad_w if needs[2] else None,
            grad_b if needs[3] else None,
            None, None, None, None,
        )


def fast_rows(x: Tensor, n: int, weight, bias, eps: float, center: bool) -> Tensor:
    """The row norm of ``x`` (contiguous, or channels-last with ``n = C``), through autograd when needed."""
    stats = buffers.float32_array(2, x.numel() // n)
    if not cpu_common.needs_grad(x, weight, bias):
        return _row_forward(x, n, weight, bias, eps, center, stats)
    return cpu_common.apply(RowNormFunction, x, weight, bias, eps, center, n, stats)


def fast_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Fast path for :func:`normlab.core.functional.layer_norm` (``None``: declined)."""
    n = _row_length(x, normalized_shape)
    if n is None or not cpu_common.params_ok(n, weight, bias) or not _usable_eps(eps):
        return None
    return fast_rows(x, n, weight, bias, float(eps), True)


def fast_rms_norm(x, normalized_shape, weight=None, eps=None):
    """Fast path for :func:`normlab.core.functional.rms_norm` (``None``: declined)."""
    n = _row_length(x, normalized_shape)
    if n is None or not cpu_common.params_ok(n, weight) or not _usable_eps(eps):
        return None
    return fast_rows(x, n, weight, None, float(eps), False)


def _fused(x, residual, normalized_shape, weight, bias, eps, center):
    n = _row_length(x, normalized_shape)
    if (
        n is None
        or not cpu_common.plain_cpu_tensor(residual)
        or residual.dtype != x.dtype
        or residual.shape != x.shape
        or not residual.is_contiguous()
        or not cpu_common.params_ok(n, weight, bias)
        or not _usable_eps(eps)
    ):
        return None
    stats = buffers.float32_array(2, x.numel() // n)
    if not cpu_common.needs_grad(x, residual, weight, bias):
        return _add_forward(x, residual, n, weight, bias, float(eps), center, stats)
    return cpu_common.apply(AddRowNormFunction, x, residual, weight, bias, float(eps), center, n, stats)


def fast_add_layer_norm(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Fast path for :func:`normlab.core.functional.add_layer_norm`: ``(y, x + residual)`` (``None``: declined)."""
    return _fused(x, residual, normalized_shape, weight, bias, eps, True)


def fast_add_rms_norm(x, residual, normalized_shape, weight=None, eps=None):
    """Fast path for :func:`normlab.core.functional.add_rms_norm`: ``(y, x + residual)`` (``None``: declined)."""
    return _fused(x, residual, normalized_shape, weight, None, eps, False)
