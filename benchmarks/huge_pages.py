"""Do normalization kernels run faster on 2 MiB (transparent huge) pages than on 4 KiB pages?

A normalization kernel streams through its tensors once or twice. On 4 KiB pages it takes a TLB miss every 4 KiB,
and the hardware prefetchers stop at each 4 KiB boundary. The kernels' output pool
(``normlab.kernels.buffers``) maps each block of 2 MiB or more on its own and asks for huge pages
(``madvise(MADV_HUGEPAGE)``); this script measures whether that pays.

It runs the GroupNorm NCHW forward and backward kernels (32x64x32x32, 32 groups, the bench's conv shape) back to
back, the way one forward+backward call does, on four placements of the four tensors (input ``x``, incoming
gradient ``g``, output ``y``, input gradient ``dx``): all on 4 KiB pages, all on 2 MiB pages, and each pair on
2 MiB pages with the other on 4 KiB. Each tensor is a private anonymous mapping of its own, advised
``MADV_NOHUGEPAGE`` or ``MADV_HUGEPAGE`` before its first touch. A 64 MiB copy before every call flushes the
caches, as the other contenders of ``normlab bench`` do. It prints how many KiB the kernel really backed with huge
pages (``AnonHugePages``; 0 means THP is off here and the comparison is moot), then the median and fastest call of
each placement, interleaved round by round.

Run (Linux)::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/huge_pages.py [--rounds 400] [--dtype fp32]
"""

from __future__ import annotations

import argparse
import mmap
import statistics
import time

import numpy as np
import torch

from normlab.bench.timing import balanced_orders
from normlab.kernels import cpu_common, numba_groups
from normlab.kernels.buffers import mapped_buffer
from normlab.kernels.storage import KERNEL_SCALAR

N, C, H, W, G = 32, 64, 32, 32, 32
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def mapped_tensor(dtype: torch.dtype, huge: bool) -> torch.Tensor:
    """A zeroed ``(N, C, H, W)`` tensor on a mapping of its own, 2 MiB-aligned, advised for huge pages or not."""
    advice = mmap.MADV_HUGEPAGE if huge else mmap.MADV_NOHUGEPAGE
    tensor = torch.from_numpy(mapped_buffer(N * C * H * W * dtype.itemsize, advice)).view(dtype).view(N, C, H, W)
    tensor.zero_()
    return tensor


def huge_kib() -> int:
    """KiB of this process's anonymous memory on huge pages."""
    with open("/proc/self/smaps") as smaps:
        return sum(int(line.split()[1]) for line in smaps if line.startswith("AnonHugePages:"))


def forward_backward(x, g, y, dx):
    """One forward and one backward kernel call, as a GroupNorm forward+backward runs them."""
    weight, bias = torch.ones(C), torch.zeros(C)
    stats, param_grads = np.empty((2, N, G), np.float32), np.empty((2, C), np.float32)
    sizes = (KERNEL_SCALAR[x.dtype], N, C, H * W, False, G)

    def call():
        numba_groups.group_forward_at(x.data_ptr(), y.data_ptr(), *sizes, weight.data_ptr(), bias.data_ptr(), 1e-5,
                                      True, stats)
        numba_groups.group_backward_at(x.data_ptr(), g.data_ptr(), dx.data_ptr(), *sizes, weight.data_ptr(), stats,
                                       1e-5, True, param_grads)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    args = parser.parse_args()
    dtype = DTYPES[args.dtype]
    before = huge_kib()
    small = [mapped_tensor(dtype, huge=False) for _ in range(4)]
    after_small = huge_kib()
    large = [mapped_tensor(dtype, huge=True) for _ in range(4)]
    after_large = huge_kib()
    for tensors in (small, large):
        for source, tensor in zip((torch.randn(N, C, H, W), torch.randn(N, C, H, W)), tensors):
            tensor.copy_(source)
    print(f"huge pages backing the 4 KiB set: {after_small - before} KiB; the 2 MiB set: {after_large - after_small}"
          f" KiB (of {4 * N * C * H * W * dtype.itemsize >> 10} KiB)")
    placements = {
        "all on 4 KiB pages": forward_backward(*small),
        "outputs y, dx on 2 MiB": forward_backward(*small[:2], *large[2:]),
        "inputs x, g on 2 MiB": forward_backward(*large[:2], *small[2:]),
        "all on 2 MiB pages": forward_backward(*large),
    }
    cpu_common.threads(N * C * H * W)
    flush_source = torch.empty(64 << 20, dtype=torch.uint8)
    flush_target = torch.empty_like(flush_source)
    names = list(placements)
    orders = balanced_orders(len(names))
    times: dict[str, list[float]] = {name: [] for name in names}
    for call in placements.values():
        call()
    for r in range(args.rounds):
        for name in (names[i] for i in orders[r % len(orders)]):
            flush_target.copy_(flush_source)
            began = time.perf_counter()
            placements[name]()
            times[name].append(time.perf_counter() - began)
    base = statistics.median(times[names[0]][args.rounds // 10:])
    print(f"GroupNorm NCHW {N}x{C}x{H}x{W} {args.dtype}, forward+backward kernels after a cache flush, "
          f"{args.rounds} rounds")
    print(f"{'placement':26s} {'median ms':>10s} {'fastest ms':>11s} {'vs all 4 KiB':>13s}")
    for name in names:
        median = statistics.median(times[name][args.rounds // 10:])
        print(f"{name:26s} {median * 1e3:10.3f} {min(times[name]) * 1e3:11.3f} {median / base:12.2f}x")


if __name__ == "__main__":
    main()
