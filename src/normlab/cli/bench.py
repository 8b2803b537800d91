"""``normlab bench``: time every normalization layer against torch.nn and torch.compile, forward and
forward+backward, and check the performance targets.

On a machine shared with other processes, run it as ``OMP_WAIT_POLICY=PASSIVE normlab bench``: OpenMP workers
otherwise spin for milliseconds after every parallel region, and the processes steal each other's cores (see
``docs/benchmarks.md``). The policy must be set before torch starts, so it cannot be set from here.

Prints a fixed-width table (milliseconds; speed-ups are torch time / normlab time; GB/s over the minimum
traffic; % of a copy timed in the same rounds; peak MiB normlab/torch.nn; CL: output kept channels_last),
the targets met, and writes ``bench.csv``, ``bench.json`` and ``bench.png`` to ``--out``.

Examples:
    >>> from normlab.cli import build_parser
    >>> args = build_parser("bench").parse_args(["bench", "--quick", "--only", "rms_norm", "--dtypes", "fp32"])
    >>> args.quick, args.only, args.dtypes
    (True, 'rms_norm', 'fp32')
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_MODES = {"fwd": "forward", "fwdbwd": "forward+backward"}


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Add the ``bench`` subcommand."""
    p = subparsers.add_parser(
        name, help=help_text,
        description="Time every normlab activation norm beside its torch.nn counterpart and torch.compile of it, "
                    "forward and forward+backward, with bandwidth, %% of copy bandwidth and peak memory.",
        epilog="Examples: 'normlab bench --quick'; 'normlab bench --only layer_norm,rms_norm --dtypes fp32'; "
               "'normlab bench --shapes 8192x1024,32x64x32x32:nhwc'.")
    p.add_argument("--quick", action="store_true",
                   help="a smaller token shape, few repeats, no torch.compile, no peak memory: under a minute")
    p.add_argument("--only", metavar="NAMES", default="",
                   help="comma-separated norm names (substrings) to keep, e.g. 'layer_norm,group'")
    p.add_argument("--shapes", metavar="SHAPES", default="",
                   help="comma-separated: 'tokens', 'conv', or shapes like 8192x1024, 32x64x32x32[:nhwc]")
    p.add_argument("--dtypes", metavar="DTYPES", default="fp32,bf16", help="comma-separated from fp32, bf16, fp16")
    p.add_argument("--modes", metavar="MODES", default="fwd,fwdbwd", help="comma-separated from fwd, fwdbwd")
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="include torch.compile (default: on, off with --quick)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="leave torch.compile out")
    p.add_argument("--memory", dest="memory", action="store_true", default=None,
                   help="measure peak memory in a separate process (default: on, off with --quick)")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory measurement")
    p.add_argument("--repeats", type=int, default=None, help="most timed rounds per comparison (default 100; 5 quick)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per contender first (default 3; 2 quick)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds per comparison after which no more rounds are added (default 3; 0.4 quick)")
    p.add_argument("--threads", type=int, default=None, help="torch (and kernel) threads (default: torch's)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", default="out/bench", help="folder for bench.csv, bench.json, bench.png")
    p.add_argument("--no-plot", action="store_true", help="do not draw bench.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--no-pool", action="store_true",
                   help="switch the CPU kernels' output pool off (every output freshly allocated), to see its share")
    p.add_argument("--cold-start", action="store_true",
                   help="also measure the Numba kernels' compile cost in fresh processes (takes minutes)")
    p.set_defaults(func=run)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _config(args: argparse.Namespace):
    import torch

    from normlab.bench import FULL_SHAPES, QUICK_SHAPES, BenchConfig, parse_shape

    base = QUICK_SHAPES if args.quick else FULL_SHAPES
    shapes = []
    for item in _split(args.shapes) or ["tokens", "conv"]:
        if item in ("tokens", "conv"):
            shapes += [s for s in base if s.family == item]
        else:
            shapes.append(parse_shape(item))
    dtypes = []
    for item in _split(args.dtypes):
        if item not in _DTYPES:
            raise ValueError(f"unknown dtype {item!r}: choose from {', '.join(_DTYPES)}")
        dtypes.append(getattr(torch, _DTYPES[item]))
    modes = []
    for item in _split(args.modes):
        if item not in _MODES:
            raise ValueError(f"unknown mode {item!r}: choose from {', '.join(_MODES)}")
        modes.append(_MODES[item])
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") or (device == "cuda" and not torch.cuda.is_available()):
        choices = "cpu or cuda" if torch.cuda.is_available() else "cpu (no CUDA device here)"
        raise ValueError(f"--device {device!r} is not available: use {choices}")
    for name in ("repeats", "warmup"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be at least 1, got {value}")
    quick = args.quick
    return BenchConfig(
        shapes=tuple(shapes), dtypes=tuple(dtypes), modes=tuple(modes), only=tuple(_split(args.only)),
        compile=(not quick) if args.compile is None else args.compile,
        memory=(not quick) if args.memory is None else args.memory,
        warmup=args.warmup or (2 if quick else 3), repeats=args.repeats or (5 if quick else 100),
        min_repeats=min(3 if quick else 5, args.repeats or 100), budget_s=args.budget or (0.4 if quick else 3.0),
        device=device,
    )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table and the targets, write the files; 0 on success, 2 on bad options."""
    import torch

    try:
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be at least 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        config = _config(args)
    except ValueError as error:
        print(f"normlab bench: {error}", file=sys.stderr)
        return 2
    from normlab.bench import (
        check_targets,
        format_table,
        format_targets,
        run_bench,
        write_outputs,
    )
    from normlab.bench.report import format_compile_costs

    if args.no_pool:
        from normlab.kernels import buffers

        buffers.set_pool_limit(0)
    result = run_bench(config, progress=not args.no_progress)
    result.meta["output_pool"] = "off" if args.no_pool else "on"
    if not result.rows:
        print("normlab bench: nothing matched --only/--shapes; see 'normlab norms' for the names", file=sys.stderr)
        return 2
    meta = result.meta
    print(f"{meta['cpu']} · {meta['cpu_count']} CPUs · torch {meta['torch']} · {meta['torch_threads']} threads · "
          f"numba {meta['numba']} · device {meta['device']}")
    print(f"load average before/after: {meta['load_before'][0]:.2f} / {meta['load_after'][0]:.2f}"
          f" · {meta['seconds']:.0f} s · kernel output pool {meta['output_pool']}"
          f" · OMP_WAIT_POLICY {meta['omp_wait_policy']}")
    print(format_table(result))
    print(format_compile_costs(result))
    print(format_targets(check_targets(result.rows)))
    if args.quick:
        print("quick run: few rounds at a smaller token shape, so these ratios are rough; "
              "the targets are judged on a full run ('normlab bench')")
    if args.cold_start:
        from normlab.bench.coldstart import format_cold_start, measure_cold_start

        meta["cold_start"] = measure_cold_start()
        print(format_cold_start(meta["cold_start"]))
    paths = write_outputs(result, Path(args.out), plot=not args.no_plot)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
