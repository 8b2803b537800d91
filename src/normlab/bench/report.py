"""What ``normlab bench`` writes: a compact fixed-width table, CSV, JSON, a plot, and the check of the targets.

The targets (issue 8), each a ratio taken within one run, forward+backward unless said (:data:`TARGETS` names them):

- RMSNorm ≥ 1.15× faster than torch.nn.LayerNorm, each token shape and dtype;
- every normlab norm ≥ 1.0× its torch.nn counterpart, each shape and dtype;
- LayerNorm and RMSNorm forward ≥ 50 % of the copy bandwidth at 8192×1024 fp32;
- fused residual-add + norm ≥ 1.3× the unfused pair;
- GroupNorm and InstanceNorm on channels_last ≥ 1.5× torch.nn, output channels_last (forward and backward runs).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from normlab.bench.engine import BenchResult, BenchRow

_SHORT_MODE = {"forward": "fwd", "forward+backward": "fwd+bwd"}


@dataclass(frozen=True)
class TargetCheck:
    target: str
    where: str
    value: float | None
    threshold: float
    met: bool


def _groups(rows: list[BenchRow]) -> dict[tuple, dict[str, BenchRow]]:
    """(norm, shape, dtype, mode) → {impl: row}, in run order."""
    groups: dict[tuple, dict[str, BenchRow]] = defaultdict(dict)
    for row in rows:
        groups[(row.norm, row.shape, row.dtype, row.mode)][row.impl] = row
    return groups


def _ratio(slow: BenchRow | None, fast: BenchRow | None) -> float | None:
    if slow is None or fast is None or slow.median_ms is None or fast.median_ms is None:
        return None
    return slow.median_ms / fast.median_ms


TARGETS = {
    "RMSNorm ≥1.15× torch LayerNorm": "rms_norm and layer_norm forward+backward at one shape",
    "forward ≥50% of copy": "layer_norm or rms_norm forward at 8192x1024 fp32",
    "vs-torch ≥1.0×": "a norm with a torch.nn counterpart, forward+backward",
    "fused ≥1.3× unfused": "add_layer_norm or add_rms_norm forward+backward",
    "channels-last ≥1.5× torch.nn": "group_norm or instance_norm on an nhwc shape, forward+backward",
}
"""Every target's name, and the rows a run needs to judge it (a ``--quick`` or ``--only`` run may lack them)."""


def check_targets(rows: list[BenchRow]) -> list[TargetCheck]:
    """Evaluate each target on the rows of one run. A target with nothing to judge in this run has no check
    (:func:`format_targets` says so); a judged case where either contender failed is a check not met."""
    groups = _groups(rows)
    checks: list[TargetCheck] = []

    def add(target, where, value, threshold, extra=True):
        assert target in TARGETS, target
        checks.append(TargetCheck(target, where, value, threshold, value is not None and value >= threshold and extra))

    for (norm, shape, dtype, mode), impls in groups.items():
        where = f"{norm} {shape} {dtype} {_SHORT_MODE[mode]}"
        ours = impls.get("normlab")
        if mode == "forward+backward" and "torch.nn" in impls:
            add("vs-torch ≥1.0×", where, _ratio(impls["torch.nn"], ours), 1.0)
        if mode == "forward+backward" and "unfused" in impls:
            add("fused ≥1.3× unfused", where, _ratio(impls["unfused"], ours), 1.3)
        if norm in ("group_norm", "instance_norm") and shape.endswith("nhwc") and mode == "forward+backward":
            forward = groups.get((norm, shape, dtype, "forward"), {}).get("normlab")
            layouts = [row.channels_last_out for row in (ours, forward) if row is not None]
            add("channels-last ≥1.5× torch.nn", where, _ratio(impls.get("torch.nn"), ours), 1.5,
                ours is not None and all(layouts))
        if norm in ("layer_norm", "rms_norm") and shape == "8192x1024" and dtype == "fp32" and mode == "forward":
            add("forward ≥50% of copy", where, ours.pct_copy if ours else None, 50.0)
        if norm == "rms_norm" and mode == "forward+backward":
            torch_ln = groups.get(("layer_norm", shape, dtype, mode), {}).get("torch.nn")
            if torch_ln is not None:
                add("RMSNorm ≥1.15× torch LayerNorm", f"{shape} {dtype} fwd+bwd", _ratio(torch_ln, ours), 1.15)
    return checks


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(result: BenchResult) -> str:
    """One fixed-width line per (norm, shape, dtype, mode): times, speed-ups, bandwidth, memory."""
    header = (
        f"{'norm':<20} {'shape':<19} {'dtype':<5} {'mode':<7} {'normlab':>8} {'torch.nn':>8} {'compile':>8} "
        f"{'unfused':>8} {'x torch':>7} {'x comp':>7} {'x unf':>6} {'GB/s':>6} {'%copy':>6} {'MiB nl/t':>11} {'CL':>2}"
    )
    lines = [header, "-" * len(header)]
    for (norm, shape, dtype, mode), impls in _groups(result.rows).items():
        ours = impls.get("normlab")
        theirs, compiled, unfused = impls.get("torch.nn"), impls.get("torch.compile"), impls.get("unfused")

        def ms(row):
            return _fmt(row.median_ms if row else None, "8.2f")

        compile_text = "failed" if compiled is not None and compiled.status != "ok" else ms(compiled)
        memory = f"{_fmt(ours.peak_mib if ours else None, '.0f')}/{_fmt(theirs.peak_mib if theirs else None, '.0f')}"
        cl = "" if ours is None or ours.channels_last_out is None else ("y" if ours.channels_last_out else "N")
        lines.append(
            f"{norm:<20} {shape:<19} {dtype:<5} {_SHORT_MODE[mode]:<7} {ms(ours):>8} {ms(theirs):>8} "
            f"{compile_text:>8} {ms(unfused):>8} "
            f"{_fmt(_ratio(theirs, ours), '7.2f'):>7} {_fmt(_ratio(compiled, ours), '7.2f'):>7} "
            f"{_fmt(_ratio(unfused, ours), '6.2f'):>6} {_fmt(ours.gbps if ours else None, '6.1f'):>6} "
            f"{_fmt(ours.pct_copy if ours else None, '5.0f'):>5}% {memory:>11} {cl:>2}"
        )
    return "\n".join(lines)


def format_targets(checks: list[TargetCheck]) -> str:
    """The count met, one line per target (met of judged, and the lowest value), and every check not met."""
    met = sum(c.met for c in checks)
    lines = [f"targets met: {met}/{len(checks)}"]
    for target, needs in TARGETS.items():
        judged = [c for c in checks if c.target == target]
        if not judged:
            lines.append(f"  {target:<32} not judged in this run (needs {needs})")
            continue
        valued = [c for c in judged if c.value is not None]
        lowest = min(valued, key=lambda c: c.value / c.threshold, default=None)
        text = f"lowest {lowest.value:.2f} ({lowest.where})" if lowest else ""
        if len(valued) < len(judged):
            text += f"{'; ' if text else ''}{len(judged) - len(valued)} without a value (a contender failed)"
        lines.append(f"  {target:<32} {sum(c.met for c in judged)}/{len(judged)}  {text}")
    for c in checks:
        if not c.met:
            ratio_met = c.value is not None and c.value >= c.threshold  # then only the layout condition failed
            why = "the output was not channels_last" if ratio_met else f"needs ≥ {c.threshold}"
            lines.append(f"  NOT MET  {c.target:<32} {c.where:<40} {_fmt(c.value, '.2f')} ({why})")
    return "\n".join(lines)


def format_compile_costs(result: BenchResult) -> str:
    costs = [r for r in result.rows if r.impl == "torch.compile"]
    if not costs:
        return "torch.compile: not run"
    ok = [r.compile_s for r in costs if r.compile_s is not None]
    failed = [r for r in costs if r.status != "ok"]
    text = f"torch.compile first-call (compile) cost: {len(ok)} compiles"
    if ok:
        text += f", median {sorted(ok)[len(ok) // 2]:.1f} s, max {max(ok):.1f} s"
    if failed:
        text += f"; {len(failed)} failed, e.g. {failed[0].status}"
    return text


def write_outputs(result: BenchResult, out_dir: Path, plot: bool = True) -> list[Path]:
    """Write ``bench.csv``, ``bench.json`` (rows, metadata, target checks) and ``bench.png``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "bench.csv", out_dir / "bench.json"]
    rows = [asdict(r) for r in result.rows]
    with open(paths[0], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["norm"])
        writer.writeheader()
        writer.writerows(rows)
    payload = result.as_dict()
    payload["targets"] = [asdict(c) for c in check_targets(result.rows)]
    paths[1].write_text(json.dumps(payload, indent=1, default=str))
    if plot and rows:
        paths.append(plot_speedups(result, out_dir / "bench.png"))
    return paths


def plot_speedups(result: BenchResult, path: Path) -> Path:
    """Horizontal bars: normlab's speed-up over torch.nn (forward and forward+backward) per norm, shape, dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, forward, both = [], [], []
    per_case: dict[tuple, dict[str, float | None]] = defaultdict(dict)
    for (norm, shape, dtype, mode), impls in _groups(result.rows).items():
        baseline = impls.get("torch.nn")
        if baseline is not None:
            per_case[(norm, shape, dtype)][mode] = _ratio(baseline, impls.get("normlab"))
    for (norm, shape, dtype), ratios in per_case.items():
        labels.append(f"{norm} {shape} {dtype}")
        forward.append(ratios.get("forward") or 0.0)
        both.append(ratios.get("forward+backward") or 0.0)
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(labels) + 1.5))
    ys = range(len(labels))
    ax.barh([y + 0.2 for y in ys], forward, height=0.4, label="forward")
    ax.barh([y - 0.2 for y in ys], both, height=0.4, label="forward+backward")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(list(ys), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up of normlab over torch.nn (median time ratio, log scale)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
