"""Timing, copy bandwidth and peak memory, measured the same way for every implementation.

- **Time**: each implementation is warmed up, then timed for many rounds; in each round every implementation
  runs once, so a burst of load from other processes lands on all of them alike. The order changes from round
  to round so that each implementation directly follows every other one equally often (:func:`balanced_orders`):
  what the call before leaves in the caches — the input it just read, the memory it just freed — is worth up
  to 20 % of a memory-bound call here, and a plain rotation would give each implementation the same
  predecessor in every round. The statistic is the median; the minimum and the quartiles are kept. On a GPU, CUDA events time the device. A
  call's untimed preparation (a :class:`ResetCall`'s ``reset``: dropping the gradients of the call before) runs
  before the clock starts.
- **Copy bandwidth**: ``dst.copy_(src)`` into a buffer already in hand, ``2 · numel · itemsize`` bytes, timed
  beside the norms so that "% of copy" compares numbers taken under the same load.
- **Peak memory**: on CUDA, the allocator's peak above the start (``torch.cuda.max_memory_allocated``). On the
  CPU no allocator keeps such a count (torch's profiler only attributes bytes to ops), so the measure is the
  operating system's: the process's peak resident set (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``)
  above its resident set at the start of one call. For that to count every byte a call allocates, freed memory
  must not be kept for reuse: :func:`exact_rss_accounting` makes glibc map every block of 64 KiB or more on
  its own and unmap it when freed, and the kernels' output pool is switched off. Both change how later calls
  allocate, so the engine measures memory only after all timing is done.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call over ``runs`` timed calls."""

    median: float
    minimum: float
    q1: float
    q3: float
    runs: int


def _summary(samples: list[float]) -> Timing:
    ordered = sorted(samples)
    if len(ordered) >= 4:
        q1, _, q3 = statistics.quantiles(ordered, n=4)
    else:
        q1, q3 = ordered[0], ordered[-1]
    return Timing(statistics.median(ordered), ordered[0], q1, q3, len(ordered))


class ResetCall:
    """A timed call ``run`` with an untimed ``reset`` before it; calling it runs both.

    Examples:
        >>> log = []
        >>> call = ResetCall(lambda: log.append("run"), lambda: log.append("reset"))
        >>> call(); log
        ['reset', 'run']
    """

    def __init__(self, run: Callable[[], object], reset: Callable[[], object]) -> None:
        self.run = run
        self.reset = reset

    def __call__(self) -> object:
        self.reset()
        return self.run()


class _Clock:
    """Wall-clock on the CPU; CUDA events (device time) on a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def measure(self, fn: Callable[[], object]) -> float:
        if isinstance(fn, ResetCall):
            fn.reset()
            fn = fn.run
        if self.cuda:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            return start.elapsed_time(stop) / 1e3
        begin = time.perf_counter()
        fn()
        return time.perf_counter() - begin


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    device: torch.device,
    warmup: int = 3,
    repeats: int = 25,
    min_repeats: int = 5,
    budget_s: float = 4.0,
) -> dict[str, Timing]:
    """Median time of each function, timed in interleaved rounds.

    Args:
        fns: name → a call to time.
        device: where the calls run (CUDA events on a GPU, wall-clock on the CPU).
        warmup: untimed calls of each function first.
        repeats: the most timed rounds.
        min_repeats: the fewest timed rounds, even past the budget.
        budget_s: stop adding rounds after this much time (once ``min_repeats`` rounds are done).

    Examples:
        >>> t = time_interleaved({"noop": lambda: None}, device=torch.device("cpu"), warmup=1, repeats=5)
        >>> t["noop"].runs, t["noop"].median >= 0
        (5, True)
    """
    clock = _Clock(device)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    orders = balanced_orders(len(names))
    began = time.perf_counter()
    for round_index in range(repeats):
        for i in orders[round_index % len(orders)]:
            samples[names[i]].append(clock.measure(fns[names[i]]))
        if round_index + 1 >= min_repeats and time.perf_counter() - began > budget_s:
            break
    return {name: _summary(values) for name, values in samples.items()}


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of ``n`` items in which each item directly follows each other item equally often: a Williams
    design (Williams, *Experimental designs balanced for the estimation of residual effects of treatments*,
    1949) — ``n`` orders for an even ``n``, ``2n`` for an odd one. The first order interleaves the lowest and
    highest remaining items (0, 1, n-1, 2, n-2, ...); the others add 1, 2, ... to every item, modulo ``n``; for an
    odd ``n`` the reversed orders are added.

    Examples:
        >>> balanced_orders(4)
        [[0, 1, 3, 2], [1, 2, 0, 3], [2, 3, 1, 0], [3, 0, 2, 1]]
    """
    first, low, high = [0], 1, n - 1
    while low <= high:
        first.append(low)
        low += 1
        if low <= high:
            first.append(high)
            high -= 1
    orders = [[(item + shift) % n for item in first] for shift in range(n)]
    return orders + [order[::-1] for order in orders] if n % 2 and n > 1 else orders


def copy_call(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, memory_format=None):
    """A copy between two buffers already in hand, and the bytes it moves (``2 · numel · itemsize``)."""
    fmt = memory_format or torch.contiguous_format
    src = torch.randn(shape, device=device).to(dtype).contiguous(memory_format=fmt)
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), 2 * src.numel() * src.element_size()


def _rss_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def exact_rss_accounting() -> bool:
    """Make the resident set track live allocations: freed blocks go back to the system at once (glibc only;
    for the rest of the process, so it has no example here). Returns whether it could be set.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 64 << 10) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 128 << 10) == 1
    except (OSError, AttributeError):
        return False
    # the kernels' pool would hide the bytes it reuses
    from normlab.kernels import buffers

    buffers.set_pool_limit(0)
    return ok


def peak_memory(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes above the start during one call of ``fn``, or ``None`` when the platform offers no measure.

    On the CPU the count is exact only after :func:`exact_rss_accounting` (see the module doc); before, memory
    the allocator reuses is not counted.
    """
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        result = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - start
        del result
        return peak
    gc.collect()
    if not _reset_peak_rss():
        return None
    start = _rss_bytes("VmRSS")
    result = fn()
    peak = _rss_bytes("VmHWM")
    del result
    if start is None or peak is None:
        return None
    return max(0, peak - start)
