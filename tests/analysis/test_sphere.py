"""sphere_stats against each layer's own output: with γ = 1, β = 0 a normalization layer outputs the normalized
vectors themselves, so their norms — grouped here independently, per kind — must match the report."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import normlab.nn as nl
from normlab.analysis import normalized_vectors, sphere_stats


def _frn(c):
    layer = nl.FilterResponseNorm(c)
    with torch.no_grad():
        layer.tau.fill_(-1e30)  # no threshold: the output is the normalized vector
    return layer


# The grouping of the output into vectors, written out per kind (input (N, C, H, W) unless stated).
def per_channel(y):
    return y.transpose(0, 1).reshape(y.shape[1], -1)


def per_sample_channel(y):
    return y.reshape(y.shape[0] * y.shape[1], -1)


def per_group(groups):
    return lambda y: y.reshape(y.shape[0] * groups, -1)


def trailing(n):
    return lambda y: y.reshape(-1, n)


def channels_per_position(y):
    return y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])


def ghost(size):
    return lambda y: torch.cat([per_channel(part) for part in y.split(size)])


# name: (layer factory, input shape, grouping of the output into vectors)
CASES = {
    "torch_batch_norm": (lambda: nn.BatchNorm2d(6), (8, 6, 5, 5), per_channel),
    "normlab_batch_norm": (lambda: nl.BatchNorm2d(6), (8, 6, 5, 5), per_channel),
    "normlab_batch_norm_1d": (lambda: nl.BatchNorm1d(6), (8, 6), per_channel),
    "ghost_batch_norm": (lambda: nl.GhostBatchNorm(6, virtual_batch_size=4), (8, 6, 5, 5), ghost(4)),
    "torch_instance_norm": (lambda: nn.InstanceNorm2d(6), (4, 6, 5, 5), per_sample_channel),
    "normlab_instance_norm": (lambda: nl.InstanceNorm2d(6), (4, 6, 5, 5), per_sample_channel),
    "torch_instance_norm_unbatched": (lambda: nn.InstanceNorm2d(6), (6, 5, 5), trailing(25)),
    "normlab_instance_norm_unbatched": (lambda: nl.InstanceNorm2d(6), (6, 5, 5), trailing(25)),
    "torch_group_norm": (lambda: nn.GroupNorm(3, 6), (4, 6, 5, 5), per_group(3)),
    "normlab_group_norm": (lambda: nl.GroupNorm(3, 6), (4, 6, 5, 5), per_group(3)),
    "torch_layer_norm": (lambda: nn.LayerNorm((5, 5)), (4, 6, 5, 5), trailing(25)),
    "normlab_layer_norm": (lambda: nl.LayerNorm(5), (4, 6, 5, 5), trailing(5)),
    "layer_norm_2d": (lambda: nl.LayerNorm2d(6), (4, 6, 5, 5), channels_per_position),
    "torch_rms_norm": (lambda: nn.RMSNorm(5), (4, 6, 5), trailing(5)),
    "normlab_rms_norm": (lambda: nl.RMSNorm(5, eps=1e-6), (4, 6, 5), trailing(5)),
    "scale_norm": (lambda: nl.ScaleNorm(9), (4, 9), trailing(9)),
    "filter_response_norm": (lambda: _frn(6), (4, 6, 5, 5), per_sample_channel),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_radius_matches_the_layers_own_output(case):
    factory, shape, grouping = CASES[case]
    torch.manual_seed(0)
    layer = factory()
    model = nn.Sequential(nn.Identity(), layer)
    x = torch.randn(shape) * 3 + 1
    report = sphere_stats(model, x)
    (stats,) = report.layers
    with torch.no_grad():
        own = grouping(layer(x)).double()
    radii = own.norm(dim=1)
    n = own.shape[1]
    assert (stats.n, stats.num_vectors) == (n, own.shape[0])
    assert math.isclose(stats.radius_mean, radii.mean().item(), rel_tol=1e-5)
    assert stats.max_relative_error == pytest.approx((radii / math.sqrt(n) - 1).abs().max().item(), abs=1e-5)
    assert abs(stats.radius_mean / stats.expected_radius - 1) < 1e-4  # on the sphere (up to eps)
    incoming = grouping(x).double().norm(dim=1)
    assert math.isclose(stats.input_norm_mean, incoming.mean().item(), rel_tol=1e-9)
    assert math.isclose(stats.input_norm_max, incoming.max().item(), rel_tol=1e-9)


def test_input_norms_scale_but_the_radius_does_not():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nl.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 8),
                          nl.LayerNorm(8))
    x = torch.randn(6, 3, 6, 6)
    before = sphere_stats(model, x)
    with torch.no_grad():
        model[0].weight.mul_(1000.0)
        model[0].bias.mul_(1000.0)
    after = sphere_stats(model, x)
    assert after["1"].input_norm_mean == pytest.approx(1000 * before["1"].input_norm_mean, rel=1e-6)
    for name in ("1", "5"):  # the radius stays √n; only eps's tiny pull (var / (var + eps)) fades
        assert after[name].radius_mean == pytest.approx(before[name].radius_mean, rel=1e-4)
        assert after[name].max_relative_error <= before[name].max_relative_error


def test_the_model_is_left_unchanged():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nl.BatchNorm2d(4)).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    sphere_stats(model, torch.randn(4, 3, 6, 6))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert model.training and model[1].training


def test_eval_mode_batch_norm_uses_the_batchs_own_statistics():
    model = nn.Sequential(nn.BatchNorm1d(3)).eval()  # running stats 0/1, data far from them
    report = sphere_stats(model, torch.randn(32, 3) * 10 + 5)
    assert report["0"].radius_mean == pytest.approx(math.sqrt(32), rel=1e-6)


def test_layers_called_twice_and_skipped_kinds():
    norm = nl.LayerNorm(4)
    model = nn.Sequential(norm, norm, nl.DynamicTanh(4), nn.Identity())
    report = sphere_stats(model, (torch.randn(3, 4),))
    assert len(report) == 1 and report["0"].num_vectors == 6
    assert set(report.skipped) == {"2"}
    assert "layer_norm" in repr(report) and "skipped 2" in repr(report)


def test_normalized_vectors_rejects_non_normalizing_layers():
    with pytest.raises(ValueError, match="does not project"):
        normalized_vectors(nl.DynamicTanh(4), torch.randn(2, 4))


@pytest.mark.parametrize("bad", ["not a model", 3])
def test_bad_model(bad):
    with pytest.raises(TypeError, match="nn.Module"):
        sphere_stats(bad, torch.randn(2, 3))
