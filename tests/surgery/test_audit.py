"""audit: each planted pitfall is found (severity, check, module path) and a clean model stays silent."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import normlab.nn as nlnn
import surgery_models as M
from normlab.surgery import audit, param_groups


def cnn(norm: nn.Module | None = None, *, bias: bool = False, channels: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=bias), norm or nn.BatchNorm2d(channels), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 5))


def images(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8)


def adamw_on_everything(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)


def _with_eps(model: nn.Module, eps: float) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.eps = eps
    return model


# (id, model, input, audit kwargs, expected finding: severity, check, path)
PITFALLS = [
    ("batch 2 per device", lambda: cnn().train(), lambda: images(2), {}, ("error", "small_batch", "1")),
    ("batch 6 per device", lambda: cnn().train(), lambda: images(6), {}, ("warning", "small_batch", "1")),
    ("batch_size overrides the example", lambda: cnn().train(), lambda: images(16), {"batch_size": 3},
     ("error", "small_batch", "1")),
    ("ghost batches of 2", lambda: cnn(nlnn.GhostBatchNorm(8, virtual_batch_size=2)).train(), lambda: images(16), {},
     ("error", "small_batch", "1")),
    ("one value per channel crashes", lambda: nn.Sequential(nn.Flatten(), nn.BatchNorm1d(12), nn.Linear(12, 2)),
     lambda: torch.randn(1, 12), {}, ("error", "forward_failed", "(root)")),
    ("conv bias before BatchNorm", lambda: cnn(bias=True).eval(), lambda: images(16), {},
     ("warning", "bias_before_norm", "1")),
    ("linear bias before BatchNorm1d", lambda: M.mlp().eval(), lambda: torch.randn(16, 12), {},
     ("warning", "bias_before_norm", "1")),
    ("BatchNorm produces the output", lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3, bias=False),
                                                            nn.BatchNorm1d(3)).eval(),
     lambda: torch.randn(16, 4), {}, ("warning", "norm_at_output", "3")),
    ("train mode for inference", lambda: cnn().train(), lambda: images(16), {}, ("warning", "train_mode", "(root)")),
    ("mixed kinds", lambda: nn.Sequential(cnn(), nn.LayerNorm(5)).eval(), lambda: images(16), {},
     ("info", "mixed_norms", "(root)")),
    ("eps too large", lambda: cnn(nn.BatchNorm2d(8, eps=0.1)).eval(), lambda: images(16), {},
     ("warning", "eps_range", "1")),
    ("eps too small (BERT's 1e-12)", lambda: _with_eps(M.TinyTransformer(), 1e-12).eval(), M.token_batch, {},
     ("warning", "eps_range", "norm")),
    ("RMSNorm eps=None in bfloat16", lambda: nn.Sequential(nn.Linear(4, 4), nlnn.RMSNorm(4), nn.Linear(4, 2)).to(
        torch.bfloat16), lambda: torch.randn(16, 4, dtype=torch.bfloat16), {}, ("warning", "eps_range", "1")),
    ("trained γ/β", lambda: M.randomize_norms(cnn()).eval(), lambda: images(16), {}, ("info", "affine_init", "1")),
    ("weight decay on norms", lambda: cnn().train(), lambda: images(16), {"optimizer": "adamw"},
     ("warning", "weight_decay_on_norm", "1")),
    ("GroupNorm(C, C) is InstanceNorm", lambda: cnn(nn.GroupNorm(8, 8)).eval(), lambda: images(16), {},
     ("info", "norm_equivalence", "1")),
    ("GroupNorm(1, C) is LayerNorm", lambda: cnn(nn.GroupNorm(1, 8)).eval(), lambda: images(16), {},
     ("info", "norm_equivalence", "1")),
    ("InstanceNorm on 1x1 maps", lambda: nn.Sequential(nn.Conv2d(3, 8, 8, bias=False),
                                                       nn.InstanceNorm2d(8, affine=True), nn.Flatten(),
                                                       nn.Linear(8, 2)).eval(),
     lambda: images(16), {}, ("error", "degenerate_norm", "1")),
    ("no normalization", lambda: nn.Sequential(nn.Linear(4, 2)), lambda: torch.randn(16, 4), {},
     ("info", "no_norm", "(root)")),
]


def _audit(build, make_input, kwargs):
    model = build()
    if kwargs.get("optimizer") == "adamw":
        kwargs = {**kwargs, "optimizer": adamw_on_everything(model)}
    return audit(model, make_input(), **kwargs)


@pytest.mark.parametrize("case", PITFALLS, ids=[c[0] for c in PITFALLS])
def test_each_planted_pitfall_is_found(case):
    _, build, make_input, kwargs, expected = case
    report = _audit(build, make_input, kwargs)
    found = [(f.severity, f.check, f.path) for f in report]
    assert expected in found, str(report)
    finding = next(f for f in report if (f.severity, f.check, f.path) == expected)
    assert finding.why and finding.fix and finding.message


# Clean models: no warning and no error (information findings are allowed only where listed: none here).
CLEAN = [
    ("resnet for inference", lambda: M.TinyResNet().eval(), lambda: M.image_batch(16), None),
    ("resnet for training with param_groups", M.TinyResNet, lambda: M.image_batch(16),
     lambda model: torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)),
    ("transformer for inference", lambda: M.TinyTransformer().eval(), lambda: M.token_batch(2), None),
    ("groupnorm cnn at batch 2", lambda: cnn(nn.GroupNorm(4, 8)), lambda: images(2),
     lambda model: torch.optim.SGD(param_groups(model, 1e-4), lr=0.1)),
]


@pytest.mark.parametrize("case", CLEAN, ids=[c[0] for c in CLEAN])
def test_clean_models_give_no_findings(case):
    _, build, make_input, make_optimizer = case
    model = build()
    report = audit(model, make_input(), optimizer=make_optimizer(model) if make_optimizer else None)
    assert report.ok and len(report) == 0, str(report)
    assert "no pitfall found" in str(report)


def test_audit_leaves_the_model_and_rng_as_they_were():
    model = M.randomize_norms(M.TinyResNet()).train()
    state = copy.deepcopy(model.state_dict())
    rng = torch.random.get_rng_state()
    audit(model, M.image_batch(2))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), rng) and model.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_train_mode_under_no_grad_is_an_error():
    with torch.no_grad():
        report = audit(cnn().train(), images(16))
    assert ("error", "train_mode", "(root)") in [(f.severity, f.check, f.path) for f in report]


def test_hugging_face_style_keyword_inputs():
    class KeywordModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = M.TinyTransformer()

        def forward(self, input_ids):
            return self.inner(input_ids)

    report = audit(KeywordModel().eval(), {"input_ids": M.token_batch(2)})
    assert report.ok


def test_report_is_a_list_of_findings_and_prints_a_table():
    report = audit(cnn(bias=True).train(), images(2))
    assert isinstance(report, list) and [f.severity for f in report] == sorted(
        (f.severity for f in report), key=("error", "warning", "info").index)
    text = str(report)
    assert text.splitlines()[1].split() == ["#", "severity", "check", "module", "finding"]
    assert "why:" in text and "fix:" in text and "small_batch" in text
    assert report.errors and report.warnings and not report.ok


@pytest.mark.parametrize("kwargs, error, match", [
    ({"example_input": "text"}, TypeError, "example_input"),
    ({"example_input": images(2), "batch_size": 0}, ValueError, "batch_size"),
    ({"example_input": images(2), "optimizer": 3}, TypeError, "optimizer"),
])
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        audit(cnn(), **kwargs)
