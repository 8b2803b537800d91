"""The benchmark engine: for each shape, dtype and norm, time every contender forward and forward+backward in
interleaved rounds beside a copy of the same tensor, and record time, bandwidth, % of copy and peak memory.

Each contender is timed as a user calls it: ``module(x)`` under ``torch.no_grad()`` for the forward, and
``module(x)`` then ``backward`` with the input and parameters requiring gradients (their ``.grad`` reset to
``None`` before each call) for forward+backward. The time includes getting and releasing the outputs.
torch.compile's contender is compiled afresh for each shape and dtype (``torch._dynamo.reset()``); its first
call, the compile cost, is timed apart and never mixed into the median. A contender that fails (e.g.
torch.compile without a C++ compiler) is recorded with its error instead of stopping the run.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from normlab.bench.cases import FULL_SHAPES, BenchNorm, Shape, bench_norms
from normlab.bench.timing import ResetCall, copy_call, time_interleaved

MODES = ("forward", "forward+backward")


@dataclass
class BenchConfig:
    """What to run (``only``: norm names to keep, substrings; empty keeps all)."""

    shapes: tuple[Shape, ...] = FULL_SHAPES
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)
    modes: tuple[str, ...] = MODES
    only: tuple[str, ...] = ()
    compile: bool = True  # include torch.compile of the torch.nn counterpart
    memory: bool = True  # measure peak memory (one extra call per contender)
    warmup: int = 3
    repeats: int = 100
    min_repeats: int = 5
    budget_s: float = 3.0  # per comparison, once min_repeats rounds are done
    device: str = "cpu"
    seed: int = 0


@dataclass
class BenchRow:
    """One contender in one comparison (times in milliseconds, bandwidth in GB/s = 1e9 B/s)."""

    norm: str
    family: str
    shape: str
    layout: str
    dtype: str
    mode: str
    impl: str
    label: str
    status: str = "ok"
    median_ms: float | None = None
    min_ms: float | None = None
    q1_ms: float | None = None
    q3_ms: float | None = None
    runs: int = 0
    traffic_bytes: int = 0
    gbps: float | None = None
    copy_gbps: float | None = None
    pct_copy: float | None = None
    peak_mib: float | None = None
    compile_s: float | None = None
    channels_last_out: bool | None = None


@dataclass
class BenchResult:
    rows: list[BenchRow]
    meta: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"meta": self.meta, "rows": [asdict(r) for r in self.rows]}


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}[dtype]


def _wanted(norm: BenchNorm, config: BenchConfig) -> bool:
    return not config.only or any(key.lower() in norm.name.lower() for key in config.only)


def _call(module: nn.Module, inputs: list[torch.Tensor], grads: list[torch.Tensor], backward: bool):
    """The call a contender is timed on: a forward under ``no_grad``, or a forward and ``backward`` whose
    gradients are dropped before each call, outside the clock (a :class:`~normlab.bench.timing.ResetCall`: so no
    contender pays for freeing the gradients the one before it left)."""
    params = [p for p in module.parameters() if p.requires_grad]

    if not backward:

        def forward():
            with torch.no_grad():
                return module(*inputs)

        return forward

    def reset_grads():
        for t in (*inputs, *params):
            t.grad = None

    def forward_backward():
        out = module(*inputs)
        outs = out if isinstance(out, tuple) else (out,)
        torch.autograd.backward(outs, grads[: len(outs)])
        return out

    return ResetCall(forward_backward, reset_grads)


def _inputs(norm: BenchNorm, shape: Shape, dtype: torch.dtype, device: torch.device, seed: int):
    g = torch.Generator(device="cpu").manual_seed(seed)

    def make():
        t = torch.randn(shape.dims, generator=g).to(device=device, dtype=dtype)
        return t.contiguous(memory_format=shape.memory_format)

    inputs = [make().requires_grad_() for _ in range(norm.inputs)]
    grads = [make() for _ in range(norm.outputs)]
    return inputs, grads


def _machine(device: torch.device) -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), model)
    except OSError:
        pass
    meta = {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "device": str(device),
    }
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    try:
        import numba

        meta["numba"] = numba.__version__
    except ImportError:
        meta["numba"] = None
    from normlab import kernels

    meta["fast_paths"] = [f"{op}:{backend}" for op, backend in kernels.REGISTERED]
    meta["fast_paths_unavailable"] = dict(kernels.UNAVAILABLE)
    return meta


def _compiled_call(module: nn.Module, inputs, grads, backward: bool) -> tuple[Callable | None, float | None, str]:
    """torch.compile of ``module`` made afresh, its first call timed (the compile cost); or the error."""
    began = time.perf_counter()
    try:
        torch._dynamo.reset()
        call = _call(torch.compile(module, dynamic=False), inputs, grads, backward)
        call()
    except Exception as error:  # noqa: BLE001 - a failed compile is a result to record, not a crash
        message = str(error).splitlines()[0][:120] if str(error) else ""
        return None, None, f"failed: {type(error).__name__}: {message}"
    return call, time.perf_counter() - began, "ok"


def run_comparison(norm: BenchNorm, shape: Shape, dtype: torch.dtype, config: BenchConfig) -> list[BenchRow]:
    """Every contender of ``norm`` at ``shape`` and ``dtype``, in every mode of ``config``."""
    device = torch.device(config.device)
    inputs, grads = _inputs(norm, shape, dtype, device, config.seed)
    contenders = norm.build(shape)
    copy_fn, copy_bytes = copy_call(shape.dims, dtype, device, shape.memory_format)
    rows: list[BenchRow] = []
    for mode in config.modes:
        backward = mode == "forward+backward"
        calls: dict[str, Callable[[], object]] = {}
        meta: dict[str, BenchRow] = {}
        for contender in contenders:
            if contender.compile and not config.compile:
                continue
            module = contender.module.to(device=device, dtype=dtype)
            row = BenchRow(norm.name, norm.family, shape.label, shape.layout, dtype_name(dtype), mode,
                           contender.impl, contender.label)
            if contender.compile:
                call, row.compile_s, row.status = _compiled_call(module, inputs, grads, backward)
            else:
                call = _call(module, inputs, grads, backward)
            meta[contender.impl] = row
            if call is not None:
                calls[contender.impl] = call
        calls["copy"] = copy_fn
        timings = time_interleaved(calls, device=device, warmup=config.warmup, repeats=config.repeats,
                                   min_repeats=config.min_repeats, budget_s=config.budget_s)
        copy_gbps = copy_bytes / timings["copy"].median / 1e9
        traffic = norm.traffic(inputs[0].numel(), inputs[0].element_size(), backward)
        for impl, row in meta.items():
            row.traffic_bytes, row.copy_gbps = traffic, copy_gbps
            if impl in timings:
                t = timings[impl]
                row.median_ms, row.min_ms, row.q1_ms, row.q3_ms = (v * 1e3 for v in (t.median, t.minimum, t.q1, t.q3))
                row.runs = t.runs
                row.gbps = traffic / t.median / 1e9
                row.pct_copy = 100.0 * row.gbps / copy_gbps
                out = calls[impl]()
                first = out[0] if isinstance(out, tuple) else out
                if shape.layout == "nhwc":
                    row.channels_last_out = bool(first.is_contiguous(memory_format=torch.channels_last))
                del out, first
            rows.append(row)
    return rows


def run_bench(config: BenchConfig, progress: bool = True) -> BenchResult:
    """Run every comparison of ``config``; returns the rows and the run's metadata (machine, load, settings).

    Examples:
        >>> from normlab.bench.cases import Shape
        >>> config = BenchConfig(shapes=(Shape((64, 32), "rows"),), dtypes=(torch.float32,), only=("rms_norm",),
        ...                      modes=("forward",), compile=False, memory=False, warmup=1, repeats=3, min_repeats=3)
        >>> rows = run_bench(config, progress=False).rows
        >>> sorted(r.impl for r in rows if r.norm == "rms_norm"), all(r.median_ms > 0 for r in rows)
        (['normlab', 'torch.nn'], True)
    """
    from tqdm import tqdm

    device = torch.device(config.device)
    norms = [n for n in bench_norms() if _wanted(n, config)]
    jobs = [(n, s, d) for s in config.shapes for d in config.dtypes for n in norms if n.family == s.family]
    meta = _machine(device)
    meta.update(load_before=os.getloadavg(), started=time.strftime("%Y-%m-%d %H:%M:%S"),
                config={k: (str(v) if not isinstance(v, (int, float, bool, str)) else v)
                        for k, v in asdict(config).items()})
    rows: list[BenchRow] = []
    began = time.perf_counter()
    with tqdm(jobs, desc="normlab bench", unit="cmp", file=sys.stderr, disable=not progress) as bar:
        for norm, shape, dtype in bar:
            bar.set_postfix_str(f"{norm.name} {shape.label} {dtype_name(dtype)}")
            rows += run_comparison(norm, shape, dtype, config)
    if config.memory:  # in a fresh process: the accounting it needs changes how that process allocates
        from normlab.bench.memory import measure_in_subprocess

        peaks, meta["memory_method"] = measure_in_subprocess(config)
        for row in rows:
            row.peak_mib = peaks.get((row.norm, row.shape, row.dtype, row.mode, row.impl))
    meta.update(load_after=os.getloadavg(), seconds=round(time.perf_counter() - began, 1))
    return BenchResult(rows, meta)
