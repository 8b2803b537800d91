"""Each study's verdict rules on fabricated runs and analyses with known effects: a clear effect must come out
supported, a clear opposite effect not supported (post-training analyses are replaced by fabricated results)."""
from __future__ import annotations

import pytest

import normlab.lab.studies.adversarial as adversarial
import normlab.lab.studies.pruning as pruning
import normlab.lab.studies.speed as speed
from normlab.lab.studies import get_profile, get_study
from normlab.lab.studies.framework import StudyContext
from normlab.lab.studies.results import RunData, RunSet

JITTER = (-0.01, 0.0, 0.012)


def _ctx(name, tmp_path):
    study = get_study(name)
    return study, StudyContext(name, get_profile("quick"), dict(study.settings["quick"]), tmp_path, tmp_path / name)


def _run(labels, final=None, history=None, config=None, artifacts=None):
    run_id = "r" + "-".join(str(v) for v in labels.values())
    return RunData(run_id, labels, config or {}, "finished", final or {}, history or [], None, artifacts or {})


@pytest.mark.parametrize("grow, expected", [(True, ["supported", "supported", "supported"]),
                                            (False, ["not supported", "not supported", "not supported"])])
def test_weight_norm_rules(tmp_path, grow, expected):
    study, ctx = _ctx("weight_norm", tmp_path)
    runs = []
    for norm in ctx.settings["norms"]:
        for wd in ctx.settings["weight_decays"]:
            for seed, j in zip(ctx.seeds, JITTER):
                final = 2.0 + j if grow else 0.8 + j  # grow: norm 1 → 2; else it shrinks
                if wd > 0:
                    final = final * 0.7 if grow else final * 1.4
                predicted = final if grow else final * 1.2  # shrinking case: 20% off the prediction
                runs.append(_run({"norm": norm, "weight_decay": wd, "seed": seed},
                                 {"trace_norm": final, "trace_pred_norm": predicted, "trace_initial_norm": 1.0,
                                  "trace_invariant": 2.0, "test_acc": 0.5}))
    out = study.analyze(ctx, RunSet(runs))
    assert [v.status for v in out.verdicts] == expected


@pytest.mark.parametrize("bn_drop, decay_effect, expected", [(30.0, -5.0, ["supported", "supported"]),
                                                             (5.0, +5.0, ["not supported", "not supported"])])
def test_adversarial_rules(tmp_path, monkeypatch, bn_drop, decay_effect, expected):
    """No-norm nets lose 15 points at ε=2/255; BN nets lose ``bn_drop``, moved by ``decay_effect`` with decay."""
    study, ctx = _ctx("adversarial", tmp_path)

    def fake_attack(run, ctx):
        drop = 15.0 if run.labels["norm"] == "none" else bn_drop + (decay_effect if run.labels["weight_decay"] else 0)
        drop += 10 * JITTER[run.labels["seed"]]
        curve = [0.6 - drop / 100 * min(e, 2.0) / 2.0 for e in ctx.settings["eps_255"]]
        return {"fgsm": curve, "pgd": curve, "weight_norms": {"total_frobenius": 10.0}, "warnings": []}

    monkeypatch.setattr(adversarial, "attack_run", fake_attack)
    runs = [_run({"norm": n, "weight_decay": wd, "seed": s}) for n in ctx.settings["norms"]
            for wd in ctx.settings["weight_decays"] for s in ctx.seeds]
    out = study.analyze(ctx, RunSet(runs))
    assert [v.status for v in out.verdicts] == expected


@pytest.mark.parametrize("slim_acc, expected", [(65.0, ["supported", "supported", "supported"]),
                                                (40.0, ["not supported", "not supported", "not supported"])])
def test_pruning_rules(tmp_path, monkeypatch, slim_acc, expected):
    study, ctx = _ctx("pruning", tmp_path)

    def fake_slim(run, ratio, method, ctx):
        acc = (slim_acc if method == "slim" else 50.0) + 100 * JITTER[run.labels["seed"]]
        return {"accuracy": acc / 100, "accuracy_before_finetune": 0.3, "channels_removed": ratio,
                "parameters": 1000, "flops": 10, "parameters_before": 4000, "flops_before": 40,
                "cfg": [8, "M", 16, "M", 32, "M"]}

    def fake_train(planned, train_fn=None):
        return RunSet(_run(p.labels, {"test_acc": 0.5 + JITTER[p.labels["seed"]]}) for p in planned)

    monkeypatch.setattr(pruning, "slim_and_finetune", fake_slim)
    monkeypatch.setattr(ctx, "train", fake_train)
    runs = [_run({"arm": arm, "seed": s, "stage": "train"}, {"test_acc": 0.6 + JITTER[s]})
            for arm in ("baseline", "sparse") for s in ctx.seeds]
    out = study.analyze(ctx, RunSet(runs))
    assert [v.status for v in out.verdicts] == expected
    assert out.anchors[0].source == "Liu et al. (2017)"


def test_transformer_rules(tmp_path):
    study, ctx = _ctx("transformer", tmp_path)
    loss = {"layer_norm": 1.60, "rms_norm": 1.61, "dynamic_tanh": 1.7, "none": 2.0}
    rate = {"layer_norm": 100.0, "rms_norm": 120.0, "dynamic_tanh": 110.0, "none": 130.0}
    runs = []
    for norm, placement in ctx.settings["arms"]:
        for seed, j in zip(ctx.seeds, JITTER):
            history = [{"epoch": e, "test_loss": loss[norm] + j + 0.1 * (3 - e), "samples_per_s": rate[norm] + j}
                       for e in range(4)]
            runs.append(_run({"norm": norm, "placement": placement, "seed": seed},
                             {"test_loss": loss[norm] + j, "test_bpc": 2.0, "diverged": 0.0}, history,
                             {"block_size": 64}))
    out = study.analyze(ctx, RunSet(runs))
    assert [v.status for v in out.verdicts] == ["supported"] * 3


@pytest.mark.parametrize("rms_ms, expected", [(0.5, "supported"), (2.0, "not supported")])
def test_speed_rule(tmp_path, monkeypatch, rms_ms, expected):
    study, ctx = _ctx("speed", tmp_path)

    def fake_round(ctx, index):
        rows = []
        for norm in ctx.settings["norms"]:
            median = {"layer_norm": 1.0, "rms_norm": rms_ms}.get(norm, 1.5) * (1 + 0.01 * index)
            for impl in ("normlab", "torch.nn"):
                rows.append({"norm": norm, "impl": impl, "status": "ok", "median_ms": median, "peak_mib": 1.0,
                             "shape": "2048x1024"})
        return rows

    monkeypatch.setattr(speed, "bench_round", fake_round)
    out = study.analyze(ctx, RunSet([]))
    assert out.verdicts[0].status == expected
    assert len(out.tables[0].rows) == len(ctx.settings["norms"])
