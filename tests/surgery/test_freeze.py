"""freeze_norm / unfreeze_norm: running statistics fixed through model.train(), affine frozen on request."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import normlab.nn as nlnn
import surgery_models as M
from normlab.surgery import freeze_norm, unfreeze_norm
from normlab.surgery.freeze import is_frozen

# (layer, input shape, has running statistics to freeze)
LAYERS = [
    (lambda: nn.BatchNorm2d(4), (6, 4, 3, 3), True),
    (lambda: nlnn.BatchNorm2d(4), (6, 4, 3, 3), True),
    (lambda: nlnn.BatchRenorm(4), (6, 4, 3, 3), True),
    (lambda: nn.InstanceNorm2d(4, affine=True, track_running_stats=True), (6, 4, 3, 3), True),
    (lambda: nn.GroupNorm(2, 4), (6, 4, 3, 3), False),
    (lambda: nn.BatchNorm2d(4, track_running_stats=False), (6, 4, 3, 3), False),
    (lambda: nlnn.RMSNorm(4), (6, 3, 4), False),
]


@pytest.mark.parametrize("make, shape, has_stats", LAYERS, ids=lambda v: getattr(v, "__name__", None))
@pytest.mark.parametrize("affine", [False, True])
def test_freeze_fixes_statistics_through_train_and_affine_on_request(make, shape, has_stats, affine):
    model = M.randomize_norms(nn.Sequential(nn.Identity(), make()))
    layer = model[1]
    report = freeze_norm(model, affine=affine)
    assert len(report) == 1
    buffers = {k: v.clone() for k, v in layer.state_dict().items()}
    model.train()
    assert model.training and layer.training == (not has_stats)
    model(torch.randn(shape))
    for name, value in layer.state_dict().items():
        if "running" in name:
            assert torch.equal(value, buffers[name])  # no update in a training-mode forward
    assert all(p.requires_grad != affine for p in layer.parameters())
    assert ("frozen" in report[0].params) == affine


@pytest.mark.parametrize("copy_model", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))],
                         ids=["deepcopy", "pickle"])
def test_freeze_survives_copies(copy_model):
    model = M.TinyResNet()
    freeze_norm(model)
    clone = copy_model(model).train()
    assert is_frozen(clone.bn1) and not clone.bn1.training and clone.conv1.training
    assert clone.bn1.train.module is clone.bn1


def test_frozen_model_saves_and_loads_the_same_state_dict():
    model = M.randomize_norms(M.TinyResNet())
    before = copy.deepcopy(model.state_dict())
    freeze_norm(model, affine=True)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert list(torch.load(io.BytesIO(buffer.getvalue()))) == list(before)


def test_unfreeze_restores_train_mode_and_gradients():
    model = M.TinyResNet()
    freeze_norm(model, affine=True)
    report = unfreeze_norm(model)
    assert len(report) == 10
    model.train()
    assert all(m.training and m.weight.requires_grad for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_nothing_to_freeze_warns():
    with pytest.warns(UserWarning, match="nothing to do"):
        report = freeze_norm(nn.Sequential(nn.Linear(2, 2)))
    assert "nothing to do" in str(report)
