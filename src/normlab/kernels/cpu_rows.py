"""CPU fast paths for the row norms (``layer_norm``, ``rms_norm``, ``add_layer_norm``, ``add_rms_norm``): the
autograd glue around :mod:`normlab.kernels.numba_rows`.

Each ``fast_*`` function takes the core op's arguments and returns its result, or ``None`` to decline (see
:mod:`normlab.kernels.cpu_common`); the input must be contiguous so that its trailing ``normalized_shape``
dims form rows of a 2-D view. The forward saves the per-row mean and :math:`1/\\sigma` for the backward, which
returns the gradients for the input, the weight and the bias (and the residual, for the fused ops).
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
from normlab.kernels.numba_dtypes import as_kernel_array as arr


def _row_length(x: Tensor, normalized_shape: Sequence[int]) -> int | None:
    """``n`` = prod(normalized_shape) when ``x`` is a contiguous input the row kernels take, else ``None``."""
    if not cpu_common.plain_cpu_tensor(x) or cpu_common.tracing() or x.numel() == 0 or not x.is_contiguous():
        return None
    shape = tuple(normalized_shape)
    if not shape or x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape):]) != shape:
        return None
    return math.prod(shape)


def _usable_eps(eps: object) -> bool:
    return isinstance(eps, (int, float)) and not isinstance(eps, bool)


def row_forward(x2d: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, center: bool):
    rows, n = x2d.shape
    chunks = min(cpu_common.threads(x2d.numel()), rows)
    y = buffers.empty((rows, n), x2d.dtype)
    mean, rstd = torch.empty(rows), torch.empty(rows)
    numba_rows.norm_rows_forward(
        arr(x2d), cpu_common.param_array(weight, n, 1.0), cpu_common.param_array(bias, n, 0.0), np.float32(eps),
        center, chunks, arr(y), mean.numpy(), rstd.numpy(),
    )
    return y, mean, rstd


def _add_forward(x2d, residual2d, weight, bias, eps, center):
    rows, n = x2d.shape
    chunks = min(cpu_common.threads(x2d.numel()), rows)
    y, s = buffers.empty((rows, n), x2d.dtype), buffers.empty((rows, n), x2d.dtype)
    mean, rstd = torch.empty(rows), torch.empty(rows)
    numba_rows.add_norm_rows_forward(
        arr(x2d), arr(residual2d), cpu_common.param_array(weight, n, 1.0), cpu_common.param_array(bias, n, 0.0),
        np.float32(eps), center, chunks, arr(y), arr(s), mean.numpy(), rstd.numpy(),
    )
    return y, s, mean, rstd


def _backward(x2d, weight, bias, mean, rstd, center, grad_y, grad_s):
    rows, n = x2d.shape
    chunks = min(cpu_common.threads(x2d.numel()), rows)
    grad_x = buffers.empty((rows, n), x2d.dtype)
    partial_w, partial_b = torch.empty(chunks, n), torch.empty(chunks, n)
    has_grad_s = grad_s is not None
    numba_rows.norm_rows_backward(
        arr(x2d), arr(grad_y), arr(grad_s if has_grad_s else grad_y), cpu_common.param_array(weight, n, 1.0),
        mean.numpy(), rstd.numpy(), center, has_grad_s, chunks, arr(grad_x), partial_w.numpy(), partial_b.numpy(),
    )
    return grad_x, cpu_common.reduce_partials(partial_w, weight), cpu_common.reduce_partials(partial_b, bias)


def _reference(center: bool, eps: float, n: int):
    def norm(x2d, weight, bias):
        w = None if weight is None else weight.reshape(n)
        if center:
            return core.layer_norm(x2d, (n,), w, None if bias is None else bias.reshape(n), eps)
        return core.rms_norm(x2d, (n,), w, eps)

    return norm


class RowNormFunction(torch.autograd.Function):
    """LayerNorm (``center=True``) or RMSNorm of each row of a contiguous 2-D input, on the Numba kernels."""

    @staticmethod
    def forward(ctx: FunctionCtx, x2d, weight, bias, eps, center):  # type: ignore[override]
        y, mean, rstd = row_forward(x2d, weight, bias, eps, center)
        ctx.save_for_backward(x2d, weight, bias, mean, rstd)
        ctx.eps, ctx.center = eps, center
        return y

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        x2d, weight, bias, mean, rstd = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # double backward: go through the differentiable reference path
            grads = cpu_common.differentiable_grads(
                _reference(ctx.center, ctx.eps, x2d.shape[1]), (x2d, weight, bias), needs, (grad_y,)
            )
        else:
            grads = _backward(x2d, weight, bias, mean, rstd, ctx.center, grad_y.contiguous(), None)
        return (*(g if need else None for g, need in zip(grads, needs)), None, None)


class AddRowNormFunction(torch.autograd.Function):
    """``s = x + residual`` and the LayerNorm / RMSNorm of ``s``'s rows, in one pass; returns ``(y, s)``."""

    @staticmethod
    def forward(ctx: FunctionCtx, x2d, residual2d, weight, bias, eps, center):  # type: ignore[override]
        y, s, mean, rstd = _add_forward(x2d, residual2d, weight, bias, eps, center)
        ctx.save_for_backward(x2d, residual2d, weight, bias, s, mean, rstd)
        ctx.eps, ctx.center = eps, center
        ctx.set_materialize_grads(False)
        return y, s

    @staticmethod
    def backward(ctx, grad_y, grad_s):  # type: ignore[override]
        x2d, residual2d, weight, bias, s, mean, rstd = ctx.saved_tensors
        needs = ctx.needs_input_grad[:4]
        if grad_y is None and grad_s is None:
            return None, None, None, None, None, None
        if torch.is_grad_enabled():  # double backward: through the reference path
            norm = _reference(ctx.center, ctx.eps, x2d.shape[1])

            def fused(x, r, w, b):
                total = x + r
                return norm(total, w, b), total

            grads = cpu_common.differentiable_grads(fused, (x2d, residual2d, weight, bias), needs, (grad_y, grad_s))
            return (*grads, None, None)
        if grad_y is None:
            return grad_s if needs[0] else None, grad_s if needs[1] else None, None, None, None, None
        grad_s = None if grad_s is None else grad_s.contiguous()
        grad_x, grad_w, grad_b = _backward(s, weight, bias, mean, rstd, ctx.center, grad_y.contiguous(), grad_s)
        return (
            grad_x if needs[0] else None,
            grad_x if needs[1] else None,
            grad_w if needs[2] else None,
            grad_b if needs[3] else None,
            None,
            None,
        )


def fast_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Fast path for :func:`normlab.core.functional.layer_norm` (``None``: declined)."""
    n = _row_length(x, normalized_shape)
    if n is None or not cpu_common.params_ok(n, weight, bias) or not _usable_eps(eps):
        return None
    if not cpu_common.needs_grad(x, weight, bias):
        return row_forward(x.view(-1, n), weight, bias, float(eps), True)[0].view(x.shape)
    return RowNormFunction.apply(x.view(-1, n), weight, bias, float(eps), True).view(x.shape)


def fast_rms_norm(x, normalized_shape, weight=None, eps=None):
    """Fast path for :func:`normlab.core.functional.rms_norm` (``None``: declined)."""
    n = _row_length(x, normalized_shape)
    if n is None or not cpu_common.params_ok(n, weight) or not _usable_eps(eps):
        return None
    if not cpu_common.needs_grad(x, weight):
        return row_forward(x.view(-1, n), weight, None, float(eps), False)[0].view(x.shape)
    return RowNormFunction.apply(x.view(-1, n), weight, None, float(eps), False).view(x.shape)


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
    x2d, r2d = x.view(-1, n), residual.view(-1, n)
    if not cpu_common.needs_grad(x, residual, weight, bias):
        y, s = _add_forward(x2d, r2d, weight, bias, float(eps), center)[:2]
    else:
        y, s = AddRowNormFunction.apply(x2d, r2d, weight, bias, float(eps), center)
    return y.view(x.shape), s.view(x.shape)


def fast_add_layer_norm(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Fast path for :func:`normlab.core.functional.add_layer_norm`: ``(y, x + residual)`` (``None``: declined)."""
    return _fused(x, residual, normalized_shape, weight, bias, eps, True)


def fast_add_rms_norm(x, residual, normalized_shape, weight=None, eps=None):
    """Fast path for :func:`normlab.core.functional.add_rms_norm`: ``(y, x + residual)`` (``None``: declined)."""
    return _fused(x, residual, normalized_shape, weight, None, eps, False)
