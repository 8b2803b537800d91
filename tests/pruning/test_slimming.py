"""Network slimming: exact removal of dead channels, pruned sizes against independently built models, the
penalty and threshold against direct computations, and the random control."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import normlab.nn as nl
from normlab.pruning import (
    GroupNormPruner,
    apply_plan,
    channel_importance,
    count_flops,
    count_parameters,
    gamma_l1_penalty,
    global_threshold,
    plan_slimming,
    random_slim,
    slim,
)

# name -> factory(channels); GroupNorm uses groups of 2 channels so any even width is valid
NORMS = {
    "torch_bn": nn.BatchNorm2d,
    "normlab_bn": nl.BatchNorm2d,
    "batch_renorm": nl.BatchRenorm,
    "ghost_bn": lambda c: nl.GhostBatchNorm(c, virtual_batch_size=4),
    "instance_norm": lambda c: nl.InstanceNorm2d(c, affine=True, track_running_stats=True),
    "filter_response_norm": nl.FilterResponseNorm,
    "normlab_gn": lambda c: nl.GroupNorm(c // 2, c),
    "torch_gn": lambda c: nn.GroupNorm(c // 2, c),
}


class Chain(nn.Module):
    """conv-norm-relu ×2, pool, linear."""

    def __init__(self, norm, widths=(8, 8), classes=3):
        super().__init__()
        a, b = widths
        self.conv1, self.norm1 = nn.Conv2d(3, a, 3, padding=1), norm(a)
        self.conv2, self.norm2 = nn.Conv2d(a, b, 3, padding=1), norm(b)
        self.fc = nn.Linear(b, classes)

    def forward(self, x):
        x = torch.relu(self.norm1(self.conv1(x)))
        x = torch.relu(self.norm2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class Residual(nn.Module):
    """stem, one residual block (its BatchNorm is coupled to the stem's by the addition), head."""

    def __init__(self, norm, width=8, classes=3):
        super().__init__()
        self.stem, self.norm0 = nn.Conv2d(3, width, 3, padding=1, bias=False), norm(width)
        self.conv, self.norm1 = nn.Conv2d(width, width, 3, padding=1, bias=False), norm(width)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = torch.relu(self.norm0(self.stem(x)))
        x = torch.relu(x + self.norm1(self.conv(x)))
        return self.fc(x.mean((2, 3)))


def _prepare(model: nn.Module, x: torch.Tensor, dead: dict[str, list[int]], seed: int = 0) -> None:
    """Give running statistics and random affine parameters, then zero γ, β (and τ) of the ``dead`` channels."""
    torch.manual_seed(seed)
    model.train()
    for _ in range(2):
        model(x)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.dim() == 1:
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.5)
                if hasattr(module, "tau"):
                    module.tau.normal_(-1.0, 0.1)
            for channel in dead.get(name, []):
                module.weight[channel] = 0.0
                module.bias[channel] = 0.0
                if hasattr(module, "tau"):
                    module.tau[channel] = 0.0  # max(0·x̂ + 0, 0) = 0
    model.eval()


@pytest.mark.parametrize("norm", list(NORMS), ids=list(NORMS))
def test_dead_channels_are_removed_exactly(norm):
    factory = NORMS[norm]
    x = torch.rand(8, 3, 6, 6)
    model = Chain(factory)
    dead = {"norm1": [2, 3], "norm2": [4, 5]}  # whole groups of 2 for GroupNorm
    _prepare(model, x, dead)
    reference = model(x)

    plan = plan_slimming(model, x, ratio=4 / 16)
    removed = {g.norms: set(g.remove) for g in plan.groups}
    assert removed == {("norm1",): {2, 3}, ("norm2",): {4, 5}}

    pruned = apply_plan(model, x, plan)
    out = pruned(x)
    assert out.shape == reference.shape
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)
    smaller = Chain(factory, widths=(6, 6))  # built independently at the pruned widths
    assert count_parameters(pruned) == count_parameters(smaller)
    assert count_flops(pruned, x) == count_flops(smaller, x)
    assert count_parameters(model) == count_parameters(Chain(factory))  # apply_plan pruned a copy


@pytest.mark.parametrize("norm", ["torch_bn", "normlab_bn"])
def test_coupled_channels_go_only_when_every_coupled_gamma_is_small(norm):
    x = torch.rand(8, 3, 6, 6)
    model = Residual(NORMS[norm])
    # channel 1 is dead in both coupled layers; channel 5 only in one of them, so it still carries the stem's signal
    _prepare(model, x, {"norm0": [1, 5], "norm1": [1]})
    reference = model(x)
    plan = plan_slimming(model, x, threshold=1e-6)
    (group,) = [g for g in plan.groups if g.remove]
    assert set(group.norms) == {"norm0", "norm1"} and group.remove == (1,)
    pruned = apply_plan(model, x, plan)
    torch.testing.assert_close(pruned(x), reference, atol=1e-5, rtol=0)
    assert pruned.stem.out_channels == pruned.conv.in_channels == pruned.conv.out_channels == 7
    assert count_parameters(pruned) == count_parameters(Residual(NORMS[norm], width=7))


def test_linear_batchnorm1d_mlp():
    model = nn.Sequential(nn.Linear(5, 12), nl.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 4))
    x = torch.randn(16, 5)
    _prepare(model, x, {"1": [0, 7, 11]})
    reference = model(x)
    result = slim(model, x, ratio=3 / 12)
    assert result.model[0].out_features == 9 and result.model[3].in_features == 9
    torch.testing.assert_close(result.model(x), reference, atol=1e-5, rtol=0)
    assert result.before.parameters == count_parameters(model)
    assert result.after.parameters == 5 * 9 + 9 + 2 * 9 + 9 * 4 + 4  # by hand


def test_random_control_has_the_same_architecture():
    x = torch.rand(8, 3, 6, 6)
    model = Chain(nl.BatchNorm2d, widths=(16, 16))
    _prepare(model, x, {})
    by_gamma = slim(model, x, ratio=0.5)
    control = random_slim(model, x, by_gamma.plan, seed=3)
    assert control.plan.method == "random" and control.plan.removed_channels == by_gamma.plan.removed_channels
    assert control.after == by_gamma.after
    assert [len(g.remove) for g in control.plan.groups] == [len(g.remove) for g in by_gamma.plan.groups]


@pytest.mark.parametrize("ratio", [1.0, 0.99])
def test_every_group_keeps_min_channels(ratio):
    x = torch.rand(4, 3, 6, 6)
    model = Chain(NORMS["normlab_gn"], widths=(8, 6))
    _prepare(model, x, {})
    result = slim(model, x, ratio=ratio, min_channels=1)
    assert result.model.norm1.num_channels == 2 and result.model.norm1.num_groups == 1  # one whole group left
    assert result.model.norm2.num_channels == 2
    assert result.model(x).shape == (4, 3)


def test_layer_norm_groups_are_left_whole():
    x = torch.rand(4, 3, 6, 6)
    model = Chain(nl.LayerNorm2d)
    _prepare(model, x, {"norm1": [0]})
    plan = plan_slimming(model, x, ratio=0.5)
    assert plan.removed_channels == 0 and len(plan.skipped) == 2
    assert all("all channels" in why for why in plan.skipped.values())


@pytest.mark.parametrize("strength", [0.0, 1e-4, 0.3])
def test_gamma_l1_penalty_and_its_subgradient(strength):
    torch.manual_seed(0)
    model = Chain(nl.BatchNorm2d)
    with torch.no_grad():
        model.norm1.weight.normal_()
        model.norm2.weight.normal_()
    penalty = gamma_l1_penalty(model, strength)
    gammas = torch.cat([model.norm1.weight.detach(), model.norm2.weight.detach()]).double()
    expected = strength * sum(abs(float(v)) for v in gammas)
    assert math.isclose(penalty.item(), expected, rel_tol=1e-6, abs_tol=1e-12)
    penalty.backward()
    torch.testing.assert_close(model.norm1.weight.grad, strength * model.norm1.weight.detach().sign())
    assert model.conv1.weight.grad is None


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_global_threshold_prunes_the_requested_fraction(ratio):
    torch.manual_seed(1)
    importance = {"a": torch.rand(30), "b": torch.rand(50)}  # distinct values
    threshold = global_threshold(importance, ratio)
    below = sum(int((v < threshold).sum()) for v in importance.values())
    assert below == round(ratio * 80)


def test_channel_importance_is_abs_gamma():
    model = Chain(nn.BatchNorm2d)
    with torch.no_grad():
        model.norm1.weight.copy_(torch.linspace(-1, 1, 8))
    importance = channel_importance(model)
    assert set(importance) == {"norm1", "norm2"}
    torch.testing.assert_close(importance["norm1"], torch.linspace(-1, 1, 8).abs())


def test_flop_count_matches_the_convolution_formula():
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    x = torch.rand(2, 3, 7, 7)
    assert count_flops(conv, x) == 2 * 2 * 7 * 7 * 5 * 3 * 3 * 3  # 2 FLOPs per multiply-add


@pytest.mark.parametrize("kwargs, message", [
    ({"ratio": 0.5, "threshold": 0.1}, "exactly one"),
    ({}, "exactly one"),
    ({"ratio": 0.5, "kinds": ("layer_norm",)}, "cannot be pruned"),
    ({"ratio": 0.5, "min_channels": 0}, "min_channels"),
    ({"ratio": 1.5}, "ratio must be in"),
])
def test_bad_arguments(kwargs, message):
    model = Chain(nl.BatchNorm2d)
    with pytest.raises(ValueError, match=message):
        plan_slimming(model, torch.rand(2, 3, 6, 6), **kwargs)


def test_group_norm_pruner_refuses_a_partial_group():
    with pytest.raises(ValueError, match="whole groups"):
        GroupNormPruner().prune_out_channels(nl.GroupNorm(2, 8), [0, 1])
