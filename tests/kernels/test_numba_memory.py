"""Kernel entries reach tensor memory by address: the arrays built there are the tensors' values, in place, and
the parameters arrive as contiguous float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numba import njit

from normlab.kernels.cpu_common import param_tensor
from normlab.kernels.numba_dtypes import load, store
from normlab.kernels.numba_memory import array_at
from normlab.kernels.storage import KERNEL_SCALAR


@njit(cache=True)
def _double_in_place(address, rows, cols, like, seen):
    """Read the ``(rows, cols)`` array at ``address`` into ``seen`` (float32), then double it in place."""
    a = array_at(address, (rows, cols), like)
    for i in range(rows):
        for j in range(cols):
            seen[i, j] = load(a[i, j])
            a[i, j] = store(load(a[i, j]) * np.float32(2.0), like)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_array_at_reads_and_writes_the_tensor_memory(dtype):
    t = torch.arange(-6, 6, dtype=torch.float32).reshape(3, 4).to(dtype) / 4  # exact in every dtype
    expected = t.float().clone()
    seen = np.zeros((3, 4), np.float32)
    _double_in_place(t.data_ptr(), 3, 4, KERNEL_SCALAR[dtype], seen)
    np.testing.assert_array_equal(seen, expected.numpy())
    torch.testing.assert_close(t.float(), expected * 2, rtol=0, atol=0)


def test_array_at_starts_at_a_view_offset():
    base = torch.arange(20, dtype=torch.float32)
    window = base[8:14]  # data_ptr includes the storage offset
    seen = np.zeros((2, 3), np.float32)
    _double_in_place(window.data_ptr(), 2, 3, KERNEL_SCALAR[torch.float32], seen)
    assert seen.ravel().tolist() == list(range(8, 14))
    assert base[:8].tolist() == list(range(8)) and base[14:].tolist() == list(range(14, 20))


PARAMS = {
    "float32": (lambda: torch.nn.Parameter(torch.tensor([1.5, -2.0, 3.0])), True),
    "bfloat16": (lambda: torch.tensor([1.5, -2.0, 3.0], dtype=torch.bfloat16), False),
    "strided": (lambda: torch.tensor([1.5, 0.0, -2.0, 0.0, 3.0, 0.0])[::2], False),
    "column": (lambda: torch.tensor([[1.5], [-2.0], [3.0]]), True),
}


@pytest.mark.parametrize("make, same", PARAMS.values(), ids=PARAMS.keys())
def test_param_tensor_is_contiguous_float32_and_copies_only_when_needed(make, same):
    p = make()
    out = param_tensor(p, 3, 1.0)
    assert out.dtype == torch.float32 and out.is_contiguous() and out.numel() == 3
    assert out.reshape(-1).tolist() == [1.5, -2.0, 3.0]
    assert (out.data_ptr() == p.data_ptr()) == same


def test_param_tensor_of_none_is_the_fill_value():
    assert param_tensor(None, 4, 1.0).tolist() == [1.0] * 4
    assert param_tensor(None, 2, 0.0).tolist() == [0.0, 0.0]
