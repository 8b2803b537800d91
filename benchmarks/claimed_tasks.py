"""Fixed shares or claimed tasks? The GroupNorm NCHW kernels (32x64x32x32, fp32 and bf16) with their ``(n, g)``
tasks handed out two ways, timed in the bench's rounds beside torch's kernels and a copy of the input:

- **one claim per thread**: each thread claims half the tasks at once, the fixed contiguous share a ``prange``
  gives it (what the kernels did before ``normlab.kernels.numba_sync``);
- **claimed**: the threads claim ``tasks_per_claim`` tasks at a time (the kernels' default).

The kernels get their outputs in hand (no allocation), torch's ops allocate theirs. Run::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/claimed_tasks.py [--rounds 400]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from normlab.bench.timing import balanced_orders
from normlab.kernels import cpu_common, numba_groups
from normlab.kernels.numba_sync import tasks_per_claim
from normlab.kernels.storage import as_kernel_array

N, C, H, W, G = 32, 64, 32, 32, 32


def _calls(dtype: torch.dtype) -> dict:
    x, grad_y = torch.randn(N, C, H, W).to(dtype), torch.randn(N, C, H, W).to(dtype)
    weight, bias = torch.ones(C), torch.zeros(C)
    shape = (N, C, H * W)
    xa, ga = as_kernel_array(x).reshape(shape), as_kernel_array(grad_y).reshape(shape)
    y, dx = np.empty_like(xa), np.empty_like(xa)
    w, b = weight.numpy(), bias.numpy()
    mean, var = np.empty((N, G), np.float32), np.empty((N, G), np.float32)
    partials = np.empty((2, N, C), np.float32)
    workers = cpu_common.threads(x.numel())
    eps = np.float32(1e-5)
    ways = {"one claim per thread": -(-(N * G) // workers), "claimed": tasks_per_claim(C // G * H * W)}
    calls = {}
    for way, per_claim in ways.items():
        calls[f"forward, {way}"] = lambda k=per_claim: numba_groups._group_forward_first(
            xa, G, w, b, eps, True, y, mean, var, workers, k, np.zeros(1, np.int64))
        calls[f"backward, {way}"] = lambda k=per_claim: numba_groups._group_backward_first(
            xa, ga, G, w, mean, var, eps, True, dx, partials[0], partials[1], workers, k, np.zeros(1, np.int64))
    _, saved_mean, saved_rstd = torch.ops.aten.native_group_norm(x, weight, bias, N, C, H * W, G, 1e-5)
    calls["forward, torch"] = lambda: torch.ops.aten.native_group_norm(x, weight, bias, N, C, H * W, G, 1e-5)
    calls["backward, torch"] = lambda: torch.ops.aten.native_group_norm_backward(
        grad_y, x, saved_mean, saved_rstd, weight, N, C, H * W, G, [True, True, True])
    dst = torch.empty_like(x)
    calls["copy"] = lambda: dst.copy_(x)
    return calls


def _median_ms(calls: dict, rounds: int) -> dict[str, float]:
    names, times = list(calls), {name: [] for name in calls}
    for fn in calls.values():
        fn()
    orders = balanced_orders(len(names))
    for r in range(rounds):
        for name in (names[i] for i in orders[r % len(orders)]):
            began = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - began)
    return {name: statistics.median(t[rounds // 10:]) * 1e3 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    print(f"GroupNorm NCHW {N}x{C}x{H}x{W}, {G} groups, {torch.get_num_threads()} threads; median ms")
    print(f"{'':34s} {'fp32':>7s} {'bf16':>7s}")
    results = {dtype: _median_ms(_calls(dtype), args.rounds) for dtype in (torch.float32, torch.bfloat16)}
    for name in results[torch.float32]:
        print(f"{name:34s} " + " ".join(f"{results[d][name]:7.3f}" for d in results))


if __name__ == "__main__":
    main()
