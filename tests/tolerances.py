"""The one tolerance table of the numerical tests. The core's layers (``tests/nn``), the CPU kernels and the Triton
kernels (``tests/kernels``) are all held to it against the float64 references of ``reference.py``.

The error is taken value by value, relative with a floor of 1: ``max_i |actual_i - expected_i| / max(1,
|expected_i|)``. A value of magnitude 1 or more is held to a relative bound, a smaller one to the same bound as an
absolute error (a value near zero cannot meet a relative bound in low precision). This is at least as strict as
``torch.testing.assert_close`` with ``atol = rtol =`` the bound.
"""

from __future__ import annotations

import torch
from torch import Tensor

TOLERANCE = {
    torch.float32: (1e-5, 1e-4),
    torch.bfloat16: (2e-2, 4e-2),
    torch.float16: (3e-3, 8e-3),
}
"""Largest error allowed per dtype, as defined above: (forward outputs, gradients)."""

DTYPES = tuple(TOLERANCE)


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """``max_i |actual_i - expected_i| / max(1, |expected_i|)``, in float64 on the CPU (0 for empty tensors)."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    expected = expected.detach().double().cpu()
    if expected.numel() == 0:
        return 0.0
    return ((actual.detach().double().cpu() - expected).abs() / expected.abs().clamp(min=1.0)).max().item()


def assert_matches(actual: Tensor, expected: Tensor, dtype: torch.dtype, part: str = "forward", what: str = "output"):
    """Assert ``actual`` is within the table's bound of ``expected`` for ``dtype``; ``part`` is ``"forward"`` or
    ``"gradient"``."""
    parts = ("forward", "gradient")
    if part not in parts:
        raise ValueError(f"part must be one of {parts}, got {part!r}")
    bound = TOLERANCE[dtype][parts.index(part)]
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error = relative_error(actual, expected)
    assert error <= bound, f"{what}: scaled error {error:.2e} over the {dtype} {part} bound {bound:.0e}"
