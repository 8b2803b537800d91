"""Which OpenMP runtime the Numba kernels run on, and what starting a parallel region costs.

The kernels' ``prange`` loops run on Numba's ``omp`` threading layer, which calls libgomp's ``GOMP_parallel``.
torch's wheel ships its own libgomp under the same soname (``libgomp.so.1``) and loads it when torch is imported,
which normlab always does first; the dynamic linker then binds Numba's calls to torch's copy, so the kernels run on
torch's thread team and follow the wait policy torch's libgomp read at import (``OMP_WAIT_POLICY``,
``GOMP_SPINCOUNT``). This script shows it:

* the library that ``GOMP_parallel`` resolves to in this process;
* the process's thread count before and after the first Numba parallel region (a shared team adds none, a
  runtime of its own adds its workers);
* the median cost of an empty Numba parallel region, and of a small torch op that runs in parallel, right after
  the calling thread was busy for 0.5 ms (as it is between two kernels of a forward+backward), with the
  ``OMP_WAIT_POLICY`` this process started with. With ``PASSIVE`` the workers sleep between regions and each
  region waits for one to wake; without it they spin for a while and the next region starts at once.

Run::

    python benchmarks/parallel_region.py
    OMP_WAIT_POLICY=PASSIVE python benchmarks/parallel_region.py
"""

from __future__ import annotations

import ctypes
import os
import statistics
import time

import numpy as np
import torch
from numba import njit, prange

import normlab.kernels.cpu_common  # noqa: F401 - starts Numba's threading layer the way normlab does


class _DlInfo(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p), ("sname", ctypes.c_char_p),
                ("saddr", ctypes.c_void_p)]


def library_of(symbol: str) -> str:
    """The file of the shared library that ``symbol`` resolves to in this process's global scope."""
    process = ctypes.CDLL(None)
    address = ctypes.cast(getattr(process, symbol), ctypes.c_void_p)
    info = _DlInfo()
    if not process.dladdr(address, ctypes.byref(info)):
        return "unknown"
    return info.fname.decode()


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


@njit(parallel=True)
def _empty_region(out):
    for i in prange(out.shape[0]):
        out[i] += 1.0


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def region_cost_us(call, calls: int = 200, busy_s: float = 5e-4) -> float:
    """Median µs of ``call()`` right after the calling thread has been busy for ``busy_s``."""
    times = []
    for _ in range(calls):
        _busy(busy_s)
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e6


def main() -> None:
    threads = torch.get_num_threads()
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, torch threads {threads}")
    print(f"GOMP_parallel resolves to: {library_of('GOMP_parallel')}")
    torch.ones(1 << 20).add_(1)  # torch's team exists
    out = np.zeros(threads)
    _empty_region.compile("(float64[::1],)")  # (compiling starts a thread of Numba's own)
    before = thread_count()
    _empty_region(out)
    print(f"threads before / after the first Numba parallel region: {before} / {thread_count()}")
    small = torch.ones(1 << 17)
    print(f"empty Numba parallel region: {region_cost_us(lambda: _empty_region(out)):.1f} us")
    print(f"torch add_ on {small.numel()} floats (parallel): {region_cost_us(lambda: small.add_(1)):.1f} us")
    torch.set_num_threads(1)
    print(f"the same add_ on one thread: {region_cost_us(lambda: small.add_(1)):.1f} us")


if __name__ == "__main__":
    main()
