"""Tests for the study framework: plan → sweep → analyze → result.json, resuming, caching, every study's plan on
every profile, and each study's verdict rules applied to fabricated runs with known effects."""
from __future__ import annotations

import json

import pytest

import normlab.lab.studies.framework as framework
from normlab.lab.config import TrainConfig
from normlab.lab.studies import STUDY_NAMES, get_profile, get_study, read_result, run_study
from normlab.lab.studies.framework import PlannedRun, Study, StudyContext, StudyOutput
from normlab.lab.studies.results import Figure, Panel, RunData, RunSet, Series, Table
from normlab.lab.studies.stats import welch_interval
from normlab.lab.studies.verdicts import SUPPORTED, exceeds

TINY = {"model": "vgg11", "model_kwargs": {"cfg": [4, "M"]}, "dataset": "synthetic", "train_subset": 32,
        "test_subset": 16, "data_kwargs": {"image_size": 8, "num_classes": 2}, "epochs": 1, "batch_size": 8,
        "device": "cpu", "eval_batch_size": 16}


class TinyStudy(Study):
    """Two norms × the profile's seeds on a tiny synthetic task; counts its cached analyses."""

    name = "tiny"
    claims = ("BatchNorm beats no normalization",)
    settings = {"smoke": {"base": TINY}}
    computed = 0

    def plan(self, ctx):
        return [PlannedRun({"norm": n, "seed": s}, {**ctx.settings["base"], "norm": n, "seed": s})
                for n in ("batch_norm", "none") for s in ctx.seeds]

    def analyze(self, ctx, runs):
        def compute():
            TinyStudy.computed += 1
            return {"n": len(runs)}

        cached = ctx.cached("count", {"ids": runs.ids()}, compute)
        acc = {n: runs.values("test_acc", norm=n) for n in ("batch_norm", "none")}
        return StudyOutput(
            tables=[Table("t", "Accuracy <by norm>", ["norm", "runs"], [[n, cached["n"]] for n in acc])],
            figures=[Figure("f", "acc", [Panel("", "seed", "acc", [Series(n, [0, 1], v) for n, v in acc.items()])],
                            run_ids=runs.ids())],
            verdicts=[exceeds(self.claims[0], welch_interval(acc["batch_norm"], acc["none"]), 0.0)])


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(framework, "get_study", lambda name: TinyStudy() if name == "tiny" else get_study(name))
    TinyStudy.computed = 0
    return TinyStudy


def test_run_study_writes_a_result_that_follows_the_schema(tmp_path, tiny):
    result = run_study("tiny", "smoke", home=tmp_path, workers=0, progress=False)
    stored = read_result(tmp_path / "studies" / "tiny" / "result.json")
    assert stored == json.loads(json.dumps(result))
    for key in ("schema", "schema_version", "study", "study_version", "profile", "conclusive", "settings",
                "code_version", "environment", "timing", "runs", "tables", "figures", "anchors", "verdicts", "notes"):
        assert key in stored, key
    assert [r["status"] for r in stored["runs"]] == ["finished"] * 4
    assert all(TrainConfig.from_dict(r["config"]).run_id == r["run_id"] for r in stored["runs"])
    verdict = stored["verdicts"][0]
    assert verdict["status"] == "inconclusive" and verdict["reason"].startswith("inconclusive: smoke profile")
    assert verdict["effect"]["n"] == [2, 2]
    assert (tmp_path / "studies" / "tiny" / "plan.json").is_file()


def test_rerun_resumes_instead_of_retraining_or_recomputing(tmp_path, tiny, monkeypatch):
    run_study("tiny", "smoke", home=tmp_path, workers=0, progress=False)
    assert tiny.computed == 1

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("normlab.lab.trainer.train", refuse)
    again = run_study("tiny", "smoke", home=tmp_path, workers=0, progress=False)
    assert tiny.computed == 1  # the cached analysis was read back
    assert [r["status"] for r in again["runs"]] == ["finished"] * 4


def test_cached_recomputes_when_the_key_changes(tmp_path):
    ctx = StudyContext("x", get_profile("smoke"), {}, tmp_path, tmp_path / "x")
    calls = []
    for key in ({"a": 1}, {"a": 1}, {"a": 2}):
        ctx.cached("k", key, lambda: calls.append(1) or len(calls))
    assert len(calls) == 2


@pytest.mark.parametrize("content, message", [({"x": 1}, "not a normlab study result"),
                                              ({"schema": framework.SCHEMA, "schema_version": 99}, "newer")])
def test_read_result_refuses_foreign_or_newer_files(tmp_path, content, message):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        read_result(path)


def test_unknown_study_lists_the_known_ones():
    with pytest.raises(ValueError, match="convergence"):
        get_study("nope")


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
@pytest.mark.parametrize("name", STUDY_NAMES)
def test_every_study_plans_valid_configs_on_every_profile(name, profile, tmp_path):
    study = get_study(name)
    ctx = StudyContext(name, get_profile(profile), dict(study.settings[profile]), tmp_path, tmp_path / name)
    planned = study.plan(ctx)
    configs = [TrainConfig.from_dict(p.config) for p in planned]
    assert all(c.seed in ctx.seeds for c in configs)
    assert study.claims and study.title and study.summary
    if profile == "smoke":
        assert all(c.dataset in ("synthetic", "shakespeare") for c in configs)


def _run(labels, final=None, history=None, config=None):
    run_id = "r" + "-".join(f"{v}" for v in labels.values())
    return RunData(run_id, labels, config or {}, "finished", final or {}, history or [])


def _ctx(name, tmp_path, profile="quick"):
    study = get_study(name)
    return study, StudyContext(name, get_profile(profile), dict(study.settings[profile]), tmp_path, tmp_path / name)


BATCH_CASES = [  # (error % per (norm, batch) at smallest and 32, expected verdict statuses)
    ({"batch_norm": (50, 30), "group_norm": (35, 35), "layer_norm": (40, 40)},
     ["supported", "supported", "supported", "supported"]),
    ({"batch_norm": (30, 30), "group_norm": (45, 30), "layer_norm": (50, 30)},
     ["inconclusive", "not supported", "not supported", "not supported"]),  # BN's CI of 0 ± 1.5 includes 1
]


@pytest.mark.parametrize("errors, expected", BATCH_CASES)
def test_batch_size_rules_on_fabricated_runs(tmp_path, errors, expected):
    study, ctx = _ctx("batch_size", tmp_path)
    ctx.settings["norms"] = list(errors)
    sizes = ctx.settings["batch_sizes"]
    runs = []
    for norm, (small, ref) in errors.items():
        for bs in sizes:
            for seed, jitter in zip(ctx.seeds, (-0.5, 0.0, 0.6)):
                err = small if bs == min(sizes) else ref
                runs.append(_run({"norm": norm, "batch_size": bs, "seed": seed},
                                 {"test_acc": (100 - err + jitter) / 100}))
    out = study.analyze(ctx, RunSet(runs))
    assert [v.status for v in out.verdicts] == expected
    assert out.anchors and out.anchors[0].source == "Wu & He (2018)"
    assert any(s.published for p in out.figures[0].panels for s in p.series)


def test_convergence_rules_on_fabricated_runs(tmp_path):
    study, ctx = _ctx("convergence", tmp_path)
    runs = []
    for arm in ctx.settings["arms"]:
        speed = 0.05 if arm == "none" else 0.15  # every normalization climbs three times faster
        for seed, jitter in zip(ctx.seeds, (-0.01, 0.0, 0.012)):
            curve = [min(0.9, 0.1 + speed * (e + 1)) + jitter for e in range(4)]
            history = [{"epoch": e, "test_acc": a, "train_loss": 2 - a} for e, a in enumerate(curve)]
            runs.append(_run({"arm": arm, "grid": "norms", "seed": seed},
                             {"test_acc": curve[-1], "train_loss": 2 - curve[-1], "diverged": 0.0}, history))
    for lr in ctx.settings["lr_sweep"]["lrs"]:
        for arm in ctx.settings["lr_sweep"]["arms"]:
            ok = lr <= (0.8 if arm == "batch_norm" else 0.2)
            for seed in ctx.seeds:
                runs.append(_run({"arm": arm, "grid": "lr", "lr": lr, "seed": seed},
                                 {"test_acc": 0.5 if ok else 0.1, "diverged": 0.0 if ok else 1.0}))
    out = study.analyze(ctx, RunSet(runs))
    assert [v.status for v in out.verdicts] == [SUPPORTED] * 4
    assert out.verdicts[3].effect.estimate == pytest.approx(1.0)  # 0.8 vs 0.2: one ×4 grid step
