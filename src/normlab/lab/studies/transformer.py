"""Study ``transformer``: do Transformers need LayerNorm or RMSNorm, and is RMSNorm cheaper?

Claims (Ba et al. 2016; Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture"; Zhang &
Sennrich 2019, "Root Mean Square Layer Normalization", arXiv:1910.07467; Zhu et al. 2025, "Transformers without
Normalization", arXiv:2503.10622, for DynamicTanh):

1. Without normalization the Transformer trains worse: pre-norm LayerNorm reaches a lower validation loss.
2. RMSNorm matches LayerNorm's validation loss (within ±0.05 nats per character).
3. RMSNorm is cheaper: training processes more tokens per second than with LayerNorm.

Protocol: the character Transformer on Tiny Shakespeare with LayerNorm, RMSNorm and DynamicTanh, each pre-norm
and post-norm, and with no normalization, once per seed (AdamW). Validation loss per epoch and training
throughput (tokens per second, the median over epochs) are logged by the trainer. The ``smoke`` profile trains on
a generated text (``studies/transformer/synthetic-text/input.txt``) instead of Tiny Shakespeare.

Rules (95% intervals over seeds): 1. Welch interval of ``loss(none) − loss(LN)`` (pre-norm) above 0;
2. Welch interval of ``loss(RMS) − loss(LN)`` (pre-norm) inside ±0.05; 3. bootstrap interval of
``tokens/s(RMS) / tokens/s(LN) − 1`` (pre-norm) above 0. Throughput depends on what else the machine runs: the
runs of one study share its load, but a busy machine widens the interval.
"""
from __future__ import annotations

import random
import statistics
from typing import Any

from .common import cell, curves_by, text_setup
from .framework import PlannedRun, Study, StudyContext, StudyOutput
from .results import Figure, Panel, RunData, RunSet, Series, Table
from .stats import bootstrap_interval, welch_interval
from .verdicts import exceeds, within

__all__ = ["TransformerStudy", "STUDY", "synthetic_text", "tokens_per_second"]

_LABELS = {"layer_norm": "LayerNorm", "rms_norm": "RMSNorm", "dynamic_tanh": "DynamicTanh", "none": "none"}
_ARMS = [("layer_norm", "pre"), ("rms_norm", "pre"), ("dynamic_tanh", "pre"), ("none", "pre"),
         ("layer_norm", "post"), ("rms_norm", "post"), ("dynamic_tanh", "post")]


def synthetic_text(num_chars: int = 60_000, seed: int = 0) -> str:
    """A deterministic made-up text (sentences of made-up words) for the smoke profile.

    Examples:
        >>> text = synthetic_text(200)
        >>> len(text), text == synthetic_text(200)
        (200, True)
    """
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "pe", "da", "zo", "fi"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(200)]
    out: list[str] = []
    length = 0
    while length < num_chars:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))).capitalize() + ".\n"
        out.append(sentence)
        length += len(sentence)
    return "".join(out)[:num_chars]


def tokens_per_second(run: RunData) -> float:
    """Median training throughput over the run's epochs, in characters (tokens) per second."""
    rates = [row["samples_per_s"] for row in run.history if isinstance(row.get("samples_per_s"), (int, float))]
    block = int(run.config.get("block_size", 1))
    return statistics.median(rates) * block if rates else float("nan")


def _settings(profile: str, **overrides: Any) -> dict[str, Any]:
    return {"base": {**text_setup(profile), **overrides}, "arms": [list(a) for a in _ARMS],
            "equivalence_margin_nats": 0.05}


def _ratio_minus_one(a: Any, b: Any) -> float:
    return float(a.mean() / b.mean() - 1.0)


class TransformerStudy(Study):
    name = "transformer"
    version = 1
    title = "Transformers: LayerNorm, RMSNorm, DynamicTanh or nothing, pre- and post-norm"
    summary = ("A character Transformer on Tiny Shakespeare with each normalization, pre- and post-norm: validation "
               "loss per epoch and training throughput.")
    claims = ("Without normalization the Transformer reaches a higher validation loss than with pre-norm LayerNorm",
              "RMSNorm matches LayerNorm's validation loss (within ±0.05 nats per character)",
              "RMSNorm trains faster than LayerNorm (tokens per second)")
    needs = ("text",)
    settings = {"smoke": _settings("smoke"), "quick": _settings("quick"), "paper": _settings("paper")}

    def plan(self, ctx: StudyContext) -> list[PlannedRun]:
        if ctx.profile.text_data == "synthetic":
            folder = ctx.folder / "synthetic-text"
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "input.txt").is_file():
                (folder / "input.txt").write_text(synthetic_text(), encoding="utf-8")
            ctx.data_dir = folder
            ctx.data["text"] = f"synthetic text: {len(synthetic_text()):,} characters of made-up words ({folder})"
        planned = []  # seed-major order: each arm's runs are spread over the sweep, so load affects arms alike
        for seed in ctx.seeds:
            for norm, placement in ctx.settings["arms"]:
                config = {**ctx.settings["base"], "norm": norm, "norm_placement": placement, "seed": seed}
                planned.append(PlannedRun({"norm": norm, "placement": placement, "seed": seed}, config))
        return planned

    def analyze(self, ctx: StudyContext, runs: RunSet) -> StudyOutput:
        s, out = ctx.settings, StudyOutput()
        panels, rows = [], []
        for placement in ("pre", "post"):
            series = []
            for norm, where in s["arms"]:
                if where == placement:
                    epochs, mean, std = curves_by(runs, "test_loss", norm=norm, placement=placement)
                    series.append(Series(_LABELS[norm], epochs, mean, std))
            panels.append(Panel(f"{placement}-norm", "epoch", "validation loss (nats / char)", series))
        out.figures.append(Figure("loss", "Validation loss per epoch", panels,
                                  caption=f"mean ± std over {len(ctx.seeds)} seeds; 'none' is in the pre-norm panel",
                                  run_ids=runs.ids()))
        speed = []
        for norm, placement in s["arms"]:
            chosen = sorted(runs.select(norm=norm, placement=placement).finished(), key=lambda r: r.labels["seed"])
            rates = [tokens_per_second(r) for r in chosen]
            rows.append([_LABELS[norm], placement, cell([r.metric("test_loss") for r in chosen], 3),
                         cell([r.metric("test_bpc") for r in chosen], 3), cell(rates, 0),
                         sum(r.metric("diverged") == 1.0 for r in chosen)])
            if placement == "pre":
                speed.append(Series(_LABELS[norm], [float(len(speed))] * len(rates), rates, line=False))
        out.tables.append(Table("summary", "Final validation loss and training throughput",
                                ["normalization", "placement", "val loss (nats/char)", "val bits/char",
                                 "tokens/s (training)", "diverged runs"], rows,
                                caption="mean ± std over seeds; throughput is the median over epochs of each run",
                                run_ids=runs.ids()))
        names = [series.label for series in speed]
        out.figures.append(Figure("throughput", "Training throughput, pre-norm (one point per run)",
                                  [Panel("", "normalization", "tokens per second", speed,
                                         x_ticks=[float(i) for i in range(len(names))], x_tick_labels=names)],
                                  run_ids=runs.select(placement="pre").ids()))

        def loss(norm: str) -> list[float]:
            return runs.values("test_loss", norm=norm, placement="pre")

        out.verdicts.append(exceeds(self.claims[0], welch_interval(loss("none"), loss("layer_norm"),
                                                                   name="loss(none) − loss(LN), pre-norm",
                                                                   units="nats"), 0.0))
        rms_vs_ln = welch_interval(loss("rms_norm"), loss("layer_norm"), name="loss(RMS) − loss(LN), pre-norm",
                                   units="nats")
        out.verdicts.append(within(self.claims[1], rms_vs_ln, s["equivalence_margin_nats"]))
        rates = {norm: [tokens_per_second(r) for r in runs.select(norm=norm, placement="pre").finished()]
                 for norm in ("rms_norm", "layer_norm")}
        out.verdicts.append(exceeds(self.claims[2], bootstrap_interval(
            rates["rms_norm"], rates["layer_norm"], _ratio_minus_one,
            name="tokens/s(RMS) / tokens/s(LN) − 1, pre-norm"), 0.0))
        return out


STUDY = TransformerStudy
