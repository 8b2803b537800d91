"""Study ``batch_size``: does BatchNorm break down at small batches while GroupNorm and LayerNorm do not?

Claim (Wu & He 2018, "Group Normalization", arXiv:1803.08494, Table 2 / Figure 1): BatchNorm's error rises
quickly as the batch per device shrinks, because the batch statistics become noisy estimates; GroupNorm and
LayerNorm compute statistics per sample and are unaffected.

Protocol, in the manner of Wu & He: BatchNorm, GroupNorm, LayerNorm (GroupNorm with one group), Batch Renorm,
Ghost BatchNorm (virtual batches of 16) and GroupNorm + Weight Standardization are trained at batch sizes 2, 4,
8, 16, 32 and 128 for the same number of epochs, with the linear scaling rule for the learning rate
(``lr = base_lr × batch / 32``, Goyal et al. 2017), once per seed. We report the test error against the batch
size, beside Wu & He's published ImageNet numbers — labelled as such, on a different data set, model and scale:
compare the shapes of the curves, not their levels.

Rules (per seed, the degradation is ``d = err(smallest batch) − err(32)``, in percentage points):

1. BatchNorm's error rises at small batches: Welch 95% interval of ``err_BN(2) − err_BN(32)`` lies above 1 point.
2. GroupNorm degrades less than BatchNorm: the interval of ``d_BN − d_GN`` lies above 0.
3. LayerNorm degrades less than BatchNorm: the interval of ``d_BN − d_LN`` lies above 0.
4. GroupNorm's error does not depend on the batch size: the interval of ``d_GN`` lies inside ±2 points.
"""
from __future__ import annotations

import math
from typing import Any

from .anchors import WU_HE_2018, WU_HE_BATCH_SIZES, wu_he_series
from .common import ARM_LABELS, NORM_ARMS, cell, image_setup, mean_of, plan_grid, std_of
from .framework import PlannedRun, Study, StudyContext, StudyOutput
from .results import Figure, Panel, RunSet, Series, Table
from .stats import welch_interval
from .verdicts import exceeds, within

__all__ = ["BatchSizeStudy", "STUDY", "scaled_lr"]

_NORMS = ["batch_norm", "group_norm", "layer_norm", "batch_renorm", "ghost_batch_norm", "gn_ws"]
REFERENCE_BATCH = 32


def scaled_lr(base_lr: float, batch_size: int, reference: int = REFERENCE_BATCH) -> float:
    """The linear scaling rule: ``base_lr × batch_size / reference``.

    Examples:
        >>> scaled_lr(0.05, 2), scaled_lr(0.05, 128)
        (0.003125, 0.2)
    """
    return base_lr * batch_size / reference


def _settings(profile: str, batch_sizes: list[int], **overrides: Any) -> dict[str, Any]:
    base = {**image_setup(profile), **overrides}
    return {"base": base, "norms": list(_NORMS), "batch_sizes": batch_sizes, "base_lr": base["lr"],
            "reference_batch": REFERENCE_BATCH, "rise_threshold_pt": 1.0, "stable_margin_pt": 2.0}


class BatchSizeStudy(Study):
    name = "batch_size"
    version = 1
    title = "Batch size: BatchNorm vs GroupNorm and LayerNorm from batch 2 to 128"
    summary = ("Test error against batch size with the linear learning-rate scaling rule, for BatchNorm and the "
               "batch-independent alternatives, beside Wu & He's (2018) published ImageNet numbers.")
    claims = ("BatchNorm's error rises at small batches (smallest batch vs 32)",
              "GroupNorm degrades less than BatchNorm as the batch shrinks",
              "LayerNorm degrades less than BatchNorm as the batch shrinks",
              "GroupNorm's error does not depend on the batch size (within ±2 points, smallest batch vs 32)")
    needs = ("images",)
    settings = {"smoke": _settings("smoke", [4, 32], train_subset=64),
                "quick": _settings("quick", [2, 4, 8, 16, 32, 128], epochs=2, train_subset=2048),
                "paper": _settings("paper", [2, 4, 8, 16, 32, 128], epochs=100, schedule="cosine")}

    def plan(self, ctx: StudyContext) -> list[PlannedRun]:
        s = ctx.settings
        planned = []
        for batch_size in s["batch_sizes"]:
            base = {**s["base"], "batch_size": batch_size, "lr": scaled_lr(s["base_lr"], batch_size)}
            planned += plan_grid(base, {n: NORM_ARMS[n] for n in s["norms"]}, ctx.seeds, arm_key="norm",
                                 batch_size=batch_size)
        return planned

    def analyze(self, ctx: StudyContext, runs: RunSet) -> StudyOutput:
        s, out = ctx.settings, StudyOutput()
        sizes = s["batch_sizes"]
        errors = {(norm, bs): [100.0 - 100.0 * v for v in runs.values("test_acc", norm=norm, batch_size=bs)]
                  for norm in s["norms"] for bs in sizes}
        series = []
        for norm in s["norms"]:
            means = [mean_of(errors[norm, bs]) for bs in sizes]
            stds = [std_of(errors[norm, bs]) for bs in sizes]
            series.append(Series(ARM_LABELS[norm], [float(b) for b in sizes], means, stds))
        out.figures.append(Figure(
            "error-vs-batch", "Test error vs batch size (ours) and Wu & He's published ImageNet curves",
            [Panel("ours: " + _data_name(s["base"]), "batch size per step", "test error (%)", series, x_log=True,
                   x_ticks=[float(b) for b in sizes]),
             Panel("published: Wu & He (2018), ResNet-50 on ImageNet", "batch size per GPU", "validation error (%)",
                   wu_he_series(), x_log=True, x_ticks=[float(b) for b in sorted(WU_HE_BATCH_SIZES)])],
            caption=f"left: mean ± std over {len(ctx.seeds)} seeds, learning rate {s['base_lr']:g} × batch / 32, "
                    f"{s['base']['epochs']} epoch(s) at every batch size; right: numbers published by Wu & He (2018), "
                    "not measured by normlab", run_ids=runs.ids()))
        rows = [[ARM_LABELS[norm]] + [cell(errors[norm, bs]) for bs in sizes] for norm in s["norms"]]
        out.tables.append(Table("errors", "Test error (%) by batch size", ["normalization"] + [str(b) for b in sizes],
                                rows, caption="mean ± std over seeds; learning rate scaled linearly with the batch",
                                run_ids=runs.ids()))
        out.anchors.append(WU_HE_2018)
        small, ref = min(sizes), (REFERENCE_BATCH if REFERENCE_BATCH in sizes else max(sizes))
        degradation = {norm: _paired_difference(runs, norm, small, ref) for norm in s["norms"]}
        if "batch_norm" in s["norms"]:
            effect = welch_interval(errors["batch_norm", small], errors["batch_norm", ref],
                                    name=f"err(BN, {small}) − err(BN, {ref})", units="pt")
            out.verdicts.append(exceeds(self.claims[0], effect, s["rise_threshold_pt"]))
        for index, (norm, short) in enumerate((("group_norm", "GN"), ("layer_norm", "LN")), start=1):
            if {"batch_norm", norm} <= set(s["norms"]):
                effect = welch_interval(degradation["batch_norm"], degradation[norm],
                                        name=f"degradation(BN) − degradation({short})", units="pt")
                out.verdicts.append(exceeds(self.claims[index], effect, 0.0,
                                            degradation=f"err({small}) − err({ref}) per seed"))
        if "group_norm" in s["norms"]:
            effect = welch_interval(errors["group_norm", small], errors["group_norm", ref],
                                    name=f"err(GN, {small}) − err(GN, {ref})", units="pt")
            out.verdicts.append(within(self.claims[3], effect, s["stable_margin_pt"]))
        return out


def _paired_difference(runs: RunSet, norm: str, small: int, ref: int) -> list[float]:
    """Per seed, error at the small batch minus error at the reference batch (seeds with both runs only)."""
    out = []
    for seed in sorted({r.labels["seed"] for r in runs.select(norm=norm)}):
        a, b = runs.values("test_acc", norm=norm, batch_size=small, seed=seed), \
            runs.values("test_acc", norm=norm, batch_size=ref, seed=seed)
        if a and b and math.isfinite(a[0]) and math.isfinite(b[0]):
            out.append(100.0 * (b[0] - a[0]))
    return out


def _data_name(base: dict[str, Any]) -> str:
    return "synthetic images" if base.get("dataset") == "synthetic" else f"{base.get('dataset', '').upper()}"

STUDY = BatchSizeStudy
