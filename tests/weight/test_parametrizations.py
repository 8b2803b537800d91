"""The four weight reparametrizations against independent float64 formulas, torch's own weight_norm and
spectral_norm, gradcheck, and the properties the papers promise (unit norm, standardized units, sigma_max = 1,
scale invariance)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations as torch_param

from normlab.weight import output_unit_dim, reparametrize

KINDS = ["weight_norm", "centered_weight_norm", "weight_standardization", "spectral_norm"]

# name -> (factory, input shape); ConvTranspose weights have their output units in dim 1.
MODULES = {
    "linear": (lambda: nn.Linear(5, 4), (2, 5)),
    "conv1d": (lambda: nn.Conv1d(3, 4, 3), (2, 3, 6)),
    "conv2d_groups": (lambda: nn.Conv2d(4, 6, 2, groups=2), (2, 4, 4, 4)),
    "conv3d": (lambda: nn.Conv3d(2, 4, 2), (2, 2, 3, 3, 3)),
    "conv_transpose1d": (lambda: nn.ConvTranspose1d(3, 4, 3), (2, 3, 5)),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(3, 4, 2), (2, 3, 3, 3)),
    "conv_transpose3d": (lambda: nn.ConvTranspose3d(2, 4, 2), (2, 2, 2, 2, 2)),
}


# ---- independent float64 references (numpy), written from the papers' formulas ----

def units(a: np.ndarray, dim: int) -> np.ndarray:
    """(units, fan) view: output unit i is row i."""
    return np.moveaxis(a, dim, 0).reshape(a.shape[dim], -1)


def from_units(rows: np.ndarray, shape: tuple[int, ...], dim: int) -> np.ndarray:
    moved = (shape[dim],) + tuple(s for i, s in enumerate(shape) if i != dim)
    return np.moveaxis(rows.reshape(moved), 0, dim)


def ref_weight_norm(g, v, dim, layer):
    rows = units(v, dim)
    return from_units(g.reshape(-1, 1) * rows / np.sqrt((rows ** 2).sum(1, keepdims=True)), v.shape, dim)


def ref_centered_weight_norm(g, v, dim, layer):
    rows = units(v, dim)
    centred = rows - rows.mean(1, keepdims=True)
    return from_units(g.reshape(-1, 1) * centred / np.sqrt((centred ** 2).sum(1, keepdims=True)), v.shape, dim)


def ref_weight_standardization(w, dim, layer):
    rows = units(w, dim)
    mean = rows.mean(1, keepdims=True)
    var = ((rows - mean) ** 2).mean(1, keepdims=True)  # biased, as in the paper's Eq. 6
    return from_units((rows - mean) / np.sqrt(var + layer.eps), w.shape, dim)


def ref_spectral_norm(w, dim, layer):
    u, v = (layer._u.double().numpy(), layer._v.double().numpy())
    return w / (u @ units(w, dim) @ v)


REFERENCES = {
    "weight_norm": ref_weight_norm,
    "centered_weight_norm": ref_centered_weight_norm,
    "weight_standardization": ref_weight_standardization,
    "spectral_norm": ref_spectral_norm,
}


def originals(module: nn.Module) -> list[torch.Tensor]:
    plist = module.parametrizations.weight
    return [plist.original] if plist.is_tensor else [plist.original0, plist.original1]


def build(kind: str, module_name: str, dtype=torch.float32, **options):
    torch.manual_seed(0)
    factory, shape = MODULES[module_name]
    module = factory().to(dtype)
    reparametrize(module, kind, **options)
    with torch.no_grad():  # a random gain, so the test sees g being used
        if not module.parametrizations.weight.is_tensor:
            module.parametrizations.weight.original0.uniform_(0.5, 2.0)
    return module, torch.randn(shape, dtype=dtype)


# ---- the reference functions get their own small checks ----

def test_reference_units_round_trip():
    a = np.arange(24.0).reshape(2, 3, 4)
    for dim in range(3):
        np.testing.assert_array_equal(from_units(units(a, dim), a.shape, dim), a)
    rows = units(a, 1)
    np.testing.assert_array_equal(rows[1], a[:, 1, :].reshape(-1))


def test_reference_weight_norm_by_hand():
    v = np.array([[3.0, 4.0], [0.0, 2.0]])
    np.testing.assert_allclose(ref_weight_norm(np.array([10.0, 1.0]), v, 0, None), [[6.0, 8.0], [0.0, 1.0]])


# ---- forward against the float64 formula, for every kind and module type ----

@pytest.mark.parametrize("module_name", MODULES)
@pytest.mark.parametrize("kind", KINDS)
def test_matches_float64_formula(kind, module_name):
    module, _ = build(kind, module_name)
    module.eval()  # spectral norm: no power-iteration step while reading the weight
    layer = module.parametrizations.weight[0]
    assert layer.dim == output_unit_dim(module) == (1 if "transpose" in module_name else 0)
    expected = REFERENCES[kind](*(t.detach().double().numpy() for t in originals(module)), layer.dim, layer)
    np.testing.assert_allclose(module.weight.detach().double().numpy(), expected, rtol=1e-5, atol=1e-6)


# ---- equality with torch's parametrizations ----

@pytest.mark.parametrize("module_name", MODULES)
def test_weight_norm_equals_torch(module_name):
    torch.manual_seed(0)
    factory, shape = MODULES[module_name]
    ours, theirs = factory(), None
    theirs = torch_param.weight_norm(copy.deepcopy(ours), dim=output_unit_dim(ours))
    reparametrize(ours, "weight_norm")
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    with torch.no_grad():
        ours.parametrizations.weight.original0.mul_(1.7)
    theirs.load_state_dict(ours.state_dict())  # same keys, same meaning
    x = torch.randn(shape)
    out_ours, out_theirs = ours(x), theirs(x)
    torch.testing.assert_close(out_ours, out_theirs, rtol=1e-6, atol=1e-6)
    out_ours.square().sum().backward()
    out_theirs.square().sum().backward()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)  # fused vs composed backward


@pytest.mark.parametrize("start", ["same_seed", "copied_buffers"])
@pytest.mark.parametrize("module_name", MODULES)
def test_spectral_norm_equals_torch(module_name, start):
    """Same initial u, v either by seeding the generator identically before building each (both draw u then v
    from N(0, 1) and warm up with 15 steps) or by copying torch's _u/_v buffers into ours."""
    factory, shape = MODULES[module_name]
    torch.manual_seed(1)
    base = factory()
    torch.manual_seed(2)
    theirs = torch_param.spectral_norm(copy.deepcopy(base), n_power_iterations=2)
    torch.manual_seed(2 if start == "same_seed" else 3)
    ours = copy.deepcopy(base)
    reparametrize(ours, "spectral_norm", n_power_iterations=2)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    if start == "copied_buffers":
        assert not torch.allclose(ours.parametrizations.weight[0]._u, theirs.parametrizations.weight[0]._u)
        ours.load_state_dict(theirs.state_dict())
    x = torch.randn(shape)
    for mode in ("train", "train", "train", "eval"):
        ours.train(mode == "train")
        theirs.train(mode == "train")
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
        for buffer in ("_u", "_v"):
            torch.testing.assert_close(getattr(ours.parametrizations.weight[0], buffer),
                                       getattr(theirs.parametrizations.weight[0], buffer), rtol=1e-5, atol=1e-6)


# ---- gradcheck in float64 through each kind ----

@pytest.mark.parametrize("module_name", ["linear", "conv2d_groups", "conv_transpose1d"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind, module_name):
    module, x = build(kind, module_name, dtype=torch.float64)
    module.eval()  # spectral norm: fixed u, v, so repeated evaluations agree
    layer = module.parametrizations.weight[0]
    inputs = [t.detach().clone().requires_grad_() for t in originals(module)]
    assert torch.autograd.gradcheck(lambda *t: layer(*t), inputs)
    assert torch.autograd.gradcheck(module, (x.requires_grad_(),))


# ---- what each paper promises ----

def test_centered_weight_norm_units_are_centred_and_unit_norm():
    for module_name in MODULES:
        module, _ = build("centered_weight_norm", module_name, dtype=torch.float64)
        with torch.no_grad():
            module.parametrizations.weight.original0.fill_(1.0)  # look before the scale
        rows = torch.from_numpy(units(module.weight.detach().numpy(), output_unit_dim(module)))
        torch.testing.assert_close(rows.mean(1), torch.zeros(len(rows), dtype=torch.float64), atol=1e-12, rtol=0)
        torch.testing.assert_close(rows.norm(dim=1), torch.ones(len(rows), dtype=torch.float64))


def test_weight_standardization_units_have_mean_0_var_1():
    for module_name in MODULES:
        module, _ = build("weight_standardization", module_name, dtype=torch.float64, eps=1e-12)
        rows = torch.from_numpy(units(module.weight.detach().numpy(), output_unit_dim(module)))
        var, mean = torch.var_mean(rows, dim=1, correction=0)
        torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-12, rtol=0)
        torch.testing.assert_close(var, torch.ones_like(var), atol=1e-8, rtol=0)


@pytest.mark.parametrize("module_name", MODULES)
def test_spectral_norm_reaches_unit_sigma_and_freezes_in_eval(module_name):
    module, x = build("spectral_norm", module_name)
    layer = module.parametrizations.weight[0]
    for _ in range(30):  # more power-iteration steps in training mode
        module(x)
    matrix = module.weight.detach().movedim(layer.dim, 0).flatten(1)
    sigma = torch.linalg.matrix_norm(matrix.double(), ord=2).item()
    assert abs(sigma - 1.0) < 1e-3
    module.eval()
    u, v, w = layer._u.clone(), layer._v.clone(), module.weight.detach().clone()
    for _ in range(3):
        module(x)
    assert torch.equal(layer._u, u) and torch.equal(layer._v, v) and torch.equal(module.weight, w)


# (kind, transform of the stored direction, whether the output must stay the same)
INVARIANCES = [
    ("weight_norm", "scale", True),
    ("centered_weight_norm", "scale", True),
    ("weight_standardization", "scale", True),
    ("spectral_norm", "scale", True),
    ("centered_weight_norm", "shift", True),
    ("weight_standardization", "shift", True),
    ("weight_norm", "shift", False),  # control: WN does not remove the mean, so the test can tell
]


@pytest.mark.parametrize("kind,transform,invariant", INVARIANCES)
@pytest.mark.parametrize("module_name", ["linear", "conv2d_groups", "conv_transpose2d"])
def test_scale_and_shift_invariance(kind, transform, invariant, module_name):
    module, x = build(kind, module_name, dtype=torch.float64, eps=1e-12) if kind in (
        "centered_weight_norm", "weight_standardization") else build(kind, module_name, dtype=torch.float64)
    module.eval()
    before = module(x)
    direction = originals(module)[-1]
    with torch.no_grad():
        if transform == "scale":
            direction.mul_(7.5)
        else:  # add a different constant to every output unit
            shape = [1] * direction.dim()
            shape[output_unit_dim(module)] = direction.shape[output_unit_dim(module)]
            direction.add_(torch.linspace(-2, 3, shape[output_unit_dim(module)], dtype=torch.float64).view(shape))
    after = module(x)
    assert torch.allclose(after, before, rtol=1e-9, atol=1e-9) == invariant
