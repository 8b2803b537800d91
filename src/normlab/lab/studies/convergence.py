"""Study ``convergence``: does normalization speed up training, and does it allow higher learning rates?

Claims tested (Ioffe & Szegedy 2015, arXiv:1502.03167; Ba et al. 2016; Wu & He 2018; Santurkar et al. 2018):

1. BatchNorm, LayerNorm and GroupNorm each speed up convergence over no normalization.
2. Normalization allows higher learning rates: the largest rate that still trains is higher with BatchNorm.

Protocol: the same network is trained with each normalization — none, BatchNorm, LayerNorm (GroupNorm with one
group), GroupNorm, InstanceNorm, RMSNorm, Weight Norm, Weight Standardization + GroupNorm, FRN — once per seed;
test accuracy and training loss are logged every epoch. A second grid trains "none" and BatchNorm at a few learning
rates spaced by a constant factor.

Measures and rules (written here, applied by code):

* **convergence speed** = mean test accuracy over the epochs (the area under the accuracy curve divided by the
  number of epochs): a method that gets there sooner has a larger area. Effect: its difference to "none" in
  percentage points, Welch 95% interval; supported when the interval lies above 0, not supported when below.
* **epochs to target** (table only): the first epoch whose test accuracy reaches 80% of the best arm's mean final
  accuracy; runs that never reach it count as ``epochs + 1``.
* **a run trains** when it did not diverge and its final test accuracy is at least twice chance. The largest
  such rate per seed is compared between BatchNorm and "none" in grid steps (the log of the ratio to the base of
  the grid's spacing), paired by seed; supported when the interval lies above 0. With every seed agreeing the
  interval is a single point.
"""
from __future__ import annotations

import math
from typing import Any

from .common import ARM_LABELS, NORM_ARMS, cell, curves_by, image_setup, mean_of, pct, plan_grid, std_of
from .framework import PlannedRun, Study, StudyContext, StudyOutput
from .results import Figure, Panel, RunSet, Series, Table
from .stats import paired_interval, welch_interval
from .verdicts import exceeds

__all__ = ["ConvergenceStudy", "STUDY", "auc_accuracy", "epochs_to_target", "max_trainable_lr"]

_ARMS = ("none", "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm", "weight_norm", "gn_ws", "frn")


def _settings(profile: str, lrs: list[float], lr_epochs: int) -> dict[str, Any]:
    base = image_setup(profile)
    return {"base": base, "arms": list(_ARMS), "lr_sweep": {"arms": ["none", "batch_norm"], "lrs": lrs,
                                                          "epochs": lr_epochs},
            "target_fraction": 0.8}


def auc_accuracy(curve: list[float]) -> float:
    """Mean of a per-epoch accuracy curve (nan for an empty curve).

    Examples:
        >>> round(auc_accuracy([0.2, 0.4, 0.6]), 6)
        0.4
    """
    return sum(curve) / len(curve) if curve else math.nan


def epochs_to_target(curve: list[float], target: float) -> int:
    """First epoch (1-based) whose value reaches ``target``; ``len(curve) + 1`` when none does.

    Examples:
        >>> epochs_to_target([0.1, 0.5, 0.7], 0.5), epochs_to_target([0.1], 0.5)
        (2, 2)
    """
    for epoch, value in enumerate(curve, start=1):
        if value >= target:
            return epoch
    return len(curve) + 1


def max_trainable_lr(results: dict[float, tuple[float, bool]], chance: float) -> float:
    """The largest learning rate whose run trains (final accuracy ≥ 2 × chance, not diverged); nan if none does.

    Args:
        results: learning rate → (final test accuracy, diverged).
        chance: 1 / number of classes.

    Examples:
        >>> max_trainable_lr({0.1: (0.5, False), 1.0: (0.3, False), 10.0: (0.1, True)}, chance=0.1)
        1.0
    """
    ok = [lr for lr, (acc, diverged) in results.items() if not diverged and acc >= 2 * chance]
    return max(ok) if ok else math.nan


def _num_classes(config: dict[str, Any]) -> int:
    if config.get("dataset") == "synthetic":
        return int((config.get("data_kwargs") or {}).get("num_classes", 10))
    return 100 if config.get("dataset") == "cifar100" else 10


class ConvergenceStudy(Study):
    name = "convergence"
    version = 1
    title = "Convergence: does normalization speed up training and allow higher learning rates?"
    summary = ("The same network trained with no normalization and with eight normalizations; accuracy and loss per "
               "epoch, epochs to a target accuracy, and the highest learning rate that still trains.")
    claims = ("BatchNorm speeds up convergence over no normalization",
              "LayerNorm speeds up convergence over no normalization",
              "GroupNorm speeds up convergence over no normalization",
              "Normalization (BatchNorm) allows higher learning rates than no normalization")
    needs = ("images",)
    settings = {"smoke": _settings("smoke", [0.05, 0.8, 12.8], 1),
                "quick": _settings("quick", [0.05, 0.4, 3.2], 2),
                "paper": _settings("paper", [0.025, 0.1, 0.4, 1.6, 6.4], 20)}

    def plan(self, ctx: StudyContext) -> list[PlannedRun]:
        s = ctx.settings
        planned = plan_grid(s["base"], {a: NORM_ARMS[a] for a in s["arms"]}, ctx.seeds, grid="norms")
        sweep = s["lr_sweep"]
        for lr in sweep["lrs"]:
            base = {**s["base"], "lr": lr, "epochs": sweep["epochs"]}
            planned += plan_grid(base, {a: NORM_ARMS[a] for a in sweep["arms"]}, ctx.seeds, grid="lr", lr=lr)
        return planned

    def analyze(self, ctx: StudyContext, runs: RunSet) -> StudyOutput:
        out = StudyOutput()
        main = runs.select(grid="norms")
        arms = [a for a in ctx.settings["arms"]]
        acc_series, loss_series = [], []
        for arm in arms:
            epochs, mean, std = curves_by(main, "test_acc", 100.0, arm=arm)
            acc_series.append(Series(ARM_LABELS[arm], epochs, mean, std))
            epochs, mean, std = curves_by(main, "train_loss", 1.0, arm=arm)
            loss_series.append(Series(ARM_LABELS[arm], epochs, mean, std))
        out.figures.append(Figure(
            "curves", "Test accuracy and training loss per epoch",
            [Panel("test accuracy", "epoch", "test accuracy (%)", acc_series),
             Panel("training loss", "epoch", "training loss", loss_series)],
            caption=f"mean ± std over {len(ctx.seeds)} seeds", run_ids=main.ids()))
        finals = {arm: pct(main.values("test_acc", arm=arm)) for arm in arms}
        best = max((sum(v) / len(v) for v in finals.values() if v), default=math.nan)
        target = ctx.settings["target_fraction"] * best
        aucs: dict[str, list[float]] = {}
        rows = []
        for arm in arms:
            chosen = sorted(main.select(arm=arm).finished(), key=lambda r: r.labels["seed"])
            curves = [pct(r.curve("test_acc")[1]) for r in chosen]
            aucs[arm] = [auc_accuracy(c) for c in curves]
            to_target = [epochs_to_target(c, target) for c in curves]
            reached = sum(e <= len(c) for e, c in zip(to_target, curves))
            diverged = sum(r.metric("diverged") == 1.0 for r in chosen)
            rows.append([ARM_LABELS[arm], cell(finals[arm]), cell(aucs[arm]),
                         cell([r.metric("train_loss") for r in chosen], 3),
                         f"{cell(to_target)} ({reached}/{len(curves)} reached)", diverged])
        out.tables.append(Table(
            "summary", "Final accuracy, convergence speed and epochs to target",
            ["normalization", "final test acc (%)", "mean acc over epochs (%)", "final train loss",
             f"epochs to {target:.1f}% acc", "diverged runs"], rows,
            caption=f"mean ± std over seeds; the target is {ctx.settings['target_fraction']:.0%} of the best mean "
                    f"final accuracy ({best:.1f}%); a run that never reaches it counts as epochs + 1",
            run_ids=main.ids()))
        for arm in ("batch_norm", "layer_norm", "group_norm"):
            if arm in arms and "none" in arms:
                effect = welch_interval(aucs[arm], aucs["none"], name=f"mean acc({ARM_LABELS[arm]}) − mean acc(none)",
                                        units="pt")
                out.verdicts.append(exceeds(f"{ARM_LABELS[arm].split(' (')[0]} speeds up convergence over no "
                                            f"normalization", effect, 0.0))
        self._lr_sweep(ctx, runs.select(grid="lr"), out)
        return out

    def _lr_sweep(self, ctx: StudyContext, sweep: RunSet, out: StudyOutput) -> None:
        settings = ctx.settings["lr_sweep"]
        lrs, series, rows, best_lr = settings["lrs"], [], [], {}
        chance = 1.0 / _num_classes(ctx.settings["base"])
        for arm in settings["arms"]:
            means, stds = [], []
            for lr in lrs:
                values = pct(sweep.values("test_acc", arm=arm, lr=lr))
                means.append(mean_of(values))
                stds.append(std_of(values))
            series.append(Series(ARM_LABELS[arm], lrs, means, stds))
            per_seed = []
            for seed in ctx.seeds:
                results = {r.labels["lr"]: (r.metric("test_acc"), r.metric("diverged") == 1.0)
                           for r in sweep.select(arm=arm, seed=seed).finished()}
                per_seed.append(max_trainable_lr(results, chance) if results else math.nan)
            best_lr[arm] = per_seed
            shown = ", ".join(f"{v:g}" if math.isfinite(v) else "none trains" for v in per_seed)
            rows.append([ARM_LABELS[arm], shown] + [cell([m], 1) for m in means])
        out.figures.append(Figure(
            "lr-sweep", "Final test accuracy vs learning rate",
            [Panel("", "peak learning rate", "final test accuracy (%)", series, x_log=True, x_ticks=lrs)],
            caption=f"{settings['epochs']} epoch(s) per run; mean ± std over seeds; chance is {100 * chance:.0f}%",
            run_ids=sweep.ids()))
        out.tables.append(Table(
            "lr-sweep", "Learning-rate sweep: largest rate that still trains, per seed",
            ["normalization", "largest trainable lr (per seed)"] + [f"acc % at lr={lr:g}" for lr in lrs], rows,
            caption="a run trains when it did not diverge and reaches at least twice chance accuracy",
            run_ids=sweep.ids()))
        if {"batch_norm", "none"} <= set(best_lr):
            spacing = lrs[1] / lrs[0] if len(lrs) > 1 else 2.0
            floor = min(lrs) / spacing  # a seed where nothing trains sits one grid step below the grid
            steps = {arm: [math.log(v if math.isfinite(v) else floor, spacing) for v in values]
                     for arm, values in best_lr.items()}
            effect = paired_interval(steps["batch_norm"], steps["none"],
                                     name=f"log{spacing:g}(max lr BatchNorm / max lr none)", units="grid steps")
            out.verdicts.append(exceeds(self.claims[3], effect, 0.0))

STUDY = ConvergenceStudy
