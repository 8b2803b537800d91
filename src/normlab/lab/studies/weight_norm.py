r"""Study ``weight_norm``: do scale-invariant weights grow in norm as predicted, and does weight decay hold them?

Claims (van Laarhoven 2017, arXiv:1706.05350; Arora, Li & Lyu 2019, arXiv:1812.03981; Wan et al. 2021,
arXiv:2006.08419): a weight followed by BatchNorm is scale-invariant, its gradient is orthogonal to it, so under
SGD its norm can only grow, exactly as
:math:`\lVert w_{t+1}\rVert^2 = (1-\eta\lambda)^2\lVert w_t\rVert^2 + \eta^2\lVert g_t\rVert^2`; the growth lowers
the effective learning rate :math:`\eta/\lVert w\rVert^2`, and weight decay :math:`\lambda` counters it.

Protocol: the network with BatchNorm and without normalization, each with and without weight decay, trained by
plain SGD (no momentum, constant learning rate, so the recursion above is exact), once per seed, with the
:mod:`~normlab.lab.studies.norm_trace` callback integrating the predicted norm of every weight from its measured
gradients. Scale-invariant weights are those whose gradient cosine with the weight never exceeded 1e-3.

Rules (norms are the root-mean-square over the invariant weights; 95% intervals over seeds):

1. Without weight decay the norms grow: the paired interval of ``log(final norm) − log(initial norm)`` (BN, λ=0)
   lies above 0.
2. The growth follows the prediction: the interval of ``|final norm / predicted norm − 1|`` (BN, both λ) lies
   below 0.01 (1%).
3. Weight decay holds the norm down: the Welch interval of ``log(final norm, λ>0) − log(final norm, λ=0)`` lies
   below 0.
"""
from __future__ import annotations

import math
from typing import Any

from .common import ARM_LABELS, NORM_ARMS, cell, curves_by, image_setup, plan_weight_decay_grid
from .framework import PlannedRun, Study, StudyContext, StudyOutput
from .norm_trace import train_traced
from .results import Figure, Panel, RunSet, Series, Table
from .stats import paired_interval, welch_interval
from .verdicts import exceeds

__all__ = ["WeightNormStudy", "STUDY"]


def _settings(profile: str, weight_decay: float, **overrides: Any) -> dict[str, Any]:
    base = {**image_setup(profile), "momentum": 0.0, "schedule": "constant", "lr": 0.1, "weight_decay": 0.0,
            "callbacks": ["norm_trace"], **overrides}
    return {"base": base, "norms": ["batch_norm", "none"], "weight_decays": [0.0, weight_decay],
            "prediction_tolerance": 0.01}


class WeightNormStudy(Study):
    name = "weight_norm"
    version = 1
    title = "Weight norms: scale-invariant weights grow as predicted; weight decay holds them"
    summary = ("Norms of the weights before BatchNorm during plain-SGD training, with and without weight decay, "
               "measured against the norm predicted from the gradients alone, and the effective learning rate.")
    claims = ("Without weight decay the norms of scale-invariant weights grow during training",
              "Their growth follows ||w'||² = (1-ηλ)²||w||² + η²||g||² (within 1%)",
              "Weight decay holds the norms of scale-invariant weights down")
    needs = ("images",)
    train_fn = train_traced
    settings = {"smoke": _settings("smoke", 5e-3),
                "quick": _settings("quick", 5e-3, epochs=4),
                "paper": _settings("paper", 5e-4, epochs=60, schedule="constant")}

    def plan(self, ctx: StudyContext) -> list[PlannedRun]:
        return plan_weight_decay_grid(ctx.settings, NORM_ARMS, ctx.seeds)

    def analyze(self, ctx: StudyContext, runs: RunSet) -> StudyOutput:
        s, out = ctx.settings, StudyOutput()
        wd_off, wd_on = s["weight_decays"]
        bn = "batch_norm"
        panels, lr_series, rows = [], [], []
        for wd in s["weight_decays"]:
            series = []
            _, start, start_std = curves_by(runs, "trace_initial_norm", norm=bn, weight_decay=wd)
            for metric, label in (("trace_norm", "measured"), ("trace_pred_norm", "predicted from gradients")):
                epochs, mean, std = curves_by(runs, metric, norm=bn, weight_decay=wd)
                if start:  # epoch 0: the initial norm, where measurement and prediction start together
                    epochs, mean, std = [0.0] + epochs, start[:1] + mean, start_std[:1] + std
                series.append(Series(label, epochs, mean, std, marker="o" if metric == "trace_norm" else "x"))
            panels.append(Panel(f"BatchNorm, weight decay {wd:g}", "epoch", "RMS norm of invariant weights", series))
            epochs, mean, std = curves_by(runs, "trace_effective_lr", norm=bn, weight_decay=wd)
            lr_series.append(Series(f"BatchNorm, λ={wd:g}", epochs, mean, std))
        panels.append(Panel("effective learning rate η/||w||²", "epoch", "mean over invariant weights", lr_series,
                            y_log=True))
        out.figures.append(Figure("norms", "Norms of scale-invariant weights: measured vs predicted", panels,
                                  caption=f"mean ± std over {len(ctx.seeds)} seeds; plain SGD, lr "
                                          f"{s['base']['lr']:g}, constant", run_ids=runs.select(norm=bn).ids()))
        for norm in s["norms"]:
            for wd in s["weight_decays"]:
                chosen = [r for r in runs.select(norm=norm, weight_decay=wd).finished()]
                ratio = [_all_weights_ratio(r) for r in chosen]
                rows.append([ARM_LABELS[norm], f"{wd:g}", cell([r.metric("trace_initial_norm") for r in chosen], 3),
                             cell([r.metric("trace_norm") for r in chosen], 3),
                             cell([r.metric("trace_pred_norm") for r in chosen], 3),
                             cell([r.metric("trace_norm") / r.metric("trace_pred_norm") for r in chosen], 4),
                             cell(ratio, 3), cell([r.metric("trace_invariant") for r in chosen], 0),
                             cell([100 * r.metric("test_acc") for r in chosen])])
        out.tables.append(Table(
            "norms", "Weight norms at the end of training",
            ["normalization", "weight decay", "initial RMS norm (invariant)", "final RMS norm (invariant)",
             "predicted final norm", "measured / predicted", "measured / predicted (all weights)",
             "invariant weights", "test acc (%)"], rows,
            caption="invariant = |cos(g, w)| never above 1e-3; without normalization no weight is invariant and the "
                    "all-weights ratio shows how far the prediction drifts when the gradient is not orthogonal",
            run_ids=runs.ids()))
        growth_final = [math.log(v) for v in runs.values("trace_norm", norm=bn, weight_decay=wd_off)]
        growth_start = [math.log(v) for v in runs.values("trace_initial_norm", norm=bn, weight_decay=wd_off)]
        out.verdicts.append(exceeds(self.claims[0], paired_interval(
            growth_final, growth_start, name="log(final norm / initial norm), BN, λ=0"), 0.0))
        deviation = [abs(r.metric("trace_norm") / r.metric("trace_pred_norm") - 1.0)
                     for r in runs.select(norm=bn).finished()]
        out.verdicts.append(exceeds(self.claims[1], paired_interval(
            deviation, [0.0] * len(deviation), name="|measured / predicted − 1|, BN"),
            s["prediction_tolerance"], direction="below"))
        decay = welch_interval([math.log(v) for v in runs.values("trace_norm", norm=bn, weight_decay=wd_on)],
                               growth_final, name=f"log(norm, λ={wd_on:g}) − log(norm, λ=0), BN")
        out.verdicts.append(exceeds(self.claims[2], decay, 0.0, direction="below"))
        return out


def _all_weights_ratio(run: Any) -> float:
    """RMS over all traced weights of measured / predicted final norm (nan when there is no trace)."""
    trace = run.artifacts.get("norm_trace") or []
    if not trace:
        return math.nan
    last = trace[-1]
    measured = [w["norm"] for w in last.values() if w.get("pred")]
    predicted = [w["pred"] for w in last.values() if w.get("pred")]
    if not measured:
        return math.nan
    return math.sqrt(sum(m * m for m in measured) / sum(p * p for p in predicted))


STUDY = WeightNormStudy
