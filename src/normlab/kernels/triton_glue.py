"""GPU fast paths for the row norms on the Triton kernels of :mod:`normlab.kernels.triton_gpu`: the autograd
glue and when to decline.

A call is taken when the input is a contiguous CUDA tensor of float32, bfloat16 or float16 with rows of at most
:data:`~normlab.kernels.triton_gpu.MAX_ROW` values, parameters on the same device, and nothing traces the call
(torch.compile has its own Triton code generation). Under ``TRITON_INTERPRET=1`` CPU tensors are taken too, so
the kernels can be tested without a GPU. Double backward goes through the core's reference path, as on the CPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from normlab.core import functional as core
from normlab.core.dispatch import reference_only
from normlab.kernels import triton_gpu as tk

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _row_length(x: Tensor, normalized_shape) -> int | None:
    ok_device = x.is_cuda or (tk.INTERPRETED and x.device.type == "cpu")
    if not (isinstance(x, Tensor) and ok_device and x.dtype in _DTYPES and x.is_contiguous() and x.numel() > 0):
        return None
    if torch.compiler.is_compiling():
        return None
    shape = tuple(normalized_shape)
    if not shape or tuple(x.shape[x.dim() - len(shape):]) != shape:
        return None
    n = math.prod(shape)
    return n if n <= tk.MAX_ROW else None


def _params_ok(x: Tensor, n: int, *params) -> bool:
    return all(p is None or (p.device == x.device and p.numel() == n and p.dtype in _DTYPES) for p in params)


def _vector(p: Tensor | None, like: Tensor) -> Tensor:
    return like if p is None else p.detach().reshape(-1).contiguous()


def _programs(rows: int, device: torch.device) -> int:
    if device.type == "cuda":
        return min(rows, 4 * torch.cuda.get_device_properties(device).multi_processor_count)
    return min(rows, 4)


def _forward(x2d, residual2d, weight, bias, eps, center):
    rows, n = x2d.shape
    y = torch.empty_like(x2d)
    s = torch.empty_like(x2d) if residual2d is not None else y
    mean = torch.empty(rows, device=x2d.device, dtype=torch.float32)
    rstd = torch.empty(rows, device=x2d.device, dtype=torch.float32)
    block = tk.block_for(n)
    tk.norm_forward_kernel[(rows,)](
        x2d, residual2d if residual2d is not None else x2d, y, s, _vector(weight, x2d), _vector(bias, x2d),
        mean, rstd, n, eps, CENTER=center, HAS_RES=residual2d is not None, HAS_W=weight is not None,
        HAS_B=bias is not None, BLOCK=block, num_warps=tk.warps_for(block),
    )
    return y, (s if residual2d is not None else None), mean, rstd


def _backward(x2d, weight, bias, mean, rstd, center, grad_y, grad_s):
    rows, n = x2d.shape
    programs = _programs(rows, x2d.device)
    per_program = -(-rows // programs)
    grad_x = torch.empty_like(x2d)
    partial_w = torch.empty(programs, n, device=x2d.device, dtype=torch.float32)
    partial_b = torch.empty(programs, n, device=x2d.device, dtype=torch.float32)
    block = tk.block_for(n)
    tk.norm_backward_kernel[(programs,)](
        x2d, grad_y, grad_s if grad_s is not None else grad_y, _vector(weight, x2d), mean, rstd, grad_x,
        partial_w, partial_b, rows, n, per_program, CENTER=center, HAS_GS=grad_s is not None,
        HAS_W=weight is not None, BLOCK=block, num_warps=tk.warps_for(block),
    )
    grad_w = None if weight is None else partial_w.sum(0).reshape(weight.shape).to(weight.dtype)
    grad_b = None if bias is None else partial_b.sum(0).reshape(bias.shape).to(bias.dtype)
    return grad_x, grad_w, grad_b


def _reference(center, eps, n):
    def norm(x2d, weight, bias):
        w = None if weight is None else weight.reshape(n)
        if center:
            return core.layer_norm(x2d, (n,), w, None if bias is None else bias.reshape(n), eps)
        return core.rms_norm(x2d, (n,), w, eps)

    return norm


def _double_backward(reference, inputs, needs, grads):
    with reference_only(), torch.enable_grad():
        outputs = reference(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None]
    wanted = [t for t, need in zip(inputs, needs) if need and t is not None]
    found = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], create_graph=True,
                                     allow_unused=True))
    return tuple(next(found) if need and t is not None else None for t, need in zip(inputs, needs))


class TritonAddRowNorm(torch.autograd.Function):
    """LayerNorm / RMSNorm of each row, with an optional fused residual add (then returns ``(y, s)``)."""

    @staticmethod
    def forward(ctx, x2d, residual2d, weight, bias, eps, center):  # type: ignore[override]
        y, s, mean, rstd = _forward(x2d, residual2d, weight, bias, eps, center)
        ctx.save_for_backward(x2d, residual2d, weight, bias, s if s is not None else x2d, mean, rstd)
        ctx.eps, ctx.center, ctx.fused = eps, center, residual2d is not None
        ctx.set_materialize_grads(False)
        return (y, s) if ctx.fused else y

    @staticmethod
    def backward(ctx, grad_y, grad_s=None):  # type: ignore[override]
        x2d, residual2d, weight, bias, source, mean, rstd = ctx.saved_tensors
        needs = ctx.needs_input_grad[:4]
        if grad_y is None and grad_s is None:
            return (None,) * 6
        if torch.is_grad_enabled():  # double backward: through the reference path
            norm = _reference(ctx.center, ctx.eps, x2d.shape[1])

            def fused(x, r, w, b):
                if r is None:
                    return norm(x, w, b)
                total = x + r
                return norm(total, w, b), total

            return (*_double_backward(fused, (x2d, residual2d, weight, bias), needs, (grad_y, grad_s)), None, None)
        if grad_y is None:
            return grad_s if needs[0] else None, grad_s if needs[1] else None, None, None, None, None
        grad_x, grad_w, grad_b = _backward(
            source, weight, bias, mean, rstd, ctx.center, grad_y.contiguous(),
            None if grad_s is None else grad_s.contiguous(),
        )
        return (
            grad_x if needs[0] else None,
            grad_x if ctx.fused and needs[1] else None,
            grad_w if needs[2] else None,
            grad_b if needs[3] else None,
            None,
            None,
        )


def _usable_eps(eps) -> bool:
    return isinstance(eps, (int, float)) and not isinstance(eps, bool)


def fast_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Triton fast path for :func:`normlab.core.functional.layer_norm` (``None``: declined)."""
    n = _row_length(x, normalized_shape)
    if n is None or not _params_ok(x, n, weight, bias) or not _usable_eps(eps):
        return None
    return TritonAddRowNorm.apply(x.view(-1, n), None, weight, bias, float(eps), True).view(x.shape)


def fast_rms_norm(x, normalized_shape, weight=None, eps=None):
    """Triton fast path for :func:`normlab.core.functional.rms_norm` (``None``: declined)."""
    n = _row_length(x, normalized_shape)
    if n is None or not _params_ok(x, n, weight) or not _usable_eps(eps):
        return None
    return TritonAddRowNorm.apply(x.view(-1, n), None, weight, None, float(eps), False).view(x.shape)


def _fused(x, residual, normalized_shape, weight, bias, eps, center):
    n = _row_length(x, normalized_shape)
    if n is None or not _usable_eps(eps) or not _params_ok(x, n, weight, bias):
        return None
    if not (isinstance(residual, Tensor) and residual.device == x.device and residual.dtype == x.dtype
            and residual.shape == x.shape and residual.is_contiguous()):
        return None
    y, s = TritonAddRowNorm.apply(x.view(-1, n), residual.view(-1, n), weight, bias, float(eps), center)
    return y.view(x.shape), s.view(x.shape)


def fast_add_layer_norm(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Triton fast path for :func:`normlab.core.functional.add_layer_norm` (``None``: declined)."""
    return _fused(x, residual, normalized_shape, weight, bias, eps, True)


def fast_add_rms_norm(x, residual, normalized_shape, weight=None, eps=None):
    """Triton fast path for :func:`normlab.core.functional.add_rms_norm` (``None``: declined)."""
    return _fused(x, residual, normalized_shape, weight, None, eps, False)


FAST_PATHS = {
    "layer_norm": fast_layer_norm,
    "rms_norm": fast_rms_norm,
    "add_layer_norm": fast_add_layer_norm,
    "add_rms_norm": fast_add_rms_norm,
}
