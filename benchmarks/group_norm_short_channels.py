"""GroupNorm NCHW forward kernels by channel length: one statistics loop per channel, or one per group?

A vectorized float32 loop here takes 64 values an iteration (16-wide AVX-512, unrolled 4×), and the values left
over run one at a time. A channel of 7×7 = 49 values is all leftover, so GroupNorm at ResNet's late-stage shapes
took its statistics value by value. In NCHW a group's channels are adjacent in memory, so the statistics can
take one loop over the whole group instead (``numba_groups.group_forward_short``); the kernel entry picks it below
``numba_groups.SHORT_CHANNEL`` values a channel.

This script times both forward kernels on the same input, beside torch's ``native_group_norm`` (with its output
allocation), at channel lengths from 4×4 to 32×32, in interleaved rounds (the bench's orders), and prints the
median of each, after checking that the two kernels give the same statistics. The shapes are common conv shapes,
so the channels per group change with them too. The choice of ``SHORT_CHANNEL`` rests on this table.

Run::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/group_norm_short_channels.py [--rounds 300] [--dtype fp32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from normlab.bench.timing import balanced_orders
from normlab.kernels import cpu_common, numba_groups
from normlab.kernels.storage import as_kernel_array

SHAPES = ((32, 1024, 4, 4), (32, 512, 7, 7), (32, 512, 10, 10), (32, 128, 12, 12), (32, 256, 14, 14),
          (8, 64, 16, 16), (32, 64, 32, 32))
GROUPS = 32
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def time_shape(shape: tuple[int, int, int, int], dtype: torch.dtype, rounds: int) -> dict[str, float]:
    """Median ms of the per-channel kernel, the per-group kernel and torch's, at ``shape``."""
    n, c, h, w = shape
    length = h * w
    x_tensor = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    x = as_kernel_array(x_tensor).reshape(n, c, length)
    weight, bias = np.ones(c, np.float32), np.zeros(c, np.float32)
    torch_weight, torch_bias = torch.ones(c, dtype=dtype), torch.zeros(c, dtype=dtype)
    kernels = {"per channel": numba_groups.group_forward_first, "per group": numba_groups.group_forward_short}
    outputs = {name: np.empty_like(x) for name in kernels}
    stats = {name: np.empty((2, n, GROUPS), np.float32) for name in kernels}  # mean, variance
    eps = np.float32(1e-5)
    cpu_common.threads(x.size)
    calls = {
        name: (lambda kernel=kernel, name=name: kernel(x, GROUPS, weight, bias, eps, True, outputs[name],
                                                       stats[name][0], stats[name][1]))
        for name, kernel in kernels.items()
    }
    calls["torch"] = lambda: torch.ops.aten.native_group_norm(x_tensor, torch_weight, torch_bias, n, c, length,
                                                              GROUPS, 1e-5)
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    orders = balanced_orders(len(names))
    for name in names:  # compile (first call) and warm up
        calls[name]()
    np.testing.assert_allclose(stats["per group"], stats["per channel"], rtol=1e-4, atol=1e-5)
    for r in range(rounds):
        for name in (names[i] for i in orders[r % len(orders)]):
            began = time.perf_counter()
            calls[name]()
            samples[name].append(time.perf_counter() - began)
    return {name: statistics.median(values) * 1e3 for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    args = parser.parse_args()
    print(f"GroupNorm NCHW forward, {GROUPS} groups, {args.dtype}; median ms of {args.rounds} rounds; "
          f"the entry picks 'per group' below {numba_groups.SHORT_CHANNEL} values a channel")
    print(f"{'shape':>16} {'L':>5} {'per channel':>12} {'per group':>10} {'torch':>7} {'per group / per channel':>24}")
    for shape in SHAPES:
        t = time_shape(shape, DTYPES[args.dtype], args.rounds)
        label = "x".join(map(str, shape))
        length = shape[2] * shape[3]
        print(f"{label:>16} {length:5d} {t['per channel']:12.3f} {t['per group']:10.3f} {t['torch']:7.3f} "
              f"{t['per group'] / t['per channel']:24.2f}")


if __name__ == "__main__":
    main()
