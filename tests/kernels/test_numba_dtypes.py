"""The half-precision load/store helpers of the Numba kernels round exactly as torch's own conversions do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numba import njit

from normlab.kernels.numba_dtypes import as_kernel_array, load, store


@njit(cache=True)
def _round_trip(values, like, out_bits, back):
    """Store float32 ``values`` into the storage type of ``like``; load them back as float32."""
    kind = like[0]
    for i in range(values.shape[0]):
        out_bits[i] = store(values[i], kind)
        back[i] = load(out_bits[i])


def _tricky_float32() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(4096, generator=g) * torch.logspace(-6, 6, 4096)
    special = torch.tensor([0.0, -0.0, 1.0, -1.0, 65504.0, 70000.0, 1e-8, 6e-5, 3.0e38, float("inf"), -float("inf")])
    # exact ties between two bfloat16 values: the upper 16 bits plus exactly half an ulp
    ties = (torch.arange(0x3F80, 0x3F90, dtype=torch.int32) << 16 | 0x8000).view(torch.float32)
    return torch.cat([normal, special, ties])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_store_rounds_like_torch_and_load_is_exact(dtype):
    values = _tricky_float32()
    bits = as_kernel_array(torch.empty(values.numel(), dtype=dtype))
    back = np.empty(values.numel(), np.float32)
    _round_trip(values.numpy(), bits[:1].copy(), bits, back)
    expected = values.to(dtype)
    assert np.array_equal(bits, as_kernel_array(expected)), "stored bits differ from torch's rounding"
    torch.testing.assert_close(torch.from_numpy(back), expected.float(), rtol=0, atol=0)


def test_nan_stays_nan():
    bits = as_kernel_array(torch.empty(2, dtype=torch.bfloat16))
    back = np.empty(2, np.float32)
    _round_trip(np.array([np.nan, -np.nan], np.float32), bits[:1].copy(), bits, back)
    assert np.isnan(back).all()


def test_float32_arrays_pass_through():
    x = torch.randn(3)
    assert np.shares_memory(as_kernel_array(x), x.numpy())
