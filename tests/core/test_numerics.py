"""The numerics decided once in the core: fp32 accumulation for half types, accurate non-negative variance,
finite output for constant input."""

import pytest
import torch

from normlab.core import functional as F
from normlab.core.stats import moments


def test_variance_is_accurate_on_a_large_offset():
    g = torch.Generator().manual_seed(0)
    x64 = 1e4 + torch.randn(64, 4096, generator=g, dtype=torch.float64)
    x = x64.float()
    var = moments(x, dims=(1,)).var.double()
    # float64 reference of the float32 data (the data itself is rounded to float32)
    expected = x.double().var(dim=1, unbiased=False, keepdim=True)
    rel = ((var - expected).abs() / expected).max().item()
    assert rel <= 1e-3, f"relative variance error {rel:.2e} on data offset by 1e4"


def test_variance_is_never_negative():
    # values whose naive E[x^2] - E[x]^2 cancels to a negative number in float32
    x = torch.full((8, 1000), 3000.0) + torch.linspace(0, 1e-3, 1000)
    assert (moments(x, dims=(1,)).var >= 0).all()


@pytest.mark.parametrize("op", [
    lambda x: F.layer_norm(x, (x.shape[-1],)),
    lambda x: F.rms_norm(x, (x.shape[-1],)),
    lambda x: F.group_norm(x.unsqueeze(-1), 2),
    lambda x: F.batch_norm(x, None, None, training=True),
    lambda x: F.instance_norm(x.unsqueeze(-1)),
], ids=["layer", "rms", "group", "batch", "instance"])
@pytest.mark.parametrize("value", [0.0, 7.5])
def test_constant_input_gives_finite_output(op, value):
    y = op(torch.full((4, 6), value))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_float32(dtype):
    x = (torch.randn(4, 512) * 3 + 100).to(dtype)
    stats = moments(x, dims=(1,))
    assert stats.mean.dtype == torch.float32 and stats.var.dtype == torch.float32
    expected = x.double().var(dim=1, unbiased=False, keepdim=True)
    torch.testing.assert_close(stats.var.double(), expected, rtol=1e-5, atol=1e-5)
    assert F.layer_norm(x, (512,)).dtype == dtype


def test_integer_input_is_rejected_with_a_fix():
    with pytest.raises(TypeError, match=r"floating-point.*x\.float\(\)"):
        F.layer_norm(torch.ones(2, 3, dtype=torch.long), (3,))
