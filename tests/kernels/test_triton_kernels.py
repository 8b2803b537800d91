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
from tolerances import TOLERANCE, relative_error

_ON_GPU = torch.cuda.is_available()
if not _ON_GPU:
    if "normlab.kernels.triton_gpu" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the Triton kernels were already compiled without the interpreter", allow_module_level=True)
    # Usually set already, by the repository's conftest.py (Triton reads it when it is first imported); kept for
    # the whole session, since Triton consults it again when a kernel launches.
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton is not installed (pip install 'normlab[gpu]')")
import normlab.nn as nl
from normlab.core import dispatch
from normlab.core import functional as F
from normlab.kernels import triton_glue, triton_gpu

DEVICE = "cuda" if _ON_GPU else "cpu"

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
    assert all(relative_error(o, e) <= forward_tol for o, e in zip(outs, expected))
    for name, leaf, leaf64 in zip(("x", "residual", "weight", "bias"), leaves, leaves64):
        if leaf64.grad is None:  # an input this op does not use (the residual of a plain norm, RMSNorm's bias)
            assert leaf.grad is None, name
        else:
            assert leaf.grad is not None and relative_error(leaf.grad, leaf64.grad) <= grad_tol, name


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


@pytest.fixture
def triton_first(monkeypatch):
    """The Triton fast paths registered ahead of every other, as a CUDA machine registers them (here, where there
    is no GPU, they take CPU tensors through the interpreter); returns the ops each call reached, in order."""
    import normlab.kernels  # noqa: F401  (registers the kernels that can run here, into the registry patched below)

    reached: list[str] = []

    def counted(op, kernel):
        def wrapper(*args, **kwargs):
            result = kernel(*args, **kwargs)
            if result is not None:
                reached.append(op)
            return result

        return wrapper

    registry = {op: list(kernels) for op, kernels in dispatch._registry.items()}
    for op, kernel in triton_glue.FAST_PATHS.items():
        registry[op] = [counted(op, kernel), *registry.get(op, ())]
    monkeypatch.setattr(dispatch, "_registry", registry)
    return reached


LAYER_CALLS = {  # op -> the public call that must reach it: (x, residual, weight, bias) -> output(s)
    "layer_norm": lambda x, r, w, b: F.layer_norm(x, (24,), w, b),
    "LayerNorm": lambda x, r, w, b: _with_params(nl.LayerNorm(24), w, b)(x),
    "RMSNorm": lambda x, r, w, b: _with_params(nl.RMSNorm(24, eps=1e-6), w, None)(x),
    "add_layer_norm": lambda x, r, w, b: F.add_layer_norm(x, r, (24,), w, b),
    "add_rms_norm": lambda x, r, w, b: F.add_rms_norm(x, r, (24,), w, eps=1e-6),
}
REACHES = {"layer_norm": "layer_norm", "LayerNorm": "layer_norm", "RMSNorm": "rms_norm",
           "add_layer_norm": "add_layer_norm", "add_rms_norm": "add_rms_norm"}


def _with_params(layer, weight, bias):
    """``layer`` with ``weight`` (and ``bias``) as its parameters, so that their gradients land on those leaves."""
    layer.weight = weight
    if bias is not None:
        layer.bias = bias
    return layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("call", LAYER_CALLS, ids=str)
def test_layers_reach_the_triton_path_and_agree_with_the_fallback(triton_first, call, dtype):
    g = torch.Generator().manual_seed(1)
    values = [torch.randn(3, 5, 24, generator=g), torch.randn(3, 5, 24, generator=g),
              torch.rand(24, generator=g) + 0.5, torch.randn(24, generator=g)]
    upstream = torch.randn(3, 5, 24, generator=g).to(DEVICE, dtype)

    def run():
        leaves = [torch.nn.Parameter(v.to(DEVICE, dtype)) for v in values]
        out = LAYER_CALLS[call](*leaves)
        outs = out if isinstance(out, tuple) else (out,)
        torch.autograd.backward(outs, [upstream] * len(outs))
        return outs, [leaf.grad for leaf in leaves]

    outs, grads = run()
    assert triton_first == [REACHES[call]], f"the call reached {triton_first}, not the Triton {REACHES[call]}"
    with dispatch.reference_only():
        fallback_outs, fallback_grads = run()
    forward_tol, grad_tol = TOLERANCE[dtype]
    assert all(relative_error(o, f) <= forward_tol for o, f in zip(outs, fallback_outs))
    for name, grad, fallback in zip(("x", "residual", "weight", "bias"), grads, fallback_grads):
        assert (grad is None) == (fallback is None), name
        if grad is not None:
            assert relative_error(grad, fallback) <= grad_tol, f"{name} gradient"
