"""scale_invariant_parameters on models with BN, GN, LN, weight norm, weight standardization and none, against
what the theory says each one must find; the reported cosine against a finite-difference derivative."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import normlab.nn as nl
from normlab.analysis import scale_invariant_parameters
from normlab.weight import reparametrize


def conv_net(norm, bias: bool) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, bias=bias), norm(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, bias=bias), norm(6), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 5),
    )


def mlp(norm=None, bias=True) -> nn.Module:
    layers = [nn.Flatten(), nn.Linear(3 * 8 * 8, 16, bias=bias)]
    layers += [norm(16)] if norm else []
    return nn.Sequential(*layers, nn.ReLU(), nn.Linear(16, 5))


def _weight_norm_mlp():
    model = mlp()
    reparametrize(model, "weight_norm")
    return model


def _standardized_conv_net(scale: float = 10.0):
    """WS adds eps to the weight variance (~1/fan_in at init): scaled-up weights make eps negligible."""
    model = conv_net(lambda c: nn.Identity(), bias=False)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(scale)
    reparametrize(model, "weight_standardization", types=(nn.Conv2d,))
    return model


# name: (model factory, training mode?, parameters the theory says are invariant)
CASES = {
    # BatchNorm (train) removes each channel's mean: conv weights are invariant, the conv bias is not even seen
    "batch_norm": (lambda: conv_net(nl.BatchNorm2d, True), True, {"0.weight", "0.bias", "3.weight", "3.bias"}),
    # in eval mode BatchNorm divides by fixed running statistics: nothing is invariant
    "batch_norm_eval": (lambda: conv_net(nl.BatchNorm2d, True), False, set()),
    "group_norm": (lambda: conv_net(lambda c: nl.GroupNorm(2, c), False), True, {"0.weight", "3.weight"}),
    # GroupNorm removes one mean per group, not the per-channel bias: the weight is no longer invariant
    "group_norm_with_bias": (lambda: conv_net(lambda c: nl.GroupNorm(2, c), True), True, set()),
    "torch_layer_norm": (lambda: mlp(nn.LayerNorm, bias=False), True, {"1.weight"}),
    "layer_norm_2d": (lambda: conv_net(nl.LayerNorm2d, False), True, {"0.weight", "3.weight"}),
    "weight_norm": (_weight_norm_mlp, True, {"1.parametrizations.weight.original1",
                                             "3.parametrizations.weight.original1"}),
    "weight_standardization": (_standardized_conv_net, True, {"0.parametrizations.weight.original",
                                                              "3.parametrizations.weight.original"}),
    "no_normalization": (lambda: mlp(), True, set()),
    # at the default initialisation eps / var(w) ≈ 1e-5 * fan_in breaks invariance by more than rtol = 1e-4
    "weight_standardization_small_weights": (lambda: _standardized_conv_net(1.0), True, set()),
}

#: |cos(g, w)| for invariant weights: the norm's eps breaks invariance by ~eps/var
COSINE_TOLERANCE = 1e-4


def _randomize_affine(model: nn.Module) -> None:
    """γ, β away from 1, 0, so a β = 0 does not make a γ trivially invariant."""
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, nn.Parameter) and weight.dim() == 1:
                weight.uniform_(0.5, 1.5)
                if getattr(module, "bias", None) is not None:
                    module.bias.normal_(0, 0.5)


def _setup(case):
    factory, training, expected = CASES[case]
    torch.manual_seed(0)
    model = factory()
    _randomize_affine(model)
    batch = (torch.rand(16, 3, 8, 8), torch.randint(5, (16,)))
    if not training:
        model.train()
        for _ in range(3):
            model(torch.rand(16, 3, 8, 8))
        model.eval()
    return model, batch, expected


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_finds_what_the_theory_predicts(case):
    model, batch, expected = _setup(case)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    report = scale_invariant_parameters(model, F.cross_entropy, batch)
    assert set(report.invariant_names) == expected
    for p in report.parameters:
        if p.invariant and not math.isnan(p.cosine):
            assert abs(p.cosine) < COSINE_TOLERANCE, p
        if not p.invariant:  # a clear margin, not a borderline call
            assert p.max_relative_change > 5 * report.rtol, p
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # the model is untouched


@pytest.mark.parametrize("case", ["no_normalization", "group_norm_with_bias"])
def test_cosine_matches_a_finite_difference(case):
    """⟨g, w⟩ = d/dα L(α w) at α = 1, computed here by central differences in float64."""
    model, (x, y), _ = _setup(case)
    report = scale_invariant_parameters(model, F.cross_entropy, (x, y))
    probe = model.double()
    name = "1.weight" if case == "no_normalization" else "0.weight"
    param = dict(probe.named_parameters())[name]
    w = param.detach().clone()

    def loss_at(alpha: float) -> float:
        with torch.no_grad():
            param.copy_(w * alpha)
            return F.cross_entropy(probe(x.double()), y).item()

    h = 1e-5
    derivative = (loss_at(1 + h) - loss_at(1 - h)) / (2 * h)
    result = report[name]
    assert result.cosine * result.grad_norm * w.norm().item() == pytest.approx(derivative, rel=1e-5, abs=1e-9)


def test_zero_parameters_cannot_be_tested():
    model = conv_net(nl.BatchNorm2d, False)  # β = 0 at initialisation
    report = scale_invariant_parameters(model, F.cross_entropy, (torch.rand(4, 3, 8, 8), torch.randint(5, (4,))))
    assert not report["1.bias"].invariant and math.isnan(report["1.bias"].max_relative_change)
    assert "1.bias" in repr(report)


@pytest.mark.parametrize("kwargs, error", [
    ({"alphas": (1.0,)}, "alphas"),
    ({"alphas": (-2.0,)}, "alphas"),
    ({"rtol": 0.0}, "rtol"),
    ({"parameters": ["nope"]}, "unknown parameter"),
])
def test_bad_arguments(kwargs, error):
    model = mlp()
    with pytest.raises(ValueError, match=error):
        scale_invariant_parameters(model, F.cross_entropy, (torch.rand(2, 3, 8, 8), torch.tensor([0, 1])), **kwargs)


def test_batch_must_be_a_pair():
    with pytest.raises(ValueError, match="inputs, targets"):
        scale_invariant_parameters(mlp(), F.cross_entropy, torch.rand(2, 3, 8, 8))
