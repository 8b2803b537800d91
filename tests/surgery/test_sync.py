"""convert_sync_bn / revert_sync_bn: both ways, keeping state, mode, device and dtype; the class comes back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normlab.nn as nlnn
import surgery_models as M
from normlab.surgery import convert_sync_bn, revert_sync_bn

# (BatchNorm layer, an input for it)
BATCHNORMS = [
    (lambda: nn.BatchNorm1d(4), (5, 4)),
    (lambda: nn.BatchNorm1d(4), (5, 4, 3)),
    (lambda: nn.BatchNorm2d(4), (5, 4, 3, 3)),
    (lambda: nn.BatchNorm3d(4), (5, 4, 2, 3, 3)),
    (lambda: nlnn.BatchNorm1d(4), (5, 4)),
    (lambda: nlnn.BatchNorm2d(4), (5, 4, 3, 3)),
    (lambda: nlnn.BatchNorm3d(4), (5, 4, 2, 3, 3)),
    (lambda: nlnn.BatchNorm(4), (5, 4, 3, 3)),
    (lambda: nlnn.BatchNorm2d(4, bias=False), (5, 4, 3, 3)),
    (lambda: nn.BatchNorm2d(4, affine=False, track_running_stats=False), (5, 4, 3, 3)),
]


@pytest.mark.parametrize("make, shape", BATCHNORMS)
@pytest.mark.parametrize("training", [False, True])
def test_convert_and_revert_round_trip(make, shape, training):
    model = M.randomize_norms(nn.Sequential(nn.Identity(), make())).double().train(training)
    original = model[1]
    cls, state = type(original), {k: v.clone() for k, v in original.state_dict().items()}
    x = torch.randn(shape, dtype=torch.float64)
    expected = original(x.clone()) if not training else None

    convert_sync_bn(model)
    sync = model[1]
    assert isinstance(sync, nn.SyncBatchNorm) and sync.training == training
    assert all(t.dtype == torch.float64 for t in sync.parameters())
    if expected is not None:  # eval: the same computation (SyncBatchNorm needs a process group to train)
        torch.testing.assert_close(sync(x), expected)

    revert_sync_bn(model)
    back = model[1]
    assert type(back) is cls and back.training == training
    assert back.state_dict().keys() == state.keys()
    assert all(torch.equal(back.state_dict()[k], state[k]) for k in state)


def test_resnet_round_trip_keeps_every_tensor():
    model = M.randomize_norms(M.TinyResNet()).eval()
    x = M.image_batch()
    expected = model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = convert_sync_bn(model)
    assert len(report) == 10 and sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules()) == 10
    torch.testing.assert_close(model(x), expected)
    revert_sync_bn(model)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


@pytest.mark.parametrize("dims, expected", [(None, nn.BatchNorm2d), (3, nn.BatchNorm3d), (1, nn.BatchNorm1d)])
def test_revert_of_a_foreign_syncbatchnorm_defaults_to_2d(dims, expected):
    """A SyncBatchNorm made by torch's converter has no recorded class or rank: BatchNorm2d, or dims=."""
    model = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm1d(4))).eval()
    report = revert_sync_bn(model, dims=dims)
    assert type(model[0]) is expected
    assert ("assumed" in report[0].note) == (dims is None)


@pytest.mark.parametrize("shape, expected", [
    ((2, 4), nn.BatchNorm1d), ((2, 4, 3), nn.BatchNorm1d), ((2, 4, 3, 3), nn.BatchNorm2d),
    ((2, 4, 2, 2, 2), nn.BatchNorm3d),
])
def test_conversion_records_the_rank_it_sees(shape, expected):
    model = nn.Sequential(nlnn.BatchNorm(4)).eval()
    convert_sync_bn(model)
    del model[0]._normlab_sync_origin  # forget the class: the rank seen in a forward must decide
    model(torch.randn(shape))
    revert_sync_bn(model)
    assert type(model[0]) is expected


def test_batch_variants_are_left_and_listed():
    model = nn.Sequential(nlnn.BatchRenorm(4), nlnn.GhostBatchNorm(4), nn.BatchNorm1d(4))
    report = convert_sync_bn(model)
    assert [type(m).__name__ for m in model] == ["BatchRenorm", "GhostBatchNorm", "SyncBatchNorm"]
    assert sum("left" in r.note for r in report) == 2


def test_root_batchnorm_is_returned_in_the_report():
    report = convert_sync_bn(nn.BatchNorm2d(3))
    assert isinstance(report.model, nn.SyncBatchNorm)
    assert type(revert_sync_bn(report.model).model) is nn.BatchNorm2d


@pytest.mark.parametrize("call", [convert_sync_bn, revert_sync_bn])
def test_nothing_to_convert_warns(call):
    with pytest.warns(UserWarning, match="nothing to do"):
        call(nn.Sequential(nn.LayerNorm(3)))


def test_bad_dims_raises():
    with pytest.raises(ValueError, match="dims must be 1, 2 or 3"):
        revert_sync_bn(nn.Sequential(), dims=4)
