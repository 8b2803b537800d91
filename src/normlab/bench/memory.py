"""Peak memory of every contender, measured in a fresh process.

On the CPU the measure is the process's peak resident set above its level at the start of one call (see
:mod:`normlab.bench.timing`). It counts every byte a call allocates only if freed memory is never kept for
reuse, so the measuring process first makes glibc map every block of 64 KiB or more on its own and unmap it
when freed, and switches the kernels' output pool off — before anything is allocated, since blocks already
freed into the heap would be reused unseen. That setting would also slow the timed calls, so it lives in a
child process of its own: :func:`measure_in_subprocess` runs this module with the run's settings and reads
back one peak per contender. torch.compile's contenders are not measured (each would be compiled again).

Each contender is called once to warm up; then its gradients are cleared and one call is measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

import torch

from normlab.bench.cases import Shape, bench_norms
from normlab.bench.engine import BenchConfig, _call, _inputs, _wanted, dtype_name
from normlab.bench.timing import exact_rss_accounting, peak_memory

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _config_to_json(config: BenchConfig) -> str:
    data = asdict(config)
    data["shapes"] = [[list(s.dims), s.layout] for s in config.shapes]
    data["dtypes"] = [dtype_name(d) for d in config.dtypes]
    return json.dumps(data)


def _config_from_json(text: str) -> BenchConfig:
    data = json.loads(text)
    data["shapes"] = tuple(Shape(tuple(dims), layout) for dims, layout in data["shapes"])
    data["dtypes"] = tuple(_DTYPES[d] for d in data["dtypes"])
    for key in ("modes", "only"):
        data[key] = tuple(data[key])
    return BenchConfig(**data)


def measure_all(config: BenchConfig) -> list[list]:
    """``[norm, shape, dtype, mode, impl, peak MiB]`` for every contender of ``config`` except torch.compile."""
    device = torch.device(config.device)
    results = []
    for shape in config.shapes:
        for dtype in config.dtypes:
            for norm in bench_norms():
                if norm.family != shape.family or not _wanted(norm, config):
                    continue
                inputs, grads = _inputs(norm, shape, dtype, device, config.seed)
                for contender in norm.build(shape):
                    if contender.compile:
                        continue
                    module = contender.module.to(device=device, dtype=dtype)
                    params = list(module.parameters())
                    for mode in config.modes:
                        call = _call(module, inputs, grads, mode == "forward+backward")
                        call()
                        for t in (*inputs, *params):
                            t.grad = None
                        peak = peak_memory(call, device)
                        results.append([norm.name, shape.label, dtype_name(dtype), mode, contender.impl,
                                        None if peak is None else peak / 2**20])
    return results


def measure_in_subprocess(config: BenchConfig) -> tuple[dict[tuple, float | None], str]:
    """Run :func:`measure_all` in a fresh Python process; ``({(norm, shape, dtype, mode, impl): MiB}, method)``."""
    done = subprocess.run([sys.executable, "-m", "normlab.bench.memory", _config_to_json(config)],
                          check=False, capture_output=True, text=True)
    if done.returncode != 0:
        return {}, f"not measured: the measuring process failed ({done.stderr.strip().splitlines()[-1:]})"
    payload = json.loads(done.stdout.strip().splitlines()[-1])
    peaks = {tuple(row[:5]): row[5] for row in payload["rows"]}
    return peaks, payload["method"]


def _main(argv: list[str]) -> None:
    config = _config_from_json(argv[0])
    if config.device == "cuda":
        method = "CUDA caching allocator's peak above the start of the call"
    elif exact_rss_accounting():
        method = "peak resident set above the start of the call; glibc unmaps every freed block >= 64 KiB"
    else:
        method = "peak resident set above the start of the call (freed memory may be reused unseen: a lower bound)"
    print(json.dumps({"method": method, "rows": measure_all(config)}))


if __name__ == "__main__":
    _main(sys.argv[1:])
