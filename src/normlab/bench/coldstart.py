"""The cold-start cost of the Numba kernels: compiling them the first time, and loading them from the disk cache.

Numba compiles a kernel for each dtype the first time it is called and, with ``cache=True``, keeps the machine
code on disk (next to the source in ``__pycache__``, or under ``NUMBA_CACHE_DIR``); later processes load it.
:func:`measure_cold_start` runs two fresh Python processes on an empty ``NUMBA_CACHE_DIR``: the first compiles
every kernel (cold), the second loads them (warm). Each process times importing the kernels and the first
forward+backward call of every fast path in every dtype.

Examples:
    >>> sorted(PROBES)[:3]
    ['add_layer_norm', 'batch_norm-eval', 'batch_norm-nchw']
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from normlab.core import functional as F

_CL = torch.channels_last

# name → (input shape, memory format, call(x, w, b)); small inputs: the cost measured is compiling, not running.
PROBES = {
    "layer_norm": ((4, 64), None, lambda x, w, b: F.layer_norm(x, (64,), w, b)),
    "rms_norm": ((4, 64), None, lambda x, w, b: F.rms_norm(x, (64,), w)),
    "add_layer_norm": ((4, 64), None, lambda x, w, b: F.add_layer_norm(x, x * 0.5, (64,), w, b)[0]),
    "group_norm-nchw": ((2, 8, 4, 4), None, lambda x, w, b: F.group_norm(x, 4, w[:8], b[:8])),
    "group_norm-nhwc": ((2, 8, 4, 4), _CL, lambda x, w, b: F.group_norm(x, 4, w[:8], b[:8])),
    "batch_norm-nchw": ((2, 8, 4, 4), None, lambda x, w, b: F.batch_norm(x, None, None, w[:8], b[:8], True)),
    "batch_norm-nhwc": ((2, 8, 4, 4), _CL, lambda x, w, b: F.batch_norm(x, None, None, w[:8], b[:8], True)),
    "batch_norm-eval": ((2, 8, 4, 4), None, lambda x, w, b: F.batch_norm(
        x.detach(), torch.zeros(8), torch.ones(8), w[:8].detach(), b[:8].detach(), False)),
    "layer_norm_2d-nchw": ((2, 8, 4, 4), None, lambda x, w, b: F.normalize(
        x, (1,), weight=w[:8], bias=b[:8], param_dim=1)),
}


def _probe() -> None:
    """Run inside a fresh process: time the import and each first call; print JSON."""
    began = time.perf_counter()
    import normlab.kernels  # noqa: F401  (imports Numba, registers the fast paths)

    result = {"import_s": time.perf_counter() - began, "calls": {}}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for name, (shape, fmt, call) in PROBES.items():
            x = torch.randn(shape).to(dtype)
            if fmt is not None:
                x = x.contiguous(memory_format=fmt)
            x.requires_grad_()
            w = torch.ones(64, dtype=dtype, requires_grad=True)
            b = torch.zeros(64, dtype=dtype, requires_grad=True)
            start = time.perf_counter()
            y = call(x, w, b)
            if y.requires_grad:
                y.sum().backward()
            result["calls"][f"{name} {str(dtype).replace('torch.', '')}"] = time.perf_counter() - start
    result["total_s"] = time.perf_counter() - began
    print(json.dumps(result))


def _run_probe(cache_dir: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    code = "from normlab.bench.coldstart import _probe; _probe()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_cold_start() -> dict:
    """``{"cold": ..., "warm": ...}``: import time, first-call time per fast path and dtype, and the total,
    for a process that compiles every kernel and for one that loads them from the cache."""
    with tempfile.TemporaryDirectory(prefix="normlab-numba-cache-") as cache_dir:
        cold = _run_probe(cache_dir)
        warm = _run_probe(cache_dir)
    return {"cold": cold, "warm": warm}


def format_cold_start(result: dict) -> str:
    """Two lines: the totals, then the slowest first calls when cold."""
    cold, warm = result["cold"], result["warm"]
    slowest = sorted(cold["calls"].items(), key=lambda kv: -kv[1])[:3]
    return (
        f"Numba cold start: compile everything {cold['total_s']:.1f} s (import {cold['import_s']:.1f} s); "
        f"from the disk cache {warm['total_s']:.1f} s (import {warm['import_s']:.1f} s)\n"
        "  slowest first calls when cold: " + ", ".join(f"{k} {v:.1f} s" for k, v in slowest)
    )
