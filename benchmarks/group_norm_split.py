"""GroupNorm NCHW (32x64x32x32 fp32), where normlab's forward+backward ends up below torch.nn's: kernels or glue?

Part 1 times the kernels alone — normlab's Numba GroupNorm kernels against torch's ``native_group_norm`` and its
backward, each with its output allocation — first each repeated on its own (the data stays in the cache), then
in rounds with a copy of the input (as ``normlab bench`` interleaves contenders).

Part 2 follows one normlab forward+backward through the bench's rounds (normlab, torch.nn, torch.compile of
torch.nn and a copy, in the orders of the bench, gradients dropped before each call) and splits its time into steps:
from the module to the autograd function, to the kernel, the kernel, and back; then the same for the backward.

Run::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/group_norm_split.py [--rounds 300] [--no-compile]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

import normlab
from normlab.bench.timing import balanced_orders
from normlab.kernels import buffers, cpu_channels, cpu_common, numba_groups
from normlab.kernels.storage import KERNEL_SCALAR

N, C, H, W, G = 32, 64, 32, 32, 32


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _rounds(calls: dict[str, Callable[[], object]], rounds: int, before: Callable[[], None] = lambda: None,
            after: Callable[[str], None] = lambda name: None) -> dict[str, float]:
    """Median ms of each call over rounds in the bench's orders (:func:`~normlab.bench.timing.balanced_orders`);
    ``before`` runs untimed before each call."""
    names, times = list(calls), {name: [] for name in calls}
    orders = balanced_orders(len(names))
    for r in range(rounds):
        for name in (names[i] for i in orders[r % len(orders)]):
            before()
            began = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - began)
            after(name)
    return {name: _median_ms(t[rounds // 10:]) for name, t in times.items()}


def kernels_alone(rounds: int) -> None:
    x, g = torch.randn(N, C, H, W), torch.randn(N, C, H, W)
    weight, bias = torch.ones(C), torch.zeros(C)
    stats, param_grads = np.empty((2, N, G), np.float32), np.empty((2, C), np.float32)
    sizes = (KERNEL_SCALAR[x.dtype], N, C, H * W, False, G)
    cpu_common.threads(x.numel())

    def normlab_forward():
        y = buffers.empty_like_dense(x)
        numba_groups.group_forward_at(x.data_ptr(), y.data_ptr(), *sizes, weight.data_ptr(), bias.data_ptr(), 1e-5,
                                      True, stats)

    def normlab_backward():
        dx = buffers.empty_like_dense(x)
        numba_groups.group_backward_at(x.data_ptr(), g.data_ptr(), dx.data_ptr(), *sizes, weight.data_ptr(), stats,
                                       1e-5, True, param_grads)

    _, saved_mean, saved_rstd = torch.ops.aten.native_group_norm(x, weight, bias, N, C, H * W, G, 1e-5)
    calls = {
        "normlab forward": normlab_forward,
        "normlab backward": normlab_backward,
        "torch forward": lambda: torch.ops.aten.native_group_norm(x, weight, bias, N, C, H * W, G, 1e-5),
        "torch backward": lambda: torch.ops.aten.native_group_norm_backward(
            g, x, saved_mean, saved_rstd, weight, N, C, H * W, G, [True, True, True]),
    }
    alone = {name: _rounds({name: call}, rounds) for name, call in calls.items()}
    dst = torch.empty_like(x)
    mixed = _rounds({**calls, "copy": lambda: dst.copy_(x)}, rounds)
    print("kernels, ms           alone  in rounds with a copy")
    for name in calls:
        print(f"{name:20s} {alone[name][name]:6.3f}  {mixed[name]:6.3f}")


def call_steps(rounds: int, with_compile: bool) -> None:
    marks: list[tuple[str, float]] = []

    def mark(name: str) -> None:
        marks.append((name, time.perf_counter()))

    def traced(name: str, fn: Callable) -> Callable:
        def wrapper(*args):
            mark(f"{name} in")
            out = fn(*args)
            mark(f"{name} out")
            return out

        return wrapper

    function = cpu_channels.GroupFunction
    saved = {name: getattr(function, name) for name in ("forward", "backward")}
    kernels = {name: getattr(numba_groups, name) for name in ("group_forward_at", "group_backward_at")}
    layer = normlab.create_norm("group_norm", C, dims=2)
    module_forward = type(layer).forward
    try:
        function.forward = staticmethod(traced("forward fn", saved["forward"]))
        function.backward = staticmethod(traced("backward fn", saved["backward"]))
        for name, kernel in kernels.items():
            setattr(numba_groups, name, traced(name.split("_")[1] + " kernel", kernel))
        type(layer).forward = traced("module", module_forward)
        x = torch.randn(N, C, H, W).requires_grad_()
        g = torch.randn_like(x)
        reference = torch.nn.GroupNorm(G, C)
        layers = [layer, reference]

        def normlab_call():
            mark("call")
            torch.autograd.backward((layer(x),), (g,))
            mark("return")

        calls = {"normlab": normlab_call, "torch.nn": lambda: torch.autograd.backward((reference(x),), (g,))}
        if with_compile:
            compiled = torch.compile(torch.nn.GroupNorm(G, C), dynamic=False)
            layers.append(compiled)
            calls["torch.compile"] = lambda: torch.autograd.backward((compiled(x),), (g,))
        dst = torch.empty_like(x)
        calls["copy"] = lambda: dst.copy_(x)
        steps: dict[str, list[float]] = {}

        def reset() -> None:
            marks.clear()
            for t in (x, *(p for m in layers for p in m.parameters())):
                t.grad = None

        def record(name: str) -> None:
            if name == "normlab":
                for (a, ta), (b, tb) in itertools.pairwise(marks):
                    steps.setdefault(f"{a} -> {b}", []).append(tb - ta)

        reset()
        for call in calls.values():
            call()
        totals = _rounds(calls, rounds, before=reset, after=record)
    finally:
        for name, fn in saved.items():
            setattr(function, name, staticmethod(fn))
        for name, kernel in kernels.items():
            setattr(numba_groups, name, kernel)
        type(layer).forward = module_forward
    print("\none normlab forward+backward in the bench's rounds, ms")
    for step, samples in steps.items():
        print(f"  {step:44s} {_median_ms(samples):6.3f}")
    print("whole calls, ms: " + ", ".join(f"{name} {ms:.3f}" for name, ms in totals.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out of part 2's rounds")
    args = parser.parse_args()
    kernels_alone(args.rounds)
    call_steps(args.rounds, not args.no_compile)


if __name__ == "__main__":
    main()
