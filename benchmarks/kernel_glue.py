"""Where a fast-path call's time goes on the CPU: inside the Numba kernels, or in the Python around them.

For each conv-shape norm of ``normlab bench`` (32x64x32x32, NCHW and channels-last, fp32 and bf16), one process
times a training forward+backward of the normlab layer in a loop and splits it into:

* **kernels** — time inside the Numba kernel calls (each kernel entry point is wrapped with a clock);
* **glue** — everything else: the module and core dispatch, the autograd function, NumPy views, the output pool,
  the running-statistics update, the parameter gradients;
* **glue, kernels stubbed** — the same call with every kernel replaced by a no-op, so that nothing streams the
  tensors through the caches between two pieces of Python.

The two glue columns differ because a kernel that streams a few MiB evicts the interpreter's working set from
the caches: the same Python runs several times slower right after it. torch.nn's C++ layers pay that too, on far
less code. Medians of ``--calls`` calls after a warm-up. Last, the fixed cost of one call: a forward on a tiny
input, normlab beside torch.nn.

Run::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/kernel_glue.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

import normlab
from normlab.kernels import numba_batch, numba_groups

KERNELS = {
    numba_batch: ("batch_forward_at", "batch_backward_at", "fold_running_stats_at",
                  # the entry points of earlier versions, for a before/after
                  "batch_forward_first", "batch_backward_first", "batch_forward_last", "batch_backward_last",
                  "fold_running_stats"),
    numba_groups: ("group_forward_at", "group_backward_at",
                   "group_forward_first", "group_backward_first", "group_forward_last", "group_backward_last"),
}


def _patch(replace: Callable[[Callable], Callable]) -> Callable[[], None]:
    """Replace every kernel entry point by ``replace(kernel)``; returns the undo."""
    saved = [(module, name, getattr(module, name)) for module, names in KERNELS.items() for name in names
             if hasattr(module, name)]  # (an older normlab, for a before/after, lacks some)
    for module, name, kernel in saved:
        setattr(module, name, replace(kernel))
    return lambda: [setattr(module, name, kernel) for module, name, kernel in saved]


def _one_call(norm: str, dtype: torch.dtype, memory_format: torch.memory_format) -> Callable[[], None]:
    layer = normlab.create_norm(norm, 64, dims=2).to(dtype)
    x = torch.randn(32, 64, 32, 32).to(dtype).contiguous(memory_format=memory_format).requires_grad_()
    grad = torch.randn_like(x)

    def call() -> None:
        for t in (x, layer.weight, layer.bias):
            t.grad = None
        torch.autograd.backward((layer(x),), (grad,))

    return call


def measure(norm: str, dtype: torch.dtype, memory_format: torch.memory_format, calls: int) -> dict[str, float]:
    """Median milliseconds per call: total, inside the kernels, the rest, and the rest with kernels stubbed."""
    inside = [0.0]

    def clocked(kernel):
        def run(*args):
            began = time.perf_counter()
            kernel(*args)
            inside[0] += time.perf_counter() - began

        return run

    call = _one_call(norm, dtype, memory_format)
    totals, kernels, stubbed = [], [], []
    undo = _patch(clocked)
    try:
        for i in range(calls + 5):
            inside[0] = 0.0
            began = time.perf_counter()
            call()
            if i >= 5:
                totals.append(time.perf_counter() - began)
                kernels.append(inside[0])
    finally:
        undo()
    undo = _patch(lambda kernel: (lambda *args: None))
    try:
        with np.errstate(all="ignore"):  # the stubs leave the statistics unset
            for i in range(calls + 5):
                began = time.perf_counter()
                call()
                if i >= 5:
                    stubbed.append(time.perf_counter() - began)
    finally:
        undo()
    median = statistics.median
    rest = [t - k for t, k in zip(totals, kernels)]
    return {"total": median(totals) * 1e3, "kernels": median(kernels) * 1e3, "glue": median(rest) * 1e3,
            "glue_stubbed": median(stubbed) * 1e3}


def tiny_call_us(calls: int = 2000) -> list[tuple[str, float, float]]:
    """Microseconds per forward (no grad) on a tiny input, normlab vs torch.nn: the fixed cost of a call (best of
    5 repeats of ``calls`` calls)."""
    import timeit

    x2, x4 = torch.randn(4, 64), torch.randn(4, 16, 4, 4)
    pairs = [("LayerNorm", normlab.nn.LayerNorm(64), torch.nn.LayerNorm(64), x2),
             ("RMSNorm", normlab.nn.RMSNorm(64), torch.nn.RMSNorm(64), x2),
             ("BatchNorm2d", normlab.nn.BatchNorm2d(16), torch.nn.BatchNorm2d(16), x4),
             ("GroupNorm", normlab.nn.GroupNorm(4, 16), torch.nn.GroupNorm(4, 16), x4)]
    rows = []
    with torch.no_grad():
        for name, ours, theirs, x in pairs:
            times = [min(timeit.repeat(lambda m=m, x=x: m(x), number=calls, repeat=5)) / calls * 1e6
                     for m in (ours, theirs)]
            rows.append((name, *times))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="timed calls per case (default 100)")
    args = parser.parse_args()
    print(f"{'norm':<11} {'layout':<6} {'dtype':<5} {'total ms':>9} {'kernels':>8} {'glue':>6} "
          f"{'glue, kernels stubbed':>22}")
    for norm in ("batch_norm", "group_norm"):
        for memory_format, layout in ((torch.contiguous_format, "nchw"), (torch.channels_last, "nhwc")):
            for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
                r = measure(norm, dtype, memory_format, args.calls)
                print(f"{norm:<11} {layout:<6} {name:<5} {r['total']:>9.2f} {r['kernels']:>8.2f} {r['glue']:>6.2f} "
                      f"{r['glue_stubbed']:>22.2f}")
    print(f"\n{'tiny input, forward':<20} {'normlab µs':>11} {'torch.nn µs':>12}")
    for name, ours, theirs in tiny_call_us():
        print(f"{name:<20} {ours:>11.1f} {theirs:>12.1f}")


if __name__ == "__main__":
    main()
