"""Doctest collection here skips the modules whose compiler is not installed (Numba: CPU kernels; Triton: GPU
kernels), as the package itself does at run time."""

from importlib.util import find_spec

_NEEDS = {
    "numba": ("numba_dtypes.py", "numba_memory.py", "numba_rows.py", "numba_groups.py", "numba_batch.py",
              "numba_columns.py", "cpu_common.py", "cpu_rows.py", "cpu_channels.py", "cpu_batch.py"),
    "triton": ("triton_gpu.py", "triton_glue.py"),
}
collect_ignore = [name for module, names in _NEEDS.items() if find_spec(module) is None for name in names]
