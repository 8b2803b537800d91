"""Every CPU fast path against an independent float64 reference and against the core's reference path, forward
and backward, over float32 / bfloat16 / float16, odd and wide shapes, and both memory formats."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from kernel_cases import CASES, CL, make_inputs
from tolerances import DTYPES, TOLERANCE, relative_error

from normlab.core import functional as F
from normlab.core.dispatch import reference_only


def _forward_backward(fn, x, w, b, grad_seed=1):
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    b = None if b is None else b.detach().requires_grad_()
    y = fn(x, w, b)
    if y is None:
        return None
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(grad_seed)).to(y.dtype)
    y.backward(g)
    grads = [x.grad, w.grad] + ([] if b is None else [b.grad])
    return y, g, grads


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fast_path_matches_float64_reference(case, dtype):
    x, w, b = make_inputs(case, dtype)
    result = _forward_backward(case.fast, x, w, b)
    assert result is not None, f"the fast path declined {case.id} in {dtype}"
    _assert_matches_float64(case, dtype, x, w, b, *result)


def _assert_matches_float64(case, dtype, x, w, b, y, g, grads):
    assert y.dtype == dtype and y.shape == x.shape
    assert y.is_contiguous(memory_format=case.memory_format), "the output must keep the input's memory format"
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    b64 = None if b is None else b.double().requires_grad_()
    y64 = case.reference(x64, w64, b64)
    y64.backward(g.double())
    forward_tol, grad_tol = TOLERANCE[dtype]
    assert relative_error(y, y64) <= forward_tol
    expected = [x64.grad, w64.grad] + ([] if b is None else [b64.grad])
    for name, got, want in zip(("input", "weight", "bias"), grads, expected):
        assert got.dtype == dtype and got.shape == want.shape, name
        assert relative_error(got, want) <= grad_tol, f"{name} gradient"


SAVED_INPUT_HOOKS = {  # saved-tensor hooks that hand the saved input back in another layout or dtype
    "unpacked-contiguous": (torch.float32, lambda t: t.contiguous()),
    "unpacked-channels-last": (torch.float32, lambda t: t.contiguous(memory_format=CL) if t.dim() == 4 else t),
    "unpacked-as-float32": (torch.bfloat16, lambda t: t.float()),
}


@pytest.mark.parametrize("hook", SAVED_INPUT_HOOKS.values(), ids=SAVED_INPUT_HOOKS.keys())
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_saved_tensor_hooks_that_convert_the_input_still_give_the_right_gradients(case, hook):
    dtype, unpack = hook
    x, w, b = make_inputs(case, dtype)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, unpack):
        result = _forward_backward(case.fast, x, w, b)
    _assert_matches_float64(case, dtype, x, w, b, *result)


def _negative_bit(t):
    """``t``'s values in a tensor with the negative bit set (a lazy negation of ``-t``), as ``.conj().imag`` makes."""
    return torch._neg_view(-t)


NEGATIVE_BIT = {"input": (True, False), "weight": (False, True)}


@pytest.mark.parametrize("which", NEGATIVE_BIT.values(), ids=NEGATIVE_BIT.keys())
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_tensors_with_the_negative_bit_give_their_values(case, which):
    x, w, b = make_inputs(case, torch.float32)
    neg_x, neg_w = which
    result = _forward_backward(case.fast, _negative_bit(x) if neg_x else x, _negative_bit(w) if neg_w else w, b)
    if result is not None:  # the fast path may decline; what it returns must be right
        _assert_matches_float64(case, torch.float32, x, w, b, *result)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_gradients_with_the_negative_bit_or_without_memory_are_read_right(case):
    x, w, b = make_inputs(case, torch.float32)
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    y = case.fast(x, w, b)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=case.memory_format)
    grad_x, grad_w = torch.autograd.grad(y, (x, w), _negative_bit(g), retain_graph=True)
    with reference_only():
        expected = torch.autograd.grad(case.core(x, w, b), (x, w), g)
    for got, want in zip((grad_x, grad_w), expected):
        assert relative_error(got, want) <= TOLERANCE[torch.float32][1]
    zeros = torch._efficientzerotensor(y.shape, dtype=y.dtype)  # what autograd passes for an unused output
    for grad in torch.autograd.grad(y, (x, w), zeros):
        assert not grad.any()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_retained_graph_gives_the_same_gradients_on_a_second_backward(case):
    """A second backward through a retained graph reads the same saved state as the first."""
    x, w, b = make_inputs(case, torch.float32, seed=3)
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    y = case.fast(x, w, None if b is None else b.detach().requires_grad_())
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(4))
    first = torch.autograd.grad(y, (x, w), g, retain_graph=True)
    second = torch.autograd.grad(y, (x, w), g)
    for a, c in zip(first, second):
        assert torch.equal(a, c)


def _arrays_in(value):
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _arrays_in(item)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_autograd_context_keeps_no_view_of_the_input_outside_the_saved_tensors(case):
    """Anything on the context besides ``save_for_backward`` escapes saved-tensor hooks (checkpointing, offload)."""
    x, w, b = make_inputs(case, torch.float32, seed=5)
    x = x.detach().requires_grad_()
    y = case.fast(x, w.detach().requires_grad_(), None if b is None else b.detach().requires_grad_())
    x_memory = x.detach().numpy()
    node = y.grad_fn
    while node is not None and type(node).__name__ not in _KERNEL_NODES:
        node = node.next_functions[0][0] if node.next_functions else None
    assert node is not None, "no kernel node in the graph"
    for name, value in vars(node).items():
        for array in _arrays_in(value):
            assert not np.shares_memory(array, x_memory), f"ctx.{name} holds a view of the input"


_KERNEL_NODES = {"RowNormFunctionBackward", "GroupFunctionBackward", "BatchFunctionBackward",
                 "ColumnFunctionBackward", "AddRowNormFunctionBackward"}


def _made_by_a_kernel(y) -> bool:
    """Whether the autograd graph of ``y`` starts (within a few views) at one of the kernels' Functions."""
    frontier = [y.grad_fn]
    for _ in range(4):
        if any(node is not None and type(node).__name__ in _KERNEL_NODES for node in frontier):
            return True
        frontier = [nxt for node in frontier if node is not None for nxt, _ in node.next_functions]
    return False


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_core_op_dispatches_to_the_fast_path_and_agrees_with_the_fallback(case, dtype):
    if case.id.startswith(("layer_norm_2d", "spatial_rms")) and "try_fast_path" not in inspect.getsource(F.normalize):
        pytest.skip("normlab.core.functional.normalize has no fast-path hook yet (requested from the core's owner)")
    x, w, b = make_inputs(case, dtype, seed=2)
    fast_y, _, fast_grads = _forward_backward(case.fast, x, w, b)
    core_y, _, core_grads = _forward_backward(case.core, x, w, b)
    assert _made_by_a_kernel(core_y), "the core op did not dispatch to the fast path"
    forward_tol, grad_tol = TOLERANCE[dtype]
    assert relative_error(core_y, fast_y) <= forward_tol
    assert all(relative_error(c, a) <= grad_tol for a, c in zip(fast_grads, core_grads))
    with reference_only():
        ref_y, _, ref_grads = _forward_backward(case.core, x, w, b)
    assert not _made_by_a_kernel(ref_y)
    assert relative_error(fast_y, ref_y) <= forward_tol
    assert all(relative_error(a, r) <= grad_tol for a, r in zip(fast_grads, ref_grads))


@pytest.mark.parametrize("case", [c for c in CASES if "wide" not in c.id], ids=lambda c: c.id)
def test_double_backward_goes_through_the_reference_path(case):
    """Gradient penalties differentiate the gradient: the fast path's backward recomputes it differentiably."""
    x, w, b = make_inputs(case, torch.float32, seed=3)

    def penalty(fn, x, w, b):
        x = x.detach().requires_grad_()
        y = fn(x, w, b)
        (gx,) = torch.autograd.grad((y * y.detach().sin()).sum(), x, create_graph=True)
        (ggx,) = torch.autograd.grad(gx.square().sum(), x)
        return ggx

    fast = penalty(case.fast, x, w, b)
    expected = penalty(case.reference, x.double(), w.double(), None if b is None else b.double())
    assert relative_error(fast, expected) <= 1e-3


# Calls every fast path must decline (return None) so that the reference path runs.
_X = torch.randn(4, 6, 3, 5)
DECLINED = {
    "float64": lambda: _CASE_BY_ID["layer_norm-odd"].fast(torch.randn(5, 33, dtype=torch.float64), None, None),
    "non-contiguous rows": lambda: _CASE_BY_ID["layer_norm-odd"].fast(torch.randn(33, 5).t(), None, None),
    "shape mismatch": lambda: _rows().fast_rms_norm(torch.randn(5, 32), (33,), None, 1e-6),
    "weight size mismatch": lambda: _fast("layer_norm-odd")(torch.randn(5, 33), torch.ones(32), None),
    "empty input": lambda: _fast("layer_norm-odd")(torch.randn(0, 33), None, None),
    "meta device": lambda: _fast("group_norm")(torch.empty(3, 8, 5, 7, device="meta"), None, None),
    "neither layout": lambda: _fast("group_norm")(torch.randn(3, 5, 7, 8).permute(0, 3, 2, 1), None, None),
    "tensor eps": lambda: _normalize_with_tensor_eps(),
    "eval batch norm needing grad": lambda: _eval_bn_with_grad(),
    "normalize over other dims": lambda: _other_normalize(),
}


def _rows():
    from normlab.kernels import cpu_rows

    return cpu_rows


def _fast(case_id):
    return _CASE_BY_ID[case_id].fast


def _normalize_with_tensor_eps():
    from normlab.kernels.cpu_channels import fast_normalize

    return fast_normalize(_X, (2, 3), False, torch.tensor(1e-6), None, None, 1)


def _eval_bn_with_grad():
    from normlab.kernels.cpu_batch import fast_batch_norm

    x = _X.clone().requires_grad_()
    return fast_batch_norm(x, torch.zeros(6), torch.ones(6), None, None, False, 0.1, 1e-5)


def _other_normalize():
    from normlab.kernels.cpu_channels import fast_normalize

    return fast_normalize(_X, (1, 2, 3), True, 1e-5, None, None, None)


_CASE_BY_ID = {c.id: c for c in CASES}


@pytest.mark.parametrize("call", DECLINED.values(), ids=DECLINED.keys())
def test_fast_path_declines_what_it_does_not_handle(call):
    assert call() is None


def test_core_still_answers_declined_calls_through_the_reference_path():
    x = torch.randn(33, 5).t()  # non-contiguous: declined, reference path runs
    expected = torch.nn.functional.layer_norm(x, (33,))
    torch.testing.assert_close(F.layer_norm(x, (33,)), expected, rtol=1e-5, atol=1e-5)


def test_fast_path_is_skipped_while_torch_compile_traces(monkeypatch):
    from normlab.core.dispatch import try_fast_path

    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    x = torch.randn(5, 33, requires_grad=True)
    assert try_fast_path("layer_norm", x, (33,)) is None
    assert not _made_by_a_kernel(F.layer_norm(x, (33,)))
    x = torch.randn(3, 8, 5, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert not _made_by_a_kernel(F.group_norm(x, 2))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_mode_ad_gets_the_tangent_of_the_reference_path(case):
    """Dual tensors carry their tangent only through torch ops: under forward AD the fast path must stand aside."""
    import torch.autograd.forward_ad as fwAD

    x, w, b = make_inputs(case, torch.float32, seed=6)
    tangent = torch.randn(x.shape, generator=torch.Generator().manual_seed(7)).contiguous(
        memory_format=case.memory_format)
    with fwAD.dual_level():
        y, jvp = fwAD.unpack_dual(case.core(fwAD.make_dual(x, tangent), w, b))
    with reference_only(), fwAD.dual_level():
        y_ref, jvp_ref = fwAD.unpack_dual(case.core(fwAD.make_dual(x, tangent), w, b))
    assert jvp is not None, "the tangent was lost"
    torch.testing.assert_close(jvp, jvp_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)


def test_kernels_follow_torch_thread_count():
    import numba

    from normlab.kernels import cpu_common

    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert cpu_common.threads() == 1 and numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
