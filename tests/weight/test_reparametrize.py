"""reparametrize / bake_weights on layers and models: kind names, selection, errors, baking, the registry."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations as torch_param
from torch.nn.utils import parametrize

import normlab
from normlab.weight import bake_weights, reparametrize, reparametrized_weights, resolve_kind

KINDS = ["weight_norm", "centered_weight_norm", "weight_standardization", "spectral_norm"]


class Net(nn.Module):
    """conv -> GroupNorm -> (conv, deconv) -> linear, with paths conv1, gn, block.0, block.1, fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ConvTranspose2d(8, 4, 2, stride=2))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.block(torch.relu(self.gn(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def net_and_input():
    torch.manual_seed(0)
    return Net(), torch.randn(2, 3, 6, 6)


# ---- names ----

SPELLINGS = [
    ("weight_norm", "weight_norm"), ("WeightNorm", "weight_norm"), ("wn", "weight_norm"),
    ("centered-weight-norm", "centered_weight_norm"), ("CWN", "centered_weight_norm"),
    ("centred_weight_norm", "centered_weight_norm"),
    ("ws", "weight_standardization"), ("WeightStandardisation", "weight_standardization"),
    ("SN", "spectral_norm"), ("Spectral Norm", "spectral_norm"),
]


@pytest.mark.parametrize("spelling,canonical", SPELLINGS)
def test_kind_spellings(spelling, canonical):
    assert resolve_kind(spelling) == canonical
    assert reparametrize(nn.Linear(3, 2), spelling)[0].kind == canonical


def test_registry_lists_weight_kinds_beside_activation_norms():
    everything = normlab.list_norms()
    assert set(KINDS) <= set(normlab.list_norms("weight")) and set(KINDS) <= set(everything)
    assert "batch_norm" in everything and "batch_norm" not in normlab.list_norms("weight")
    with pytest.raises(TypeError, match="reparametrize"):
        normlab.create_norm("ws", 8)  # a weight norm is not a layer


# ---- selection on a model ----

SELECTIONS = [
    ({}, ["conv1", "block.0", "block.1", "fc"]),
    ({"include": nn.Conv2d}, ["conv1", "block.0"]),
    ({"include": "block.*"}, ["block.0", "block.1"]),
    ({"exclude": "fc"}, ["conv1", "block.0", "block.1"]),
    ({"include": [nn.Linear, "conv1"]}, ["conv1", "fc"]),
    ({"exclude": lambda path, m: getattr(m, "in_channels", 0) == 8}, ["conv1", "fc"]),
    ({"include": "*conv*", "exclude": nn.ConvTranspose2d}, ["conv1"]),
]


@pytest.mark.parametrize("selection,expected", SELECTIONS)
def test_model_selection(selection, expected):
    model, x = net_and_input()
    changes = reparametrize(model, "weight_norm", **selection)
    assert [c.path for c in changes] == expected
    parametrized = [path for path, m in model.named_modules() if parametrize.is_parametrized(m, "weight")]
    assert parametrized == expected
    by_path = {c.path: c for c in changes}
    if "block.1" in by_path:  # ConvTranspose: output units in dim 1
        assert by_path["block.1"].dim == 1 and by_path["block.1"].module == "ConvTranspose2d"
    assert model(x).shape == (2, 3)


@pytest.mark.parametrize("kind", KINDS)
def test_reparametrize_keeps_the_output_where_theory_says(kind):
    """weight_norm keeps the effective weight; centred WN projects each unit onto zero mean (keeping that norm);
    WS and SN change it by design. Checks the report and that training updates the stored tensors."""
    model, x = net_and_input()
    reference = copy.deepcopy(model)
    changes = reparametrize(model, kind)
    assert [(c.kind, c.tensor) for c in changes] == [(kind, "weight")] * 4
    if kind == "weight_norm":
        torch.testing.assert_close(model(x), reference(x))
    if kind == "centered_weight_norm":
        w, v = model.fc.weight.detach(), reference.fc.weight.detach()
        torch.testing.assert_close(w, v - v.mean(dim=1, keepdim=True))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [t.detach().clone() for t in model.parameters()]
    model(x).square().mean().backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ---- errors ----

def _twice(kind):
    layer = nn.Linear(3, 2)
    reparametrize(layer, kind)
    return layer


ERRORS = [
    ("unknown kind", lambda: reparametrize(nn.Linear(3, 2), "weight_nrom"), ValueError,
     r"unknown weight normalization 'weight_nrom'\. Did you mean 'weight_norm'\? Valid kinds: weight_norm, "
     r"centered_weight_norm, weight_standardization, spectral_norm$"),
    ("activation kind", lambda: reparametrize(nn.Linear(3, 2), "batch_norm"), ValueError, "not a weight norm"),
    ("kind not a string", lambda: reparametrize(nn.Linear(3, 2), 3), TypeError, "kind must be a name"),
    ("no such weight", lambda: reparametrize(nn.Linear(3, 2), "wn", name="kernel"), ValueError,
     "Linear at the model itself has no parameter 'kernel'.*weight, bias"),
    ("dim out of range", lambda: reparametrize(nn.Conv2d(2, 3, 3), "ws", dim=4), ValueError,
     r"dim=4 is out of range for a 4-D weight"),
    ("dim not an int", lambda: reparametrize(nn.Linear(3, 2), "sn", dim=0.5), TypeError, "dim must be an int"),
    ("twice, weight norm", lambda: reparametrize(_twice("wn"), "weight_norm"), ValueError, "already has weight_norm"),
    ("twice, spectral", lambda: reparametrize(_twice("sn"), "SN"), ValueError, "already has spectral_norm"),
    ("twice, after torch", lambda: reparametrize(torch_param.weight_norm(nn.Linear(3, 2)), "wn"), ValueError,
     "already has weight_norm"),
    ("two-tensor kind stacked", lambda: reparametrize(_twice("ws"), "cwn"), ValueError, "must be the first"),
    ("unknown option", lambda: reparametrize(nn.Linear(3, 2), "wn", eps=1e-3), TypeError,
     "weight_norm does not take eps; its options are: dim"),
    ("single weight per unit", lambda: reparametrize(nn.Linear(1, 4), "cwn"), ValueError, "single weight"),
    ("nothing eligible", lambda: reparametrize(nn.Sequential(nn.ReLU()), "ws"), ValueError, "found no module"),
    ("1-d weight", lambda: reparametrize(nn.GroupNorm(2, 4), "wn", types=(nn.GroupNorm,)), ValueError,
     "at least 2 dims"),
    ("lazy module", lambda: reparametrize(nn.LazyLinear(3), "wn"), ValueError, "forward pass first"),
    ("bad selector", lambda: reparametrize(nn.Linear(3, 2), "wn", include=3), TypeError, "include/exclude"),
    ("not a module", lambda: reparametrize(torch.ones(2, 2), "wn"), TypeError, "expects an nn.Module"),
    ("bad eps", lambda: reparametrize(nn.Linear(3, 2), "ws", eps=0.0), ValueError, "eps must be a positive"),
    ("bad iterations", lambda: reparametrize(nn.Linear(3, 2), "sn", n_power_iterations=0), ValueError,
     "n_power_iterations must be a positive integer"),
]


@pytest.mark.parametrize("case,call,error,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_raises_clear_error(case, call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_error_leaves_model_untouched():
    model, _ = net_and_input()
    reparametrize(model, "wn", include="fc")
    with pytest.raises(ValueError, match="already has weight_norm"):
        reparametrize(model, "wn")  # fc fails the check, so conv1 and the block must stay plain
    assert [c.path for c in reparametrized_weights(model)] == ["fc"]


# ---- baking ----

@pytest.mark.parametrize("kind", KINDS)
def test_bake_weights_keeps_the_function_and_leaves_plain_parameters(kind):
    model, x = net_and_input()
    reparametrize(model, kind)
    model(x)  # training mode: spectral norm has moved u, v once more
    model.eval()
    expected_out = model(x)
    layers = (nn.Linear, nn.modules.conv._ConvNd)
    expected_weights = {p: m.weight.detach().clone() for p, m in model.named_modules() if isinstance(m, layers)}
    model.train()  # baking must not take another power-iteration step
    baked = bake_weights(model)
    assert [(c.path, c.kind) for c in baked] == [(p, kind) for p in ["conv1", "block.0", "block.1", "fc"]]
    assert reparametrized_weights(model) == [] and not any(parametrize.is_parametrized(m) for m in model.modules())
    assert type(model.fc) is nn.Linear and type(model.block[1]) is nn.ConvTranspose2d
    for path, m in model.named_modules():
        if path in expected_weights:
            assert type(m.weight) is nn.Parameter and m.weight.requires_grad
            torch.testing.assert_close(m.weight.detach(), expected_weights[path], rtol=0, atol=0)
    model.eval()
    torch.testing.assert_close(model(x), expected_out)
    assert set(model.state_dict()) == set(Net().state_dict())


def test_bake_weights_handles_torch_parametrizations_and_leaves_others():
    layer = torch_param.spectral_norm(nn.Linear(4, 3))
    other = torch_param.orthogonal(nn.Linear(3, 3))
    model = nn.Sequential(layer, other)
    assert [(c.path, c.kind) for c in bake_weights(model)] == [("0", "spectral_norm")]
    assert not parametrize.is_parametrized(layer) and parametrize.is_parametrized(other, "weight")


def test_readme_example_weight_standardization_with_group_norm():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    changes = normlab.weight.reparametrize(model, "weight_standardization", include=nn.Conv2d)
    assert [(c.path, c.kind) for c in changes] == [("0", "weight_standardization"), ("3", "weight_standardization")]
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    var, mean = torch.var_mean(model[3].weight.double(), dim=(1, 2, 3), correction=0)
    raw_var = model[3].parametrizations.weight.original.double().var(dim=(1, 2, 3), correction=0)
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-7, rtol=0)
    torch.testing.assert_close(var, raw_var / (raw_var + 1e-5), atol=1e-6, rtol=0)  # unit variance up to eps
