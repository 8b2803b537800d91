"""One layer at a time between normlab and torch.nn: weights, buffers, mode, dtype and outputs survive."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normlab.nn as nl

TORCH_LAYERS = [
    (lambda: nn.BatchNorm1d(4, momentum=0.3), (6, 4)),
    (lambda: nn.BatchNorm2d(4, affine=False), (3, 4, 2, 2)),
    (lambda: nn.BatchNorm3d(4, track_running_stats=False), (3, 4, 2, 2, 2)),
    (lambda: nn.InstanceNorm1d(4, affine=True), (3, 4, 5)),
    (lambda: nn.InstanceNorm2d(4, track_running_stats=True), (3, 4, 5, 5)),
    (lambda: nn.InstanceNorm3d(4), (3, 4, 2, 3, 3)),
    (lambda: nn.LayerNorm((3, 4), eps=1e-6), (2, 3, 4)),
    (lambda: nn.LayerNorm(4, bias=False), (2, 4)),
    (lambda: nn.GroupNorm(2, 4, bias=False), (3, 4, 5)),
    (lambda: nn.RMSNorm(4), (3, 4)),
]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("make, shape", TORCH_LAYERS, ids=lambda v: "" if isinstance(v, tuple) else None)
def test_round_trip_keeps_weights_buffers_mode_and_outputs(make, shape, mode):
    theirs = make().double().train(mode == "train")
    with torch.no_grad():
        for t in theirs.state_dict().values():
            if t.is_floating_point():
                t.uniform_(0.5, 1.5)
    ours = nl.from_torch(theirs)
    back = nl.to_torch(ours)
    assert ours.training == theirs.training == back.training
    assert all(p.dtype == torch.float64 for p in ours.parameters())
    assert type(back) is type(theirs)
    for key, value in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("layer", [nl.LayerNorm2d(4), nl.BatchRenorm(4), nl.DynamicTanh(4), nl.BatchNorm(4)],
                         ids=lambda m: type(m).__name__)
def test_layers_without_a_torch_counterpart_say_so(layer):
    with pytest.raises(TypeError, match="no torch.nn counterpart; layers that convert: BatchNorm1d"):
        nl.to_torch(layer)


def test_from_torch_rejects_unknown_layers():
    with pytest.raises(TypeError, match="no normlab equivalent for Linear"):
        nl.from_torch(nn.Linear(2, 2))
