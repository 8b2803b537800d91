"""The Triton kernels (LayerNorm, RMSNorm, fused residual add; forward and backward) against float64 references.

On a machine without a GPU they run on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``, set here
before the kernels are defined); with a GPU they run on it. Skipped when Triton is not installed.
"""

from __future__ import annotations

import os
import sys

import pytest
import reference as ref
import torch

_ON_GPU = torch.cuda.is_available()
if not _ON_GPU:
    if "normlab.kernels.triton_gpu" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the Triton kernels were already compiled without the interpreter", allow_module_level=True)
    # Kept for the whole session: Triton consults it again when a kernel launches. Only Triton reads it, and
    # nothing else on a CPU-only machine runs Triton code.
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton is not installed (pip install 'normlab[gpu]')")
from normlab.kernels import triton_glue, triton_gpu

DEVICE = "cuda" if _ON_GPU else "cpu"
TOLERANCE = {torch.float32: (1e-5, 1e-4), torch.bfloat16: (2e-2, 4e-2), torch.float16: (3e-3, 8e-3)}

OPS = {
    "layer_norm": (lambda x, r, w, b: triton_glue.fast_layer_norm(x, x.shape[-1:], w, b, 1e-5),
                   lambda x, r, w, b: ref.layer_norm(x, w, b, 1e-5)),
    "rms_norm": (lambda x, r, w, b: triton_glue.fast_rms_norm(x, x.shape[-1:], w, 1e-6),
                 lambda x, r, w, b: ref.rms_norm(x, w, 1e-6)),
    "add_layer_norm": (lambda x, r, w, b: triton_glue.fast_add_layer_norm(x, r, x.shape[-1:], w, b, 1e-5),
                       lambda x, r, w, b: (ref.layer_norm(x + r, w, b, 1e-5), x + r)),
    "add_rms_norm": (lambda x, r, w, b: triton_glue.fast_add_rms_norm(x, r, x.shape[-1:], w, 1e-6),
                     lambda x, r, w, b: (ref.rms_norm(x + r, w, 1e-6), x + r)),
}
SHAPES = {"odd": (5, 37), "one-row": (1, 16), "3-d": (2, 3, 24)}


def _error(actual, expected):
    expected = expected.double().cpu()
    return (actual.double().cpu() - expected).abs().max().item() / max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("op", OPS.values(), ids=OPS.keys())
def test_triton_kernel_matches_float64_reference(op, dtype, shape):
    fast, reference = op
    g = torch.Generator().manual_seed(0)
    n = shape[-1]
    values = [torch.randn(shape, generator=g) * 2 + 0.5, torch.randn(shape, generator=g),
              torch.rand(n, generator=g) + 0.5, torch.randn(n, generator=g)]
    leaves = [v.to(DEVICE, dtype).clone().requires_grad_() for v in values]
    out = fast(*leaves)
    assert out is not None, "the Triton path declined"
    outs = out if isinstance(out, tuple) else (out,)
    grads = [torch.randn(shape, generator=g).to(DEVICE, dtype) for _ in outs]
    torch.autograd.backward(outs, grads)
    leaves64 = [v.to(dtype).double().detach().requires_grad_() for v in values]
    expected = reference(*leaves64)
    expected = expected if isinstance(expected, tuple) else (expected,)
    torch.autograd.backward(expected, [g.double().cpu() for g in grads])
    forward_tol, grad_tol = TOLERANCE[dtype]
    assert all(_error(o, e) <= forward_tol for o, e in zip(outs, expected))
    for name, leaf, leaf64 in zip(("x", "residual", "weight", "bias"), leaves, leaves64):
        if leaf64.grad is None:  # an input this op does not use (the residual of a plain norm, RMSNorm's bias)
            assert leaf.grad is None, name
        else:
            assert leaf.grad is not None and _error(leaf.grad, leaf64.grad) <= grad_tol, name


DECLINED = {
    "row too long": lambda: triton_glue.fast_layer_norm(
        torch.randn(1, triton_gpu.MAX_ROW + 1, device=DEVICE), (triton_gpu.MAX_ROW + 1,)),
    "non-contiguous": lambda: triton_glue.fast_rms_norm(torch.randn(8, 4, device=DEVICE).t(), (8,), None, 1e-6),
    "float64": lambda: triton_glue.fast_layer_norm(torch.randn(2, 8, dtype=torch.float64, device=DEVICE), (8,)),
    "residual of another dtype": lambda: triton_glue.fast_add_rms_norm(
        torch.randn(2, 8, device=DEVICE), torch.randn(2, 8, device=DEVICE, dtype=torch.float16), (8,), None, 1e-6),
}


@pytest.mark.parametrize("call", DECLINED.values(), ids=DECLINED.keys())
def test_triton_path_declines_what_it_does_not_handle(call):
    assert call() is None
