"""Study ``speed``: the comparison table of normalizations, with its cost and memory columns measured.

The usual comparison table (which axes a norm reduces over, whether it depends on the batch, what it costs, how
much memory it needs, where it is best used) is filled here by measurement wherever a measurement exists:

* axes, batch dependency, train/eval difference, parameters and buffers — probed on each layer by
  :func:`normlab.comparison.compare_norms`;
* cost (median forward+backward time) and peak memory — measured by ``normlab bench``
  (:func:`normlab.bench.run_bench`), repeated in independent rounds (one per profile seed) so each number
  carries a spread;
* "best use" — the literature's recommendation, labelled as such (it is advice, not a measurement).

Claim tested (Zhang & Sennrich 2019, arXiv:1910.07467): RMSNorm is cheaper than LayerNorm. Rule: per round,
``r = time(LayerNorm) / time(RMSNorm)`` (normlab's layers, forward+backward, the token shape); supported when the
95% t interval of ``r − 1`` over rounds lies above 0, not supported when it lies below. Each round is cached in
``studies/speed/cache/``; timings depend on the machine and its load, which the result records.
"""
from __future__ import annotations

from typing import Any

from .common import cell, mean_of
from .framework import Study, StudyContext, StudyOutput
from .results import RunSet, Table
from .stats import paired_interval
from .verdicts import exceeds, inconclusive

__all__ = ["SpeedStudy", "STUDY", "BEST_USE"]

BEST_USE = {
    "batch_norm": "CNNs trained with ≥ 16 samples per device (Ioffe & Szegedy 2015)",
    "layer_norm": "Transformers and RNNs, any batch size (Ba et al. 2016)",
    "layer_norm_2d": "ConvNeXt-style conv nets: LN over channels per position (Liu et al. 2022)",
    "group_norm": "CNNs with small batches: detection, segmentation, video (Wu & He 2018)",
    "instance_norm": "style transfer and image generation (Ulyanov et al. 2016)",
    "rms_norm": "large Transformers: LN without centring (Zhang & Sennrich 2019)",
    "batch_renorm": "small or non-i.i.d. batches where BN is wanted (Ioffe 2017)",
    "ghost_batch_norm": "large-batch training: BN statistics over small virtual batches (Hoffer et al. 2017)",
    "filter_response_norm": "batch-independent CNNs, with its TLU activation (Singh & Krishnan 2020)",
    "scale_norm": "Transformers: one learned scale on the l2-normalized vector (Nguyen & Salazar 2019)",
    "dynamic_tanh": "normalization-free Transformers: tanh(αx) (Zhu et al. 2025)",
}


def _settings(shapes: list[str], repeats: int, budget_s: float, device: str, compile_: bool) -> dict[str, Any]:
    return {"shapes": shapes, "dtype": "float32", "mode": "forward+backward", "repeats": repeats,
            "budget_s": budget_s, "device": device, "compile": compile_, "norms": sorted(BEST_USE)}


def bench_round(ctx: StudyContext, round_index: int) -> list[dict[str, Any]]:
    """One independent ``normlab bench`` round over the study's norms and shapes (cached)."""
    s = ctx.settings
    key = {"round": round_index, **s, "version": 1}

    def compute() -> list[dict[str, Any]]:
        import dataclasses

        import torch

        from normlab.bench import BenchConfig, parse_shape, run_bench

        device = s["device"] if s["device"] != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        config = BenchConfig(shapes=tuple(parse_shape(x) for x in s["shapes"]), dtypes=(getattr(torch, s["dtype"]),),
                             modes=(s["mode"],), only=tuple(s["norms"]), compile=s["compile"], memory=True,
                             warmup=2, repeats=s["repeats"], min_repeats=min(5, s["repeats"]),
                             budget_s=s["budget_s"], device=device, seed=round_index)
        result = run_bench(config, progress=False)
        return [dataclasses.asdict(row) for row in result.rows]

    return ctx.cached("bench", key, compute)


class SpeedStudy(Study):
    name = "speed"
    version = 1
    title = "Speed and memory: the comparison table of normalizations, measured"
    summary = ("Which axes each normalization reduces over, whether it depends on the batch, and its measured cost "
               "and peak memory (normlab bench), beside the literature's advice on where each is best used.")
    claims = ("RMSNorm is cheaper than LayerNorm (forward + backward)",)
    settings = {"smoke": _settings(["256x64", "4x16x8x8"], 3, 0.02, "cpu", False),
                "quick": _settings(["2048x1024", "8x64x32x32"], 25, 1.0, "cpu", False),
                "paper": _settings(["8192x1024", "32x64x32x32"], 50, 3.0, "auto", True)}

    def analyze(self, ctx: StudyContext, runs: RunSet) -> StudyOutput:
        from normlab.comparison import compare_norms

        s, out = ctx.settings, StudyOutput()
        rounds = []
        for index, _ in enumerate(ctx.seeds):
            ctx.log(f"[speed] bench round {index + 1}/{len(ctx.seeds)}")
            rounds.append(bench_round(ctx, index))
        times: dict[tuple[str, str], list[float]] = {}
        memory: dict[tuple[str, str], list[float]] = {}
        shapes: dict[str, str] = {}
        for rows in rounds:
            for row in rows:
                if row["status"] != "ok" or row["median_ms"] is None:
                    continue
                times.setdefault((row["norm"], row["impl"]), []).append(row["median_ms"])
                if row.get("peak_mib") is not None:
                    memory.setdefault((row["norm"], row["impl"]), []).append(row["peak_mib"])
                shapes[row["norm"]] = row["shape"]
        probes = {p.name: p for p in compare_norms()}
        table = []
        for name in s["norms"]:
            probe = probes.get(name)
            ours, theirs = times.get((name, "normlab"), []), times.get((name, "torch.nn"), [])
            ratio = [a / b for a, b in zip(ours, theirs)] if theirs else []
            table.append([name, probe.reduces_over if probe else "—", _yes(probe and probe.batch_dependent),
                          _yes(probe and probe.train_eval_differ), probe.parameters if probe else "—",
                          shapes.get(name, "—"), cell(ours, 3), cell(ratio, 2) if ratio else "no torch.nn layer",
                          cell(memory.get((name, "normlab"), []), 2), BEST_USE[name]])
        out.tables.append(Table(
            "comparison", "The comparison table, measured",
            ["norm", "reduces over (N, C, H, W)", "batch-dependent", "train ≠ eval", "parameters (8 channels)",
             "bench shape",
             f"{s['mode']} time (ms)", "time / torch.nn", "peak memory (MiB)", "best use (literature, not measured)"],
            table, caption=f"{s['dtype']} on {s['device']}; time is the median over repeats within a round, shown as "
                           f"mean ± std over {len(rounds)} independent rounds; axes and batch dependency probed by "
                           "normlab.comparison"))
        ln, rms = times.get(("layer_norm", "normlab"), []), times.get(("rms_norm", "normlab"), [])
        if ln and rms and len(ln) == len(rms):
            ratios = [a / b for a, b in zip(ln, rms)]
            effect = paired_interval(ratios, [1.0] * len(ratios), name="time(LN) / time(RMS) − 1", units="")
            out.verdicts.append(exceeds(self.claims[0], effect, 0.0, ratio_mean=mean_of(ratios)))
        else:
            out.verdicts.append(inconclusive(self.claims[0], "supported if the interval of time(LN)/time(RMS) − 1 "
                                             "lies above 0", "the bench gave no timings for both layers"))
        return out


def _yes(value: Any) -> str:
    return "yes" if value else "no"


STUDY = SpeedStudy
