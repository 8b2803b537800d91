"""The one tolerance table of the numerical tests. The core's layers (``tests/nn``), the CPU kernels and the Triton
kernels (``tests/kernels``) are all held to it against the float64 references of ``reference.py``.

The error is scaled, not taken value by value: ``max |actual - expected| / max(1, max |expected|)``. The largest
values of a tensor set its scale, so values near zero are not held to a relative bound that a low-precision dtype
cannot meet.
"""

from __future__ import annotations

import torch
from torch import Tensor

TOLERANCE = {
    torch.float32: (1e-5, 1e-4),
    torch.bfloat16: (2e-2, 4e-2),
    torch.float16: (3e-3, 8e-3),
}
"""Largest scaled error allowed per dtype: (forward outputs, gradients)."""

DTYPES = tuple(TOLERANCE)


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """``max |actual - expected| / max(1, max |expected|)``, in float64 on the CPU."""
    expected = expected.detach().double().cpu()
    if expected.numel() == 0:
        return 0.0
    scale = max(1.0, expected.abs().max().item())
    return (actual.detach().double().cpu() - expected).abs().max().item() / scale


def assert_matches(actual: Tensor, expected: Tensor, dtype: torch.dtype, part: str = "forward", what: str = "output"):
    """Assert ``actual`` is within the table's bound of ``expected`` for ``dtype``; ``part`` is ``"forward"`` or
    ``"gradient"``."""
    bound = TOLERANCE[dtype][0 if part == "forward" else 1]
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error = relative_error(actual, expected)
    assert error <= bound, f"{what}: scaled error {error:.2e} over the {dtype} {part} bound {bound:.0e}"
