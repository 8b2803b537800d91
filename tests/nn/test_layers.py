"""Every layer of the table in ``cases.py`` against the float64 reference, torch.nn, gradcheck, half precision
and channels_last. One set of test functions; the table says what each layer is."""

from __future__ import annotations

import copy

import pytest
import torch
from layer_cases import CASES, build, make_input, mode_cases
from tolerances import assert_matches
from torch.func import functional_call

FP32 = torch.float32


def _forward_and_grads(layer, x, upstream):
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    params = dict(layer.named_parameters())
    grads = torch.autograd.grad((y * upstream.to(y.dtype)).sum(), [x, *params.values()])
    return y, dict(zip(["input", *params], grads))


def _reference_and_grads(case, layer, x, upstream):
    """The float64 reference on a float64 copy of the layer, taken before the layer's own forward."""
    layer64 = copy.deepcopy(layer).double()
    x64 = x.detach().double().requires_grad_(True)
    y = case.reference(x64, layer64)
    params = dict(layer64.named_parameters())
    grads = torch.autograd.grad((y * upstream.double()).sum(), [x64, *params.values()], allow_unused=True)
    return y, dict(zip(["input", *params], grads))


@pytest.mark.parametrize("case, mode", mode_cases())
def test_forward_and_gradients_match_float64_reference(case, mode):
    layer, x = build(case, mode), make_input(case)
    upstream = torch.randn(case.shape)
    expected, expected_grads = _reference_and_grads(case, layer, x, upstream)
    y, grads = _forward_and_grads(layer, x, upstream)
    assert_matches(y, expected, FP32)
    for name, grad in grads.items():
        want = expected_grads[name]
        want = torch.zeros_like(grad, dtype=torch.float64) if want is None else want
        assert_matches(grad, want, FP32, "gradient", f"gradient of {name}")


@pytest.mark.parametrize("case, mode", mode_cases(lambda c: c.torch_build is not None))
def test_matches_torch_nn_counterpart(case, mode):
    ours = build(case, mode)
    theirs = case.torch_build().train(mode == "train")
    theirs.load_state_dict(ours.state_dict())  # same keys, both ways
    x, upstream = make_input(case), torch.randn(case.shape)
    y_ours, g_ours = _forward_and_grads(ours, x, upstream)
    y_theirs, g_theirs = _forward_and_grads(theirs, x, upstream)
    assert_matches(y_ours, y_theirs, FP32)
    for name in g_ours:
        assert_matches(g_ours[name], g_theirs[name], FP32, "gradient", f"gradient of {name}")
    for (name, a), (their_name, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert name == their_name
        if name == "num_batches_tracked" and "counts_batches" in case.tags:
            continue
        assert a.dtype == b.dtype, f"buffer {name}: {a.dtype} != {b.dtype}"
        assert_matches(a, b, FP32, what=f"buffer {name} after the forward")


@pytest.mark.parametrize("case", [c for c in CASES if c.torch_build is not None], ids=lambda c: c.id)
def test_state_dict_loads_from_torch_and_back(case):
    theirs, ours = case.torch_build(), case.build()
    with torch.no_grad():
        for t in theirs.state_dict().values():
            if t.is_floating_point():
                t.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs.state_dict())
    back = case.torch_build()
    back.load_state_dict(ours.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


@pytest.mark.parametrize("case, mode", mode_cases())
def test_gradcheck_in_float64(case, mode):
    if mode == "train" and "stop_gradient" in case.tags:
        pytest.skip("the backward treats r and d as constants by design (Ioffe 2017, sec. 3), so it is not the "
                    "derivative of the forward; test_forward_and_gradients_match_float64_reference checks it")
    layer = build(case, mode, dtype=torch.float64)
    x = make_input(case, torch.float64).requires_grad_(True)
    params = {k: v.detach().requires_grad_(True) for k, v in layer.named_parameters()}
    names = list(params)

    def f(x, *values):
        return functional_call(layer, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params.values()), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case, mode", mode_cases())
def test_half_precision_accumulates_in_fp32_and_returns_input_dtype(case, mode, dtype):
    """Forward and gradients in half precision against the float64 reference of the same (rounded) input and
    parameters."""
    layer = build(case, mode, dtype=dtype)
    x = make_input(case, dtype)
    upstream = torch.randn(case.shape).to(dtype)
    expected, expected_grads = _reference_and_grads(case, layer, x, upstream)
    y, grads = _forward_and_grads(layer, x, upstream)
    assert y.dtype == dtype
    assert_matches(y, expected, dtype)
    for name, grad in grads.items():
        assert grad.dtype == dtype, f"gradient of {name} is {grad.dtype}"
        want = expected_grads[name]
        want = torch.zeros_like(grad, dtype=torch.float64) if want is None else want
        assert_matches(grad, want, dtype, "gradient", f"gradient of {name}")


@pytest.mark.parametrize("case, mode", mode_cases(lambda c: len(c.shape) in (4, 5)))
def test_channels_last_in_channels_last_out(case, mode):
    fmt = torch.channels_last if len(case.shape) == 4 else torch.channels_last_3d
    layer_a, layer_b = build(case, mode), build(case, mode)
    x = make_input(case)
    y = layer_a(x.contiguous(memory_format=fmt))
    assert y.is_contiguous(memory_format=fmt), "the output lost the channels_last memory format"
    assert_matches(y, layer_b(x), FP32)
