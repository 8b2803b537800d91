"""Study ``adversarial``: does BatchNorm — and the weight growth it allows — amplify adversarial attacks?

Claims (Galloway et al. 2019, "Batch Normalization is a Cause of Adversarial Vulnerability", arXiv:1905.02161;
weight growth as the mechanism: larger weight norms and gains amplify input perturbations):

1. A network with BatchNorm loses more accuracy under a small L∞ attack than the same network without it.
2. Without weight decay (larger weights) the BatchNorm network loses more accuracy under attack than with it.

Protocol: the network with and without BatchNorm, each with and without weight decay, once per seed. After
training, each model is attacked on the first test images with FGSM and PGD (Madry et al. 2018) at
ε ∈ {0, 1, 2, 4, 8}/255 (pixels in [0, 1]) through :func:`normlab.analysis.robust_accuracy`, and its weight norms
are measured with :func:`normlab.analysis.weight_norm_stats`. Each analysis is cached per run in
``studies/adversarial/cache/``, so a rerun resumes.

Rules (the *accuracy drop* is clean accuracy minus PGD accuracy at ε = 2/255, in points; Welch 95% intervals):

1. supported when the interval of ``drop(BN) − drop(none)`` (with weight decay) lies above 0;
2. supported when the interval of ``drop(BN, λ=0) − drop(BN, λ>0)`` lies above 0.

A larger drop can also come from a higher clean accuracy (more to lose); the table gives the share of correct
predictions that survive the attack beside the drop.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

from .common import ARM_LABELS, NORM_ARMS, cell, image_setup, mean_of, plan_weight_decay_grid, std_of
from .framework import PlannedRun, Study, StudyContext, StudyOutput
from .results import Figure, Panel, RunData, RunSet, Series, Table
from .stats import welch_interval
from .verdicts import exceeds

__all__ = ["AdversarialStudy", "STUDY", "attack_run"]

EPS_255 = [0.0, 1.0, 2.0, 4.0, 8.0]
REFERENCE_EPS_255 = 2.0


def _settings(profile: str, samples: int, pgd_steps: int, **overrides: Any) -> dict[str, Any]:
    return {"base": {**image_setup(profile), **overrides}, "norms": ["none", "batch_norm"],
            "weight_decays": [0.0, 5e-4], "eps_255": list(EPS_255), "reference_eps_255": REFERENCE_EPS_255,
            "attack_samples": samples, "pgd_steps": pgd_steps}


def attack_run(run: RunData, ctx: StudyContext) -> dict[str, Any]:
    """Robust accuracy (FGSM, PGD) at every ε and the weight-norm summary of one trained run (cached)."""
    s = ctx.settings
    key = {"run_id": run.run_id, "eps_255": s["eps_255"], "samples": s["attack_samples"], "pgd_steps": s["pgd_steps"],
           "version": 1}

    def compute() -> dict[str, Any]:
        import torch

        from normlab.analysis import GradientMaskingWarning, robust_accuracy, weight_norm_stats
        from normlab.lab.build import build_data
        from normlab.lab.config import TrainConfig
        from normlab.lab.trainer import load_trained

        model, config = load_trained(run.run_id, ctx.home)
        data = build_data(TrainConfig.from_dict(config.to_dict()), data_dir=ctx.data_dir, progress=False)
        images = data.test.images[:s["attack_samples"]].float() / 255.0
        labels = data.test.labels[:s["attack_samples"]]
        loader = [(images[i:i + 128], labels[i:i + 128]) for i in range(0, len(images), 128)]
        normalize = (data.test.transform.mean, data.test.transform.std)
        eps = [e / 255.0 for e in s["eps_255"]]
        out: dict[str, Any] = {"weight_norms": weight_norm_stats(model).summary(), "warnings": []}
        generator = torch.Generator().manual_seed(0)
        for attack, kwargs in (("fgsm", {}), ("pgd", {"steps": s["pgd_steps"], "generator": generator})):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", GradientMaskingWarning)
                result = robust_accuracy(model, loader, attack, eps, normalize=normalize, **kwargs)
            out[attack] = result.accuracy
            out["warnings"] += [f"{attack}: {w.message}" for w in caught if issubclass(w.category,
                                                                                       GradientMaskingWarning)]
        return out

    return ctx.cached("attack", key, compute)


class AdversarialStudy(Study):
    name = "adversarial"
    version = 1
    title = "Adversarial robustness: BatchNorm, weight decay and weight norms"
    summary = ("Robust accuracy against ε under FGSM and PGD for networks with and without BatchNorm, with and "
               "without weight decay, set against their weight norms.")
    claims = ("BatchNorm makes a network lose more accuracy under a small L∞ attack (PGD, ε=2/255)",
              "Without weight decay (larger weights) a BatchNorm network loses more accuracy under attack")
    needs = ("images",)
    settings = {"smoke": _settings("smoke", 64, 2),
                "quick": _settings("quick", 500, 5, epochs=4),
                "paper": _settings("paper", 2000, 20)}

    def plan(self, ctx: StudyContext) -> list[PlannedRun]:
        return plan_weight_decay_grid(ctx.settings, NORM_ARMS, ctx.seeds)

    def analyze(self, ctx: StudyContext, runs: RunSet) -> StudyOutput:
        s, out = ctx.settings, StudyOutput()
        results: dict[str, dict[str, Any]] = {}
        for index, run in enumerate(runs.finished(), start=1):
            ctx.log(f"[adversarial] attacking run {index}/{len(runs.finished())} ({run.run_id})")
            results[run.run_id] = attack_run(run, ctx)
        ref = s["eps_255"].index(s["reference_eps_255"])
        arms = [(norm, wd) for wd in s["weight_decays"] for norm in s["norms"]]
        panels, rows, scatter = [], [], []
        for attack in ("fgsm", "pgd"):
            series = []
            for norm, wd in arms:
                curves = [[100.0 * a for a in results[r.run_id][attack]] for r in _chosen(runs, norm, wd)]
                means = [mean_of([c[i] for c in curves]) for i in range(len(s["eps_255"]))]
                stds = [std_of([c[i] for c in curves]) for i in range(len(s["eps_255"]))]
                series.append(Series(f"{ARM_LABELS[norm]}, λ={wd:g}", s["eps_255"], means, stds))
            panels.append(Panel(attack.upper(), "ε (× 1/255, L∞)", "robust accuracy (%)", series))
        drops: dict[tuple[str, float], list[float]] = {}
        for norm, wd in arms:
            chosen = _chosen(runs, norm, wd)
            clean = [100.0 * results[r.run_id]["pgd"][0] for r in chosen]
            robust = [100.0 * results[r.run_id]["pgd"][ref] for r in chosen]
            norms = [results[r.run_id]["weight_norms"].get("total_frobenius", math.nan) for r in chosen]
            drops[norm, wd] = [c - a for c, a in zip(clean, robust)]
            survive = [a / c if c > 0 else math.nan for c, a in zip(clean, robust)]
            fgsm = [100.0 * results[r.run_id]["fgsm"][ref] for r in chosen]
            rows.append([ARM_LABELS[norm], f"{wd:g}", cell(clean), cell(fgsm), cell(robust), cell(drops[norm, wd]),
                         cell(survive, 2), cell(norms, 1)])
            scatter.append(Series(f"{ARM_LABELS[norm]}, λ={wd:g}", norms, drops[norm, wd], line=False))
        out.figures.append(Figure("robust-accuracy", "Robust accuracy vs attack budget", panels,
                                  caption=f"first {s['attack_samples']} test images; PGD with {s['pgd_steps']} steps; "
                                          f"mean ± std over {len(ctx.seeds)} seeds", run_ids=runs.ids()))
        out.figures.append(Figure("norm-vs-drop", "Weight norm vs accuracy drop under PGD at ε=2/255",
                                  [Panel("", "total Frobenius norm of conv/linear weights", "accuracy drop (points)",
                                         scatter)], caption="one point per run", run_ids=runs.ids()))
        out.tables.append(Table(
            "robustness", "Clean and robust accuracy at ε = 2/255",
            ["normalization", "weight decay", "clean acc (%)", "FGSM acc (%)", "PGD acc (%)", "drop (points)",
             "surviving share", "weight norm (total Frobenius)"], rows,
            caption="drop = clean − PGD accuracy; surviving share = PGD / clean accuracy; mean ± std over seeds",
            run_ids=runs.ids()))
        notes = sorted({w for r in results.values() for w in r["warnings"]})
        out.notes += [f"gradient-masking check: {w}" for w in notes[:5]]
        wd_off, wd_on = s["weight_decays"]
        effect = welch_interval(drops.get(("batch_norm", wd_on), []), drops.get(("none", wd_on), []),
                                name="drop(BN) − drop(none)", units="pt")
        out.verdicts.append(exceeds(self.claims[0], effect, 0.0))
        effect = welch_interval(drops.get(("batch_norm", wd_off), []), drops.get(("batch_norm", wd_on), []),
                                name="drop(BN, λ=0) − drop(BN, λ>0)", units="pt")
        out.verdicts.append(exceeds(self.claims[1], effect, 0.0))
        return out


def _chosen(runs: RunSet, norm: str, wd: float) -> list[RunData]:
    return sorted(runs.select(norm=norm, weight_decay=wd).finished(), key=lambda r: r.labels["seed"])


STUDY = AdversarialStudy
