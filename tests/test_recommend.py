"""The decision guide (`normlab.recommend`) and `normlab recommend`: each situation's first choice, the reasons and
papers behind every option, clear errors, and the citing of the user's own study results."""
import json

import pytest

import normlab.weight  # noqa: F401  (registers the weight normalizations the guide names)
from normlab.cli import main
from normlab.recommend import (ARCHES, BN_MIN_BATCH, HARDWARE, REFERENCES, STUDIES_BY_ARCH, StudyVerdict,
                               recommend)
from normlab.registry import get_norm_spec

# (arch, batch size, keyword arguments, expected first choice's label, expected first alternative's label or None)
SITUATIONS = [
    ("cnn", 128, {}, "BatchNorm", "GroupNorm + Weight Standardization"),
    ("cnn", 512, {}, "BatchNorm", "Ghost BatchNorm"),
    ("cnn", BN_MIN_BATCH, {}, "BatchNorm", None),
    ("cnn", BN_MIN_BATCH - 1, {}, "GroupNorm + Weight Standardization", "GroupNorm"),
    ("cnn", 2, {"hardware": "cpu"}, "GroupNorm + Weight Standardization", "GroupNorm"),
    ("cnn", 8, {"hardware": "multi-gpu", "devices": 4}, "SyncBatchNorm", "GroupNorm + Weight Standardization"),
    ("cnn", 4, {"hardware": "multi-gpu", "devices": 2}, "GroupNorm + Weight Standardization", "SyncBatchNorm"),
    ("cnn", 4, {"hardware": "multi-gpu"}, "GroupNorm + Weight Standardization", "SyncBatchNorm"),
    ("cnn", 4, {"task": "fine-tuning"}, "frozen BatchNorm", "GroupNorm + Weight Standardization"),
    ("cnn", 64, {"task": "fine-tuning"}, "BatchNorm", None),
    ("transformer", 1, {}, "RMSNorm, pre-norm", "LayerNorm, pre-norm"),
    ("transformer", 256, {"task": "language-modeling", "hardware": "multi-gpu"}, "RMSNorm, pre-norm", None),
    ("rnn", 32, {}, "LayerNorm on the recurrent pre-activations", "no normalization"),
    ("gan", 64, {}, "spectral norm (discriminator) + BatchNorm (generator)", None),
    ("gan", 4, {}, "spectral norm (discriminator) + no norm (generator)", None),
    ("style-transfer", 1, {}, "InstanceNorm", None),
    ("style-transfer", 64, {}, "InstanceNorm", None),
]


@pytest.mark.parametrize("arch, batch, kwargs, first, second", SITUATIONS)
def test_first_choice_of_each_situation(arch, batch, kwargs, first, second):
    rec = recommend(arch, batch, **kwargs)
    assert rec.primary.label == first
    if second is not None:
        assert rec.alternatives[0].label == second


@pytest.mark.parametrize("arch, batch, kwargs, first, second", SITUATIONS)
def test_every_option_has_a_reason_papers_and_real_norm_names(arch, batch, kwargs, first, second):
    rec = recommend(arch, batch, **kwargs)
    options = [rec.primary, *rec.alternatives, *rec.avoid]
    assert len({o.label for o in options}) == len(options)
    for option in options:
        assert len(option.reason) > 40 and option.references
        assert all(key in REFERENCES for key in option.references)
        for name in option.norms:
            assert get_norm_spec(name).name == name  # a canonical registry name
    cited = rec.as_dict()["references"]
    assert set(cited) == {k for o in options for k in o.references}


# (arch, batch size, kwargs, a norm the guide must tell the user to avoid)
AVOIDED = [("cnn", 4, {}, "batch_norm"), ("transformer", 64, {}, "batch_norm"), ("rnn", 64, {}, "batch_norm"),
           ("style-transfer", 8, {}, "batch_norm"), ("gan", 64, {}, "batch_norm")]


@pytest.mark.parametrize("arch, batch, kwargs, norm", AVOIDED)
def test_what_to_avoid(arch, batch, kwargs, norm):
    assert any(norm in o.norms for o in recommend(arch, batch, **kwargs).avoid)


def test_large_batch_cnn_avoids_nothing():
    assert recommend("cnn", 64).avoid == ()


def test_sync_bn_reason_states_the_synchronized_batch():
    rec = recommend("cnn", 4, hardware="multi-gpu", devices=8)
    assert rec.primary.label == "SyncBatchNorm" and "4 × 8 = 32 samples" in rec.primary.reason


BAD = [
    (("mlp", 8), {}, "unknown arch 'mlp'"),
    (("cnn", 0), {}, "batch_size must be a whole number"),
    (("cnn", 2.5), {}, "batch_size must be a whole number"),
    (("cnn", True), {}, "batch_size must be a whole number"),
    (("cnn", 8), {"hardware": "tpu"}, "unknown hardware 'tpu'"),
    (("cnn", 8), {"task": "poetry"}, "unknown task 'poetry'"),
    (("cnn", 8), {"devices": 4}, "needs hardware='multi-gpu'"),
    (("cnn", 8), {"hardware": "multi-gpu", "devices": 0}, "devices must be a whole number"),
]


@pytest.mark.parametrize("args, kwargs, message", BAD)
def test_bad_input_is_a_clear_value_error(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        recommend(*args, **kwargs)


def test_unknown_arch_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        recommend("mlp", 8)
    assert all(arch in str(info.value) for arch in ARCHES)


# (arch, per-device batch, the severity normlab.audit gives BatchNorm there: below 4 an error, below 8 a warning)
AUDITED = [("cnn", 1, "error"), ("cnn", 3, "error"), ("cnn", 4, "warning"), ("cnn", 7, "warning"), ("cnn", 8, None),
           ("cnn", 64, None), ("gan", 2, "error"), ("transformer", 2, None), ("rnn", 4, None),
           ("style-transfer", 1, None)]


@pytest.mark.parametrize("arch, batch, severity", AUDITED)
def test_the_audits_batch_warning_is_relayed(arch, batch, severity):
    findings = [f for f in recommend(arch, batch).findings if f.source == "audit"]
    assert [f.level for f in findings] == ([severity] if severity else [])
    if severity and arch == "cnn":  # the same verdict as auditing a real BatchNorm network directly
        import torch
        from torch import nn

        from normlab import nn as nlnn
        from normlab.surgery import audit

        net = nn.Sequential(nn.Conv2d(3, 16, 3, bias=False), nlnn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                            nn.LazyLinear(10)).train()
        report = audit(net, torch.randn(batch + 1, 3, 12, 12), batch_size=batch)
        direct = [f for f in report if f.check == "small_batch"]
        assert [f.severity for f in direct] == [severity]
        assert direct[0].fix in findings[0].message and f"{batch} sample" in findings[0].message


def test_recommend_leaves_the_random_state_alone():
    import torch

    before = torch.random.get_rng_state()
    recommend("cnn", 2)
    assert torch.equal(before, torch.random.get_rng_state())


VERDICTS = [
    StudyVerdict("batch_size", "BatchNorm's error rises at small batches while GroupNorm's does not", "supported",
                 "quick", "gap = 12.3 pt"),
    StudyVerdict("transformer", "RMSNorm is cheaper than LayerNorm", "not supported", "quick"),
    StudyVerdict("convergence", "normalization speeds up convergence over none", "inconclusive", "smoke"),
]


@pytest.mark.parametrize("arch, cited_studies", [("cnn", {"batch_size", "convergence"}),
                                                 ("transformer", {"transformer"}), ("rnn", set())])
def test_study_verdicts_are_cited_for_the_arch_they_bear_on(arch, cited_studies):
    rec = recommend(arch, 4, verdicts=VERDICTS)
    cited = {v.study for v in VERDICTS if v.line() in rec.studies}
    assert cited == cited_studies
    assert cited <= set(STUDIES_BY_ARCH[arch])


def test_a_verdict_is_attached_to_the_options_its_claim_names():
    rec = recommend("cnn", 4, verdicts=VERDICTS)
    line = VERDICTS[0].line()
    by_label = {o.label: o for o in (rec.primary, *rec.alternatives, *rec.avoid)}
    assert line in by_label["GroupNorm"].evidence and line in by_label["BatchNorm (per device)"].evidence
    assert line not in by_label["Filter Response Normalization"].evidence
    assert VERDICTS[2].line() not in by_label["GroupNorm"].evidence  # its claim names no norm
    assert line == "batch_size (quick profile): BatchNorm's error rises at small batches while GroupNorm's does " \
                   "not — supported; gap = 12.3 pt"


# -- the command -------------------------------------------------------------------------------------------
def _write_result(home, study, verdicts, profile="quick"):
    folder = home / "studies" / study
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({
        "schema": "normlab.study-result", "schema_version": 1, "study": study, "study_version": 1,
        "profile": profile, "conclusive": True, "verdicts": verdicts}))


@pytest.mark.parametrize("arch, batch, extra, first", [(a, b, k, f) for a, b, k, f, _ in SITUATIONS[:12]])
def test_cli_prints_the_first_choice(arch, batch, extra, first, tmp_path, capsys):
    argv = ["recommend", "--arch", arch, "--batch-size", str(batch), "--home", str(tmp_path)]
    for key, value in extra.items():
        argv += [f"--{key}", str(value)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"Recommended: {first} [" in out
    assert "no local study results" in out and "normlab study all" in out
    assert ("(audit): normlab.audit flags BatchNorm" in out) == (arch == "cnn" and batch < 8)


def test_cli_json_has_the_options_and_full_references(tmp_path, capsys):
    assert main(["recommend", "--arch", "transformer", "--batch-size", "16", "--home", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["primary"]["norms"] == ["rms_norm"] and data["situation"]["arch"] == "transformer"
    assert data["references"]["zhang2019"] == REFERENCES["zhang2019"]
    assert data["studies"] == []


def test_cli_cites_a_study_result_file(tmp_path, capsys):
    claim = "BatchNorm's error rises at small batches while GroupNorm's does not"
    effect = {"name": "err(BN@2) - err(GN@2)", "estimate": 0.1234, "low": 0.08, "high": 0.17, "confidence": 0.95,
              "method": "welch-t", "n": [3, 3], "units": "pt"}
    _write_result(tmp_path, "batch_size", [{"claim": claim, "status": "supported", "effect": effect,
                                            "rule": "...", "reason": "...", "details": {}}])
    _write_result(tmp_path, "transformer", [{"claim": "RMSNorm is cheaper than LayerNorm", "status": "supported",
                                             "effect": None}])
    assert main(["recommend", "--arch", "cnn", "--batch-size", "4", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    expected = (f"batch_size (quick profile): {claim} — supported; err(BN@2) - err(GN@2) = 0.123 pt, 95% interval "
                "[0.08, 0.17]")
    assert "your study: " + expected[:60] in out
    assert "RMSNorm is cheaper" not in out  # a transformer study does not bear on a CNN
    assert "no local study results" not in out
    main(["recommend", "--arch", "cnn", "--batch-size", "4", "--home", str(tmp_path), "--json"])
    assert json.loads(capsys.readouterr().out)["studies"] == [expected]


def test_cli_skips_a_broken_result_file_with_a_note(tmp_path, capsys):
    broken = tmp_path / "studies" / "convergence"
    broken.mkdir(parents=True)
    (broken / "result.json").write_text("{not json")
    assert main(["recommend", "--arch", "cnn", "--batch-size", "64", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "convergence" in out


@pytest.mark.parametrize("argv, message", [
    (["--arch", "mlp", "--batch-size", "8"], "invalid choice: 'mlp'"),
    (["--arch", "cnn", "--batch-size", "eight"], "invalid int value"),
    (["--arch", "cnn"], "--batch-size"),
])
def test_cli_rejects_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["recommend", *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_cli_value_errors_exit_2(tmp_path, capsys):
    assert main(["recommend", "--arch", "cnn", "--batch-size", "0", "--home", str(tmp_path)]) == 2
    assert "batch_size must be a whole number" in capsys.readouterr().err


@pytest.mark.parametrize("hardware", HARDWARE)
def test_cli_accepts_every_hardware(hardware, tmp_path):
    assert main(["recommend", "--arch", "cnn", "--batch-size", "8", "--hardware", hardware, "--home",
                 str(tmp_path)]) == 0
