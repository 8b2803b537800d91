"""``normlab bench``: the engine on tiny shapes, the traffic formula, the target checks, the outputs and the CLI."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest
import torch

from normlab.bench import (
    BenchConfig,
    BenchRow,
    Shape,
    bench_norms,
    check_targets,
    format_table,
    format_targets,
    parse_shape,
)
from normlab.bench.engine import BenchResult, run_bench
from normlab.bench.report import TARGETS, write_outputs
from normlab.bench.timing import balanced_orders, time_interleaved
from normlab.cli import main

TINY = {"dtypes": (torch.float32,), "compile": False, "memory": False, "warmup": 1, "repeats": 2, "min_repeats": 2,
        "budget_s": 0.0}

SHAPES = {
    "8192x1024": Shape((8192, 1024), "rows"),
    "32x64x32x32": Shape((32, 64, 32, 32), "nchw"),
    "32x64x32x32:nhwc": Shape((32, 64, 32, 32), "nhwc"),
}


@pytest.mark.parametrize("text,shape", SHAPES.items(), ids=SHAPES.keys())
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["8192", "8x1024x:nhwc", "axb", "2x3x4:nhwc"])
def test_parse_shape_rejects_bad_text_with_the_fix(text):
    with pytest.raises(ValueError, match="8192x1024"):
        parse_shape(text)


# (norm, backward) → elements moved per input element: inputs + outputs, plus x, output grads and input grad
TRAFFIC = {("layer_norm", False): 2, ("layer_norm", True): 5, ("add_rms_norm", False): 4, ("add_rms_norm", True): 8}


@pytest.mark.parametrize("key,elements", TRAFFIC.items(), ids=[f"{n}-{b}" for n, b in TRAFFIC])
def test_minimum_traffic(key, elements):
    name, backward = key
    norm = next(n for n in bench_norms() if n.name == name)
    assert norm.traffic(1000, 2, backward) == elements * 1000 * 2


def test_every_registry_activation_norm_is_benchmarked():
    from normlab import list_norms

    names = {n.name for n in bench_norms()}
    assert set(list_norms("activation")) <= names and {"add_layer_norm", "add_rms_norm"} <= names


def test_engine_times_each_contender_beside_a_copy():
    config = BenchConfig(shapes=(Shape((4, 16, 8, 8), "nhwc"),), only=("group_norm",), **TINY)
    rows = run_bench(config, progress=False).rows
    assert {(r.impl, r.mode) for r in rows} == {
        (impl, mode) for impl in ("normlab", "torch.nn") for mode in ("forward", "forward+backward")
    }
    for row in rows:
        assert row.status == "ok" and row.median_ms > 0 and row.runs == 2
        assert row.pct_copy == pytest.approx(100 * row.gbps / row.copy_gbps)
    assert all(r.channels_last_out for r in rows if r.impl == "normlab")


def test_failed_torch_compile_is_recorded_not_raised(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    config = BenchConfig(shapes=(Shape((8, 32), "rows"),), only=("rms_norm",), modes=("forward",),
                         **{**TINY, "compile": True, "dtypes": (torch.float32,)})
    result = run_bench(config, progress=False)
    compiled = [r for r in result.rows if r.impl == "torch.compile"]
    assert compiled and all(r.status.startswith("failed: RuntimeError: no C++ compiler") for r in compiled)
    assert "failed" in format_table(result)


def _row(norm, impl, ms, shape="8192x1024", dtype="fp32", mode="forward+backward", **extra):
    return BenchRow(norm, "tokens", shape, "rows", dtype, mode, impl, impl, median_ms=ms, **extra)


def test_target_checks_on_known_ratios():
    rows = [
        _row("layer_norm", "normlab", 2.0), _row("layer_norm", "torch.nn", 4.0),
        _row("rms_norm", "normlab", 3.6), _row("rms_norm", "torch.nn", 3.0),  # 0.83x torch RMSNorm: not met
        _row("add_rms_norm", "normlab", 10.0), _row("add_rms_norm", "unfused", 12.0),  # 1.2x unfused: not met
        _row("layer_norm", "normlab", 1.0, mode="forward", pct_copy=60.0),
        _row("group_norm", "normlab", 1.0, shape="32x64x32x32 nhwc", channels_last_out=False),
        _row("group_norm", "torch.nn", 2.0, shape="32x64x32x32 nhwc"),  # 2x but not channels_last: not met
    ]
    checks = {(c.target.split()[0], c.where): c for c in check_targets(rows)}
    assert checks[("vs-torch", "layer_norm 8192x1024 fp32 fwd+bwd")].met
    assert not checks[("vs-torch", "rms_norm 8192x1024 fp32 fwd+bwd")].met
    assert checks[("RMSNorm", "8192x1024 fp32 fwd+bwd")].value == pytest.approx(4.0 / 3.6)  # vs torch LayerNorm
    assert not checks[("fused", "add_rms_norm 8192x1024 fp32 fwd+bwd")].met
    assert checks[("forward", "layer_norm 8192x1024 fp32 fwd")].met
    assert not checks[("channels-last", "group_norm 32x64x32x32 nhwc fp32 fwd+bwd")].met


CHANNELS_LAST_OUTPUTS = {  # (forward's output channels_last, forward+backward's) -> the target met at 3x torch.nn
    "both": ((True, True), True),
    "forward lost it": ((False, True), False),
    "backward run lost it": ((True, False), False),
    "no forward row": ((None, True), True),
}


@pytest.mark.parametrize("layouts, met", CHANNELS_LAST_OUTPUTS.values(), ids=CHANNELS_LAST_OUTPUTS.keys())
def test_channels_last_target_needs_every_output_channels_last(layouts, met):
    forward, both = layouts
    shape = "32x64x32x32 nhwc"
    rows = [_row("instance_norm", "normlab", 1.0, shape=shape, channels_last_out=both),
            _row("instance_norm", "torch.nn", 3.0, shape=shape)]
    if forward is not None:
        rows.append(_row("instance_norm", "normlab", 0.5, shape=shape, mode="forward", channels_last_out=forward))
    (check,) = [c for c in check_targets(rows) if c.target.startswith("channels-last")]
    assert check.met is met
    assert ("the output was not channels_last" in format_targets([check])) is not met


def test_target_summary_names_every_target_and_the_ones_this_run_could_not_judge():
    rows = [_row("rms_norm", "normlab", 3.0), _row("rms_norm", "torch.nn", 9.0),
            _row("layer_norm", "torch.nn", 6.0), _row("layer_norm", "normlab", 7.0)]  # 0.86x torch: not met
    lines = format_targets(check_targets(rows)).splitlines()
    assert lines[0] == "targets met: 2/3"
    summary = {target: next(line for line in lines[1:] if line.strip().startswith(target)) for target in TARGETS}
    assert "2.00 (8192x1024 fp32 fwd+bwd)" in summary["RMSNorm ≥1.15× torch LayerNorm"]  # 6.0 / 3.0
    assert "1/2  lowest 0.86 (layer_norm 8192x1024 fp32 fwd+bwd)" in summary["vs-torch ≥1.0×"]
    for target in ("forward ≥50% of copy", "fused ≥1.3× unfused", "channels-last ≥1.5× torch.nn"):
        assert "not judged in this run" in summary[target]
    assert [line.split()[2] for line in lines if "NOT MET" in line] == ["vs-torch"]


def test_rms_target_is_not_judged_without_torch_layer_norm_beside_it():
    rows = [_row("rms_norm", "normlab", 3.0), _row("rms_norm", "torch.nn", 9.0)]
    assert [c.target for c in check_targets(rows)] == ["vs-torch ≥1.0×"]


def test_outputs_are_written(tmp_path):
    result = BenchResult([_row("layer_norm", "normlab", 2.0), _row("layer_norm", "torch.nn", 4.0)], {"cpu": "x"})
    paths = write_outputs(result, tmp_path, plot=True)
    assert [p.name for p in paths] == ["bench.csv", "bench.json", "bench.png"]
    data = json.loads(paths[1].read_text())
    assert data["rows"][0]["median_ms"] == 2.0 and data["targets"][0]["met"] is True
    assert paths[0].read_text().splitlines()[0].startswith("norm,family,shape")


def test_interleaved_timing_runs_every_function_the_same_number_of_times():
    calls = {"a": 0, "b": 0}

    def bump(name):
        calls[name] += 1

    timings = time_interleaved({"a": lambda: bump("a"), "b": lambda: bump("b")}, device=torch.device("cpu"),
                               warmup=2, repeats=6, min_repeats=6)
    assert calls == {"a": 8, "b": 8} and timings["a"].runs == timings["b"].runs == 6


@pytest.mark.parametrize("n", range(1, 9))
def test_balanced_orders_let_each_item_follow_every_other_equally_often(n):
    orders = balanced_orders(n)
    assert all(sorted(order) == list(range(n)) for order in orders)
    follows = Counter((a, b) for order in orders for a, b in itertools.pairwise(order))
    assert set(follows) == {(a, b) for a in range(n) for b in range(n) if a != b}
    assert len(set(follows.values())) <= 1, f"unequal: {follows}"


def test_interleaved_timing_gives_no_function_a_fixed_predecessor():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
    time_interleaved(fns, device=torch.device("cpu"), warmup=0, repeats=8, budget_s=100)
    follows = Counter(itertools.pairwise(calls))
    for a, b in itertools.permutations("abcd", 2):  # a plain rotation would give "a" the predecessor "d" only
        assert follows[(a, b)] >= 2, f"{b} followed {a} {follows[(a, b)]} times in 8 rounds"


def test_a_calls_reset_runs_before_each_call_but_outside_the_clock(monkeypatch):
    """A fake clock that only the reset and the call move: the timing must see the call's second alone."""
    from normlab.bench import timing

    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    order = []

    def reset():
        order.append("reset")
        now[0] += 100.0

    def run():
        order.append("run")
        now[0] += 1.0

    timings = time_interleaved({"a": timing.ResetCall(run, reset)}, device=torch.device("cpu"), warmup=1,
                               repeats=3, min_repeats=3, budget_s=1e9)
    assert timings["a"].median == timings["a"].minimum == 1.0
    assert order == ["reset", "run"] * 4


def test_peak_memory_counts_the_outputs_of_each_contender():
    """Measured in a fresh process: a 2 MiB output must be counted, and the fused op saves one gradient."""
    from normlab.bench.memory import measure_in_subprocess

    config = BenchConfig(shapes=(Shape((512, 1024), "rows"),), only=("layer_norm",), **TINY)
    peaks, method = measure_in_subprocess(config)
    if "glibc" not in method:
        pytest.skip(f"no exact resident-set accounting on this platform ({method})")

    def peak(norm, impl, mode):
        return peaks[(norm, "512x1024", "fp32", mode, impl)]

    for impl in ("normlab", "torch.nn"):
        assert peak("layer_norm", impl, "forward") >= 2.0  # y: 512 x 1024 float32
        assert peak("layer_norm", impl, "forward+backward") >= 4.0  # y and the input gradient
    assert peak("add_layer_norm", "normlab", "forward") >= 4.0  # y and s
    assert peak("add_layer_norm", "normlab", "forward+backward") < peak("add_layer_norm", "unfused",
                                                                        "forward+backward")


def test_cli_writes_table_and_files(tmp_path, capsys):
    code = main(["bench", "--quick", "--only", "rms_norm", "--shapes", "64x32", "--dtypes", "fp32",
                 "--modes", "fwd", "--no-memory", "--repeats", "2", "--warmup", "1", "--no-progress", "--no-plot",
                 "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "rms_norm" in out and "targets met" in out and (tmp_path / "bench.json").exists()
    assert "not judged in this run" in out and "the targets are judged on a full run" in out


BAD_OPTIONS = {
    "dtype": (["--dtypes", "fp8"], "unknown dtype 'fp8'"),
    "shape": (["--shapes", "12"], "bad shape"),
    "mode": (["--modes", "bwd"], "unknown mode"),
    "nothing matched": (["--only", "no_such_norm"], "nothing matched"),
    "threads": (["--threads", "0"], "--threads must be at least 1"),
}


@pytest.mark.parametrize("options,message", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_cli_rejects_bad_options_with_exit_code_2(options, message, capsys, tmp_path):
    code = main(["bench", "--quick", "--no-progress", "--out", str(tmp_path), *options])
    assert code == 2 and message in capsys.readouterr().err
