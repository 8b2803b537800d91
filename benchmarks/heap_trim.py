"""Does freeing a kernel's statistics make a normlab call pay for trimming glibc's heap?

A row or channel norm keeps per-row statistics for its backward: 256 KiB for LayerNorm2d at 32x64x32x32 (two
floats per position). glibc looks at the top of its heap whenever a chunk of 64 KiB or more is freed, and gives
the free pages there back to the system when they pass its trim threshold; the call that frees that chunk pays
for the system call and the unmapping — megabytes when torch.nn has just freed an 8 MiB output into the heap.
That showed up in ``normlab bench`` as LayerNorm2d channels-last calls taking three to four times their usual
time in the rounds where they came right after torch.nn's contender. The kernels' pool now hands out statistics
arrays of 64 KiB or more (``normlab.kernels.buffers.float32_array``) and never frees them.

This script replays that comparison as ``normlab bench`` times it (normlab, torch.nn's permuted LayerNorm,
torch.compile of it and a copy, in interleaved rounds), with the statistics pooled (as shipped) and with them
from ``np.empty`` (as before), alternately, and prints normlab's median and fastest call, torch.nn's median and
their ratio for each. Whether the trim comes up depends on the heap's history, so it can be absent in a run; it
was there in four of five replays when it was found.

Run::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/heap_trim.py [--repeats 3] [--no-compile] [--backward]
"""

from __future__ import annotations

import argparse
import math

import torch

from normlab.bench.cases import Shape, bench_norms
from normlab.bench.engine import BenchConfig, run_comparison
from normlab.kernels import buffers

SHAPE = Shape((32, 64, 32, 32), "nhwc")
SETTINGS = {"pooled": buffers._pool.min_pooled_array_bytes, "np.empty": math.inf}  # the shipped size, and never


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="comparisons per setting (default 3)")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile's contender out")
    parser.add_argument("--backward", action="store_true", help="time forward+backward instead of the forward")
    args = parser.parse_args()
    norm = next(n for n in bench_norms() if n.name == "layer_norm_2d")
    mode = "forward+backward" if args.backward else "forward"
    config = BenchConfig(shapes=(SHAPE,), dtypes=(torch.float32,), modes=(mode,), compile=not args.no_compile,
                         memory=False)
    print(f"LayerNorm2d {SHAPE.label} channels_last fp32 {mode}, as normlab bench times it")
    print(f"{'statistics':10s} {'normlab median':>15s} {'fastest':>8s} {'torch.nn median':>16s} {'torch.nn / normlab':>19s}")
    for _ in range(args.repeats):
        for name, min_bytes in SETTINGS.items():
            buffers._pool.min_pooled_array_bytes = min_bytes
            rows = {row.impl: row for row in run_comparison(norm, SHAPE, torch.float32, config)}
            ours, theirs = rows["normlab"], rows["torch.nn"]
            print(f"{name:10s} {ours.median_ms:12.3f} ms {ours.min_ms:8.3f} {theirs.median_ms:13.3f} ms "
                  f"{theirs.median_ms / ours.median_ms:18.2f}x")


if __name__ == "__main__":
    main()
