"""WeightNormTracker: the plain-SGD growth law on a real BN network, the equilibrium formulas against a
simulated spherical random walk, and weight_norm_stats against float64 SVDs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import normlab.nn as nl
from normlab.analysis import (
    WeightNormTracker,
    equilibrium_angular_update,
    equilibrium_norm,
    weight_norm_stats,
)
from normlab.weight import reparametrize


def bn_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nl.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nl.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )


def _train(model, optimizer, steps, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(64, 3, 8, 8, generator=gen, dtype=dtype)
    y = torch.randint(4, (64,), generator=gen)
    for _ in range(steps):
        idx = torch.randint(64, (16,), generator=gen)
        optimizer.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        optimizer.step()


#: dtype -> bound on the per-step relative deviation for scale-invariant weights
GROWTH_TOLERANCE = {torch.float64: 1e-4, torch.float32: 1e-3}


@pytest.mark.parametrize("dtype", list(GROWTH_TOLERANCE), ids=["float64", "float32"])
def test_plain_sgd_growth_law(dtype):
    torch.manual_seed(0)
    model = bn_net().to(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    tracker = WeightNormTracker(model).attach(optimizer)
    _train(model, optimizer, 20, dtype)
    assert set(tracker.parameters) == {"0.weight", "3.weight", "8.weight"}
    for name in ("0.weight", "3.weight"):  # conv weights followed by BatchNorm: scale-invariant
        h = tracker.history(name)
        assert len(h["norm"]) == 20
        assert max(h["relative_deviation"]) <= GROWTH_TOLERANCE[dtype]
        assert all(b > a for a, b in zip(h["norm"], h["norm_after"]))  # the norm only grows
        assert max(abs(c) for c in h["grad_cosine"]) < 1e-3
    # the classifier is not scale-invariant: its gradient has a radial part and the law fails
    deviation = sorted(tracker.history("8.weight")["relative_deviation"])
    assert deviation[len(deviation) // 2] > 10 * GROWTH_TOLERANCE[dtype]  # the median step
    assert sum(d > GROWTH_TOLERANCE[dtype] for d in deviation) >= 0.9 * len(deviation)


def test_weight_norm_direction_grows_exactly():
    """Weight normalization's v is exactly scale-invariant (no eps): the law holds to rounding."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 4)).double()
    reparametrize(model, "weight_norm", types=(nn.Linear,))
    direction = "1.parametrizations.weight.original1"
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker = WeightNormTracker(model, [direction]).attach(optimizer)
    _train(model, optimizer, 10, torch.float64)
    assert max(tracker.history(direction)["relative_deviation"]) < 1e-12


def test_effective_lr_and_angle_are_what_they_say():
    torch.manual_seed(0)
    model = bn_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = WeightNormTracker(model, ["0.weight"])  # driven by hand, without attach()
    F.cross_entropy(model(torch.rand(8, 3, 8, 8)), torch.randint(4, (8,))).backward()
    before = model[0].weight.detach().double().clone()
    tracker.before_step(optimizer)
    optimizer.step()
    tracker.after_step()
    after = model[0].weight.detach().double().flatten()
    (record,) = tracker.records
    assert record.effective_lr == pytest.approx(0.1 / before.norm().item() ** 2, rel=1e-12)
    assert record.norm_after == pytest.approx(after.norm().item(), rel=1e-12)
    cos = (before.flatten() @ after / (before.norm() * after.norm())).item()
    assert record.angular_update == pytest.approx(math.acos(min(1.0, cos)), rel=1e-6)


def _spherical_random_walk(lr, weight_decay, momentum, steps, unit_grad_sq=4.0, dim=200, seed=0):
    """SGD on a weight whose gradients are random, orthogonal to it, of norm √G̃/‖w‖: the model behind the
    equilibrium formulas, simulated here in float64."""
    gen = torch.Generator().manual_seed(seed)
    holder = nn.Module()
    holder.w = nn.Parameter(torch.randn(dim, generator=gen, dtype=torch.float64) / math.sqrt(dim))
    optimizer = torch.optim.SGD(holder.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    tracker = WeightNormTracker(holder, ["w"]).attach(optimizer)
    for _ in range(steps):
        w = holder.w.detach()
        g = torch.randn(dim, generator=gen, dtype=torch.float64)
        g = g - (g @ w) / (w @ w) * w
        holder.w.grad = g / g.norm() * math.sqrt(unit_grad_sq) / w.norm()
        optimizer.step()
    return tracker


@pytest.mark.parametrize("lr, weight_decay, momentum", [(0.1, 0.01, 0.0), (0.5, 0.01, 0.0), (0.1, 1e-3, 0.9),
                                                        (0.05, 5e-3, 0.9)])
def test_equilibrium_matches_a_simulated_random_walk(lr, weight_decay, momentum):
    tracker = _spherical_random_walk(lr, weight_decay, momentum, steps=3000)
    result = tracker.equilibrium(window=500)["w"]
    assert result.unit_grad_sq == pytest.approx(4.0, rel=1e-9)
    assert result.measured_norm == pytest.approx(result.predicted_norm, rel=2e-3)
    assert result.measured_angular_update == pytest.approx(result.predicted_angular_update, rel=2e-2)
    start = tracker.history("w")["norm"][0]
    assert abs(start - result.predicted_norm) > 0.5  # it really had to travel to get there


def test_equilibrium_formulas():
    # β = 0: the fixed point of r² ← (1 − ηλ)² r² + η² G̃ / r², solved here directly
    lr, wd, unit = 0.3, 0.02, 5.0
    r = equilibrium_norm(lr, wd, unit)
    assert (1 - lr * wd) ** 2 * r**2 + lr**2 * unit / r**2 == pytest.approx(r**2, rel=1e-12)
    assert equilibrium_norm(lr, wd, unit, momentum=0.9) == pytest.approx((lr * unit / (2 * wd * 0.1)) ** 0.25)
    assert equilibrium_angular_update(lr, wd, momentum=0.9) == pytest.approx(math.sqrt(2 * lr * wd / 1.9))
    with pytest.raises(ValueError, match="weight_decay"):
        equilibrium_norm(lr, 0.0, unit)
    with pytest.raises(ValueError, match="momentum"):
        equilibrium_norm(lr, wd, unit, momentum=1.0)


@pytest.mark.slow
def test_bn_network_approaches_the_predicted_equilibrium():
    torch.manual_seed(0)
    model = bn_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-3)
    tracker = WeightNormTracker(model, ["0.weight", "3.weight"]).attach(optimizer)
    _train(model, optimizer, 800, torch.float32)
    for name, result in tracker.equilibrium(window=100).items():
        assert result.measured_norm == pytest.approx(result.predicted_norm, rel=0.1), name
        assert result.measured_angular_update == pytest.approx(result.predicted_angular_update, rel=0.1), name


def test_other_optimizers_record_norms_only():
    model = bn_net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    tracker = WeightNormTracker(model, ["0.weight"], every=2).attach(optimizer)
    _train(model, optimizer, 6, torch.float32)
    h = tracker.history("0.weight")
    assert h["step"] == [0, 2, 4] and all(math.isnan(d) for d in h["relative_deviation"])
    assert math.isnan(tracker.equilibrium()["0.weight"].predicted_norm)
    tracker.detach()
    _train(model, optimizer, 2, torch.float32)
    assert len(tracker.records) == 3


def test_state_dict_round_trip():
    model = bn_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = WeightNormTracker(model).attach(optimizer)
    _train(model, optimizer, 3, torch.float32)
    fresh = WeightNormTracker(model)
    fresh.load_state_dict(tracker.state_dict())
    assert fresh.records == tracker.records and fresh.step_count == 3
    assert "0.weight" in tracker.table()


def test_unknown_parameter_names():
    with pytest.raises(ValueError, match="unknown parameter"):
        WeightNormTracker(bn_net(), ["nope"])


def test_weight_norm_stats_against_float64_svd():
    torch.manual_seed(0)
    model = bn_net()
    reparametrize(model, "weight_norm", types=(nn.Linear,))
    model.train()
    model(torch.rand(16, 3, 8, 8) * 5)
    model.eval()
    stats = {s.name: s for s in weight_norm_stats(model).layers}
    for name in ("0", "3", "8"):
        w = dict(model.named_modules())[name].weight.detach().double()
        singular = torch.linalg.svdvals(w.reshape(w.shape[0], -1))
        assert stats[name].frobenius == pytest.approx(singular.square().sum().sqrt().item(), rel=1e-9)
        assert stats[name].spectral == pytest.approx(singular.max().item(), rel=1e-9)
    bn = model[1]
    gain = bn.weight.detach().double().abs() / torch.sqrt(bn.running_var.double() + bn.eps)
    assert stats["1"].gain_max == pytest.approx(gain.max().item(), rel=1e-9)
    summary = weight_norm_stats(model).summary()
    expected = sum(math.log10(stats[n].spectral) for n in ("0", "3", "8"))
    assert summary["log10_spectral_product"] == pytest.approx(expected)
