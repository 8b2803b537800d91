"""Makes the kernel case table (``kernel_cases``) importable from every test file here; skips the CPU kernel
tests when Numba is not installed."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

collect_ignore = []
try:
    import numba  # noqa: F401
except ImportError:  # the reference path is then the only path; nothing here to test
    collect_ignore = [
        "kernel_cases.py", "test_cpu_kernels.py", "test_fused_and_stats.py", "test_numba_dtypes.py",
        "test_numba_memory.py",
    ]


@pytest.fixture
def no_fast_paths():
    """Run the body with the core's reference path only."""
    from normlab.core.dispatch import reference_only

    with reference_only():
        yield
