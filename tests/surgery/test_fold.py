"""fold_bn: the folded model computes the same function with fewer parameters and modules; what cannot be
folded is left and listed with the reason; the user's model is untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

import normlab.nn as nlnn
import surgery_models as M
from normlab.surgery import fold_bn, swap_norm

# (id, model, input, BatchNorms expected folded, fx traced?)
FOLDABLE = [
    ("plain sequential", M.plain_sequential, M.image_batch, 2, True),
    ("mlp linear→bn1d", M.mlp, lambda: torch.randn(5, 12), 2, True),
    ("nested ModuleList/ModuleDict", M.Nested, M.image_batch, 3, True),
    ("resnet with skips and downsample", M.TinyResNet, M.image_batch, 10, True),
    ("one bn shared after two convs", M.Shared, M.image_batch, 2, True),
    ("grouped, depthwise and transposed convs", M.Transposed, M.image_batch, 3, True),
    ("untraceable: Sequential fallback", M.Untraceable, M.image_batch, 2, False),
]


def _rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("case", FOLDABLE, ids=[c[0] for c in FOLDABLE])
def test_fold_keeps_outputs_and_shrinks_the_model(case):
    _, build, make_input, expected, traced = case
    model = M.randomize_norms(build()).eval()
    x = make_input()
    report = fold_bn(model, x)
    folded = report.model
    assert sum(r.folded for r in report) == expected == len(report)
    assert isinstance(folded, fx.GraphModule) == traced
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    with torch.no_grad():
        assert _rel_error(folded(x), model(x)) < 1e-5
    assert report.max_rel_error is not None and report.max_rel_error < 1e-5
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(folded) < count(model) and len(list(folded.modules())) < len(list(model.modules()))
    assert report.params == (count(model), count(folded))


@pytest.mark.parametrize("layer, fuse", [
    (nn.Conv2d(4, 6, 3, bias=False), fuse_conv_bn_eval),
    (nn.Conv2d(4, 6, 3, groups=2), fuse_conv_bn_eval),
    (nn.Conv1d(4, 6, 3), fuse_conv_bn_eval),
    (nn.ConvTranspose2d(4, 6, 3), lambda conv, bn: fuse_conv_bn_eval(conv, bn, transpose=True)),
    (nn.Linear(4, 6), fuse_linear_bn_eval),
])
def test_folded_weights_match_torch_fusion(layer, fuse):
    """Independent reference: torch's own one-pair fusion utilities."""
    bn = nn.BatchNorm1d(6) if isinstance(layer, (nn.Linear, nn.Conv1d)) else nn.BatchNorm2d(6)
    model = M.randomize_norms(nn.Sequential(layer, bn)).eval()
    ours = fold_bn(model).model
    reference = fuse(copy.deepcopy(layer).eval(), copy.deepcopy(bn).eval())
    folded_layer = next(m for m in ours.modules() if isinstance(m, type(layer)))
    torch.testing.assert_close(folded_layer.weight, reference.weight, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(folded_layer.bias, reference.bias, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bn_path, reason", [
    ("bn_after_add", "call_function add"),
    ("bn_input_shared", "also feeds"),
    ("bn_train", "train mode"),
    ("bn_no_stats", "no running statistics"),
])
def test_what_cannot_be_folded_is_left_with_the_reason(bn_path, reason):
    model = M.randomize_norms(M.unfoldable())
    with pytest.warns(UserWarning, match="folded nothing"):
        report = fold_bn(model)
    record = next(r for r in report if r.path == bn_path)
    assert not record.folded and reason in record.reason and reason in str(report)
    assert isinstance(report.model.get_submodule(bn_path), nn.BatchNorm2d)


def test_conv_called_twice_is_not_folded():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x)) + self.conv(x)

    with pytest.warns(UserWarning, match="folded nothing"):
        report = fold_bn(M.randomize_norms(Twice()).eval())
    assert not report[0].folded and "called 2 times" in report[0].reason


def test_users_model_is_not_changed():
    model = M.randomize_norms(M.TinyResNet()).eval()
    before = copy.deepcopy(model.state_dict())
    fold_bn(model)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model.bn1, nn.BatchNorm2d)


def test_normlab_batchnorm_folds_too():
    model = M.randomize_norms(M.TinyResNet()).eval()
    swap_norm(model, "normlab")
    assert isinstance(model.bn1, nlnn.BatchNorm2d)
    x = M.image_batch()
    report = fold_bn(model, x)
    assert all(r.folded for r in report) and report.max_rel_error < 1e-5


def test_train_mode_model_folds_nothing_and_warns():
    with pytest.warns(UserWarning, match="train mode"):
        report = fold_bn(M.plain_sequential())
    assert not any(r.folded for r in report) and report.max_rel_error is None


def test_model_without_batchnorm_reports_nothing_to_do():
    with pytest.warns(UserWarning, match="nothing to do"):
        report = fold_bn(nn.Sequential(nn.Conv2d(3, 3, 1), nn.GroupNorm(1, 3)).eval())
    assert len(report) == 0 and "nothing to do" in str(report)


def test_not_a_module_raises():
    with pytest.raises(TypeError, match="nn.Module"):
        fold_bn(lambda x: x)
