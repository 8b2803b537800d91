"""Study ``pruning``: does network slimming remove parameters with little accuracy loss?

Claim (Liu et al. 2017, "Learning Efficient Convolutional Networks through Network Slimming", arXiv:1708.06519):
train with an L1 penalty on BatchNorm's scale factors γ, remove the channels with the smallest |γ| across the
network, fine-tune — and the slimmer network is about as accurate, with far fewer parameters and FLOPs. Their
published CIFAR-10 VGG numbers are shown as the anchor (labelled, never mixed with ours).

Protocol, per seed: a baseline VGG (no sparsity) and a sparsity-trained VGG (L1 on γ, ``sparsity_l1``) are
trained through the sweep. For each pruned fraction, the sparsity-trained network is slimmed
(:func:`normlab.pruning.slim`) and, as the control, pruned at random to the very same architecture
(:func:`normlab.pruning.random_slim`); both are fine-tuned for a few epochs (:mod:`.finetune`). The pruned
architecture is also trained from scratch for as many epochs as the baseline (a second sweep). Parameters and
FLOPs come from :func:`normlab.pruning.model_cost`. Every slimming and fine-tuning is cached per run, fraction
and method in ``studies/pruning/cache/``.

Rules at the largest pruned fraction (Welch 95% intervals over seeds, in accuracy points):

1. little accuracy loss: ``acc(slimmed + fine-tuned) − acc(baseline)`` lies above −1 point;
2. |γ| chooses better than chance: ``acc(slimmed) − acc(random)`` (both fine-tuned) lies above 0;
3. slimming beats training the small network from scratch: ``acc(slimmed) − acc(scratch)`` lies above 0 (Liu et
   al. 2017 report this; Liu et al. 2019, "Rethinking the Value of Network Pruning", dispute it).
"""
from __future__ import annotations

import math
from typing import Any

from .anchors import LIU_2017
from .common import cell, image_setup, mean_of, plan_grid, std_of
from .framework import PlannedRun, Study, StudyContext, StudyOutput
from .results import Figure, Panel, RunData, RunSet, Series, Table
from .stats import welch_interval
from .verdicts import exceeds

__all__ = ["PruningStudy", "STUDY", "vgg_cfg_of", "slim_and_finetune"]


def _settings(profile: str, ratios: list[float], finetune_epochs: int, **overrides: Any) -> dict[str, Any]:
    base = {**image_setup(profile), "norm": "batch_norm", **overrides}
    if profile == "paper":
        base.update(model="vgg19", model_kwargs={})
    return {"base": base, "sparsity_l1": 1e-4, "ratios": ratios, "finetune_epochs": finetune_epochs,
            "finetune_lr": base["lr"] / 5, "loss_margin_pt": 1.0}


def vgg_cfg_of(model: Any) -> list[Any]:
    """The ``cfg`` (channel counts and "M") that rebuilds a (pruned) VGG's feature layers.

    Examples:
        >>> from normlab.lab.models import create_model
        >>> vgg_cfg_of(create_model("vgg11", norm="batch_norm", cfg=[8, "M", 16]))
        [8, 'M', 16]
    """
    import torch.nn as nn

    cfg: list[Any] = []
    for module in model.features:
        if isinstance(module, nn.Conv2d):
            cfg.append(int(module.out_channels))
        elif isinstance(module, nn.MaxPool2d):
            cfg.append("M")
    return cfg


def slim_and_finetune(run: RunData, ratio: float, method: str, ctx: StudyContext) -> dict[str, Any]:
    """Slim (or randomly prune) one sparsity-trained run at ``ratio``, fine-tune it, measure it (cached)."""
    s = ctx.settings
    key = {"run_id": run.run_id, "ratio": ratio, "method": method, "epochs": s["finetune_epochs"],
           "lr": s["finetune_lr"], "version": 1}

    def compute() -> dict[str, Any]:
        import torch

        from normlab.lab.build import build_data
        from normlab.lab.trainer import load_trained
        from normlab.pruning import random_slim, slim

        from .finetune import finetune, test_accuracy

        model, config = load_trained(run.run_id, ctx.home)
        size = int((config.data_kwargs or {}).get("image_size", 32))
        example = torch.randn(2, 3, size, size)
        result = slim(model, example, ratio=ratio)
        if method == "random":  # the same architecture as the slimmed one, channels chosen at random
            model, _ = load_trained(run.run_id, ctx.home)
            result = random_slim(model, example, result.plan, seed=config.seed)
        before = test_accuracy(result.model, build_data(config, data_dir=ctx.data_dir, progress=False).test)
        accuracy = finetune(result.model, config, epochs=s["finetune_epochs"], lr=s["finetune_lr"],
                            data_dir=ctx.data_dir)
        return {"accuracy": accuracy, "accuracy_before_finetune": before, "channels_removed": result.plan.ratio,
                "parameters": result.after.parameters, "flops": result.after.flops,
                "parameters_before": result.before.parameters, "flops_before": result.before.flops,
                "cfg": vgg_cfg_of(result.model) if hasattr(result.model, "features") else None}

    return ctx.cached("slim", key, compute)


class PruningStudy(Study):
    name = "pruning"
    version = 1
    title = "Pruning: network slimming by BatchNorm's scale factors"
    summary = ("Accuracy against the pruned fraction for network slimming, random channel pruning and the small "
               "architecture trained from scratch, with parameters and FLOPs, beside Liu et al.'s published table.")
    claims = ("Network slimming removes channels with little accuracy loss (less than 1 point)",
              "Choosing channels by |γ| beats choosing them at random",
              "Slimming + fine-tuning beats training the pruned architecture from scratch")
    needs = ("images",)
    settings = {"smoke": _settings("smoke", [0.5], 1),
                "quick": _settings("quick", [0.4, 0.7], 2, epochs=4),
                "paper": _settings("paper", [0.3, 0.5, 0.7], 40)}

    def plan(self, ctx: StudyContext) -> list[PlannedRun]:
        s = ctx.settings
        arms = {"baseline": {"sparsity_l1": 0.0}, "sparse": {"sparsity_l1": s["sparsity_l1"]}}
        return plan_grid(s["base"], arms, ctx.seeds, stage="train")

    def analyze(self, ctx: StudyContext, runs: RunSet) -> StudyOutput:
        s, out = ctx.settings, StudyOutput()
        pruned: dict[tuple[float, str], list[dict[str, Any]]] = {}
        sparse = sorted(runs.select(arm="sparse").finished(), key=lambda r: r.labels["seed"])
        for ratio in s["ratios"]:
            for method in ("slim", "random"):
                ctx.log(f"[pruning] {method} at {ratio:.0%}, fine-tuning {len(sparse)} model(s)")
                pruned[ratio, method] = [slim_and_finetune(r, ratio, method, ctx) for r in sparse]
        scratch_plan = [PlannedRun({"arm": "scratch", "ratio": ratio, "seed": r.labels["seed"], "stage": "scratch"},
                                   {**s["base"], "seed": r.labels["seed"],
                                    "model_kwargs": {**s["base"].get("model_kwargs", {}), "cfg": p["cfg"]}})
                        for ratio in s["ratios"] for r, p in zip(sparse, pruned[ratio, "slim"]) if p.get("cfg")]
        scratch = ctx.train(scratch_plan) if scratch_plan else RunSet([])
        baseline = [100 * v for v in runs.values("test_acc", arm="baseline")]
        unpruned = [100 * v for v in runs.values("test_acc", arm="sparse")]
        params0 = [p["parameters_before"] for p in pruned[s["ratios"][0], "slim"]]
        rows = [["baseline (no sparsity)", "0%", cell(baseline), "—", cell(params0, 0), "100%"],
                ["sparsity-trained, unpruned", "0%", cell(unpruned), "—", cell(params0, 0), "100%"]]
        curves = {name: ([0.0], [mean_of(unpruned)], [std_of(unpruned)]) for name in ("slim", "random")}
        curves["scratch"] = ([], [], [])
        accuracy: dict[tuple[float, str], list[float]] = {}
        for ratio in s["ratios"]:
            for method, label in (("slim", "slimmed (|γ|) + fine-tuned"), ("random", "random channels + fine-tuned")):
                values = pruned[ratio, method]
                accuracy[ratio, method] = [100 * v["accuracy"] for v in values]
                rows.append([label, f"{ratio:.0%}", cell(accuracy[ratio, method]),
                             cell([100 * v["accuracy_before_finetune"] for v in values]),
                             cell([v["parameters"] for v in values], 0),
                             cell([100 * v["flops"] / v["flops_before"] for v in values], 1) + "%"])
                curves[method][0].append(ratio)
                curves[method][1].append(mean_of(accuracy[ratio, method]))
                curves[method][2].append(std_of(accuracy[ratio, method]))
            accuracy[ratio, "scratch"] = [100 * v for v in scratch.values("test_acc", ratio=ratio)]
            rows.append(["pruned architecture from scratch", f"{ratio:.0%}", cell(accuracy[ratio, "scratch"]), "—",
                         cell([v["parameters"] for v in pruned[ratio, "slim"]], 0), "same as slimmed"])
            if accuracy[ratio, "scratch"]:
                for i, v in zip(range(3), (ratio, mean_of(accuracy[ratio, "scratch"]),
                                           std_of(accuracy[ratio, "scratch"]))):
                    curves["scratch"][i].append(v)
        all_ids = runs.ids() + scratch.ids()
        out.tables.append(Table(
            "pruning", "Accuracy, parameters and FLOPs by pruned fraction",
            ["model", "channels pruned", "test acc (%)", "acc before fine-tuning (%)", "parameters",
             "FLOPs vs unpruned"], rows,
            caption=f"{s['base']['model']} {s['base'].get('model_kwargs') or ''}, L1 on γ = {s['sparsity_l1']:g}, "
                    f"fine-tuned {s['finetune_epochs']} epoch(s) at lr {s['finetune_lr']:g}; mean ± std over seeds",
            run_ids=all_ids))
        series = [Series("slimmed + fine-tuned", *curves["slim"]), Series("random + fine-tuned", *curves["random"]),
                  Series("from scratch", *curves["scratch"], marker="s")]
        out.figures.append(Figure("accuracy-vs-pruned", "Test accuracy vs fraction of channels pruned",
                                  [Panel("", "fraction of channels pruned", "test accuracy (%)", series)],
                                  caption="0% is the sparsity-trained network before pruning; mean ± std over seeds",
                                  run_ids=all_ids))
        out.anchors.append(LIU_2017)
        top = max(s["ratios"])
        out.verdicts.append(exceeds(self.claims[0], welch_interval(
            accuracy[top, "slim"], baseline, name=f"acc(slimmed {top:.0%}) − acc(baseline)", units="pt"),
            -s["loss_margin_pt"]))
        out.verdicts.append(exceeds(self.claims[1], welch_interval(
            accuracy[top, "slim"], accuracy[top, "random"], name=f"acc(slimmed) − acc(random), {top:.0%}",
            units="pt"), 0.0))
        out.verdicts.append(exceeds(self.claims[2], welch_interval(
            accuracy[top, "slim"], accuracy[top, "scratch"], name=f"acc(slimmed) − acc(scratch), {top:.0%}",
            units="pt"), 0.0))
        if not math.isfinite(mean_of(accuracy[top, "scratch"])):
            out.notes.append("the from-scratch comparison needs a VGG (its pruned architecture is a cfg list)")
        return out


STUDY = PruningStudy
