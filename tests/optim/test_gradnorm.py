"""Gradient normalization and Adaptive Gradient Clipping against float64 numpy references: every input form,
every scope, the unit convention of NFNets, skipped parameters, GradScaler on the CPU, and the step hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from normlab.optim import adaptive_clip_gradients_, apply_before_step, normalize_gradients_


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.up = nn.ConvTranspose2d(4, 3, 2)
        self.fc = nn.Linear(3, 2)
        self.frozen = nn.Linear(2, 2)  # never used: no gradient
        self.scale = nn.Parameter(torch.tensor(1.5))  # a scalar owned by the model itself

    def forward(self, x):
        x = self.up(torch.relu(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3))) * self.scale


def net_with_grads(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    model = Net()
    model(torch.randn(3, 2, 5, 5)).square().sum().backward()
    return model


def grads(model):
    return {n: p.grad.detach().double().numpy().copy() for n, p in model.named_parameters() if p.grad is not None}


LAYERS = {"conv.weight": "conv", "conv.bias": "conv", "up.weight": "up", "up.bias": "up", "fc.weight": "fc",
          "fc.bias": "fc", "scale": "<root>"}


# ---- reference: which gradients form one scope, and their float64 norm ----

def reference_normalize(named: dict[str, np.ndarray], key_of) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    buckets: dict[str, list[str]] = {}
    for name in named:
        buckets.setdefault(key_of(name), []).append(name)
    norms = {k: float(np.sqrt(sum((named[n] ** 2).sum() for n in names))) for k, names in buckets.items()}
    return {n: g / norms[key_of(n)] for n, g in named.items()}, norms


SCOPE_KEYS = {
    "global": lambda name: "global",
    "layer": lambda name: LAYERS[name],
    "parameter": lambda name: name,
}


@pytest.mark.parametrize("scope", SCOPE_KEYS)
def test_scopes_match_reference_and_give_unit_norm(scope):
    model = net_with_grads()
    before = grads(model)
    assert set(before) == set(LAYERS)  # the frozen layer has no gradient
    expected, expected_norms = reference_normalize(before, SCOPE_KEYS[scope])
    norms = normalize_gradients_(model, scope=scope)
    assert set(norms) == set(expected_norms)
    for key, value in expected_norms.items():
        assert norms[key].item() == pytest.approx(value, rel=1e-6)
    after = grads(model)
    for name in expected:
        np.testing.assert_allclose(after[name], expected[name], rtol=1e-5, atol=1e-7)
    for key in expected_norms:  # unit norm per scope
        members = [n for n in after if SCOPE_KEYS[scope](n) == key]
        assert np.sqrt(sum((after[n] ** 2).sum() for n in members)) == pytest.approx(1.0, rel=1e-6)
    assert model.frozen.weight.grad is None


# every way of passing the same parameters; "global" must give the same result for all of them
INPUT_FORMS = {
    "model": lambda m: m,
    "named_parameters": lambda m: m.named_parameters(),
    "tensor_list": lambda m: list(m.parameters()),
    "generator": lambda m: m.parameters(),
    "param_groups": lambda m: [{"params": [m.conv.weight, m.conv.bias]}, {"params": list(m.fc.parameters())},
                               {"params": [m.up.weight, m.up.bias, m.scale, *m.frozen.parameters()]}],
    "optimizer": lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
    "named_optimizer": lambda m: torch.optim.SGD(m.named_parameters(), lr=0.1),
}


@pytest.mark.parametrize("form", INPUT_FORMS)
def test_every_input_form_gives_the_same_global_normalization(form):
    model = net_with_grads()
    expected, norms = reference_normalize(grads(model), SCOPE_KEYS["global"])
    seen = normalize_gradients_(INPUT_FORMS[form](model), scope="global")
    assert seen["global"].item() == pytest.approx(norms["global"], rel=1e-6)
    for name, g in grads(model).items():
        np.testing.assert_allclose(g, expected[name], rtol=1e-5, atol=1e-7)


def test_group_scope_normalizes_each_param_group():
    model = net_with_grads()
    groups = INPUT_FORMS["param_groups"](model)
    members = [[p for p in group["params"] if p.grad is not None] for group in groups]
    expected = [float(np.sqrt(sum((p.grad.double() ** 2).sum().item() for p in ps))) for ps in members]
    norms = normalize_gradients_(groups, scope="group")
    assert list(norms) == ["group0", "group1", "group2"]
    for i, ps in enumerate(members):
        assert norms[f"group{i}"].item() == pytest.approx(expected[i], rel=1e-6)
        assert torch.cat([p.grad.flatten() for p in ps]).norm().item() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("lr", [0.1, 0.003])
def test_plain_sgd_update_has_norm_lr(lr):
    model = net_with_grads()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    before = [p.detach().clone() for p in model.parameters()]
    normalize_gradients_(optimizer, scope="global")
    optimizer.step()
    step = torch.cat([(p.detach() - b).flatten().double() for p, b in zip(model.parameters(), before)])
    assert step.norm().item() == pytest.approx(lr, rel=1e-5)


def test_zero_gradient_stays_zero_and_layer_scope_on_named_optimizer():
    w, b = nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2))
    w.grad, b.grad = torch.zeros(2, 2), torch.zeros(2)
    optimizer = torch.optim.SGD([("layer.weight", w), ("layer.bias", b)], lr=1.0)
    norms = normalize_gradients_(optimizer, scope="layer")
    assert list(norms) == ["layer"] and norms["layer"].item() == 0.0
    assert torch.equal(w.grad, torch.zeros(2, 2)) and torch.equal(b.grad, torch.zeros(2))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_gradients_accumulate_in_float32(dtype):
    p = nn.Parameter(torch.zeros(4096, dtype=dtype))
    p.grad = torch.full((4096,), 300.0, dtype=dtype)  # sum of squares overflows fp16
    norms = normalize_gradients_([p])
    assert norms["global"].dtype == torch.float32 and norms["global"].item() == pytest.approx(300.0 * 64, rel=1e-3)
    assert p.grad.float().norm().item() == pytest.approx(1.0, rel=1e-2)


# ---- Adaptive Gradient Clipping ----

def reference_agc(w: np.ndarray, g: np.ndarray, unit_dim: int, clipping: float, eps: float):
    """Per NFNets: units are output rows (norm over all other dims) for >= 2-D tensors, the whole tensor else."""
    if w.ndim <= 1:
        wn, gn = np.array([np.sqrt((w ** 2).sum())]), np.array([np.sqrt((g ** 2).sum())])
        rows = g.reshape(1, -1)
    else:
        wn = np.sqrt((np.moveaxis(w, unit_dim, 0).reshape(w.shape[unit_dim], -1) ** 2).sum(1))
        rows = np.moveaxis(g, unit_dim, 0).reshape(g.shape[unit_dim], -1)
        gn = np.sqrt((rows ** 2).sum(1))
    max_norm = clipping * np.maximum(wn, eps)
    clip = gn > max_norm
    factor = np.where(clip, max_norm / np.where(clip, gn, 1.0), 1.0)
    out = rows * factor[:, None]
    if w.ndim > 1:
        moved = (g.shape[unit_dim],) + tuple(s for i, s in enumerate(g.shape) if i != unit_dim)
        out = np.moveaxis(out.reshape(moved), 0, unit_dim)
    return out.reshape(g.shape), clip


# shape, unit dim: Linear, Conv2d, ConvTranspose-like weight (units in dim 1), bias, scalar
AGC_CASES = {"linear": ((6, 5), 0), "conv": ((5, 3, 2, 2), 0), "bias": ((7,), 0), "scalar": ((), 0)}


def make_agc_case(shape, unit_dim, seed):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen, dtype=torch.float64)
    units = shape[unit_dim] if len(shape) > 1 else 1
    # ratios ‖G_i‖/‖W_i‖ spread over [0.001, 0.1] around clipping = 0.01, so some units clip and some do not
    ratio = torch.logspace(-3, -1, units, dtype=torch.float64)[torch.randperm(units, generator=gen)]
    g = torch.randn(shape, generator=gen, dtype=torch.float64)
    if len(shape) > 1:
        view = [1] * len(shape)
        view[unit_dim] = units
        dims = tuple(d for d in range(len(shape)) if d != unit_dim)
        norm = lambda t: torch.linalg.vector_norm(t, dim=dims, keepdim=True)  # noqa: E731
        g = g / norm(g) * norm(w) * ratio.view(view)
        if units > 2:  # a zero unit: max_norm = clipping * eps = 1e-5, and a gradient twice that
            w.select(unit_dim, 0).zero_()
            g.select(unit_dim, 0).mul_(2e-5 / g.select(unit_dim, 0).norm())
    else:
        g = g / g.norm() * w.norm() * ratio[0]
    return nn.Parameter(w), g


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", AGC_CASES)
def test_agc_clips_exactly_the_units_over_the_threshold(case, seed):
    shape, unit_dim = AGC_CASES[case]
    p, g = make_agc_case(shape, unit_dim, seed)
    p.grad = g.clone()
    expected, clip = reference_agc(p.detach().numpy(), g.numpy(), unit_dim, 0.01, 1e-3)
    report = adaptive_clip_gradients_([p], clipping=0.01, eps=1e-3)["0"]
    assert report.clipped.tolist() == clip.tolist()
    if len(shape) > 1:
        assert clip.any() and not clip.all() and clip[0]  # both kinds of unit present; the zero unit clipped
    np.testing.assert_allclose(p.grad.numpy(), expected, rtol=1e-12, atol=1e-15)
    if len(shape) > 1:  # untouched units are bit-identical, clipped ones have norm max_norm
        kept = ~report.clipped
        rows_new, rows_old = p.grad.movedim(unit_dim, 0).flatten(1), g.movedim(unit_dim, 0).flatten(1)
        assert torch.equal(rows_new[kept], rows_old[kept])
        torch.testing.assert_close(rows_new[report.clipped].norm(dim=1), report.max_norm[report.clipped])


def test_agc_uses_dim_1_for_conv_transpose_weights_when_given_the_model():
    model = net_with_grads()
    w, g = model.up.weight.detach().double().numpy(), model.up.weight.grad.double().numpy()
    expected, clip = reference_agc(w, g, 1, 0.01, 1e-3)
    report = adaptive_clip_gradients_(model, clipping=0.01)
    assert report["up.weight"].clipped.shape == (3,)  # out_channels of the ConvTranspose2d(4, 3, 2)
    assert report["up.weight"].clipped.tolist() == clip.tolist()
    np.testing.assert_allclose(model.up.weight.grad.double().numpy(), expected, rtol=1e-5, atol=1e-8)
    assert "frozen.weight" not in report and report["conv.weight"].grad_norm.shape == (4,)


# ---- AMP: after GradScaler.unscale_, and inside scaler.step via the step hook ----

def _scaled_backward(model, scaler, x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().square().sum()
    scaler.scale(loss).backward()


@pytest.mark.parametrize("route", ["explicit_unscale", "step_hook"])
def test_works_after_grad_scaler_unscale(route):
    torch.manual_seed(0)
    model, x = Net(), torch.randn(3, 2, 5, 5)
    reference = Net()
    reference.load_state_dict(model.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = reference(x).float().square().sum()
    loss.backward()
    expected, _ = reference_normalize(grads(reference), SCOPE_KEYS["layer"])

    optimizer = torch.optim.SGD(model.named_parameters(), lr=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    _scaled_backward(model, scaler, x)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    if route == "explicit_unscale":
        scaler.unscale_(optimizer)
        normalize_gradients_(optimizer, scope="layer")
    else:
        hook = apply_before_step(optimizer, normalize_gradients_, scope="layer")
    scaler.step(optimizer)
    scaler.update()
    if route == "step_hook":
        assert set(hook.last) == {"conv", "up", "fc", "<root>"}
    for name, p in model.named_parameters():
        if name in expected:
            step = (before[name] - p.detach()).double().numpy() / 0.5
            np.testing.assert_allclose(step, expected[name], rtol=1e-4, atol=1e-6)


def test_overflow_skips_the_step_and_the_hook():
    model = net_with_grads()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    hook = apply_before_step(optimizer, adaptive_clip_gradients_, clipping=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    model.zero_grad()
    _scaled_backward(model, scaler, torch.randn(3, 2, 5, 5))
    model.fc.weight.grad[0, 0] = float("inf")
    before = [p.detach().clone() for p in model.parameters()]
    scaler.step(optimizer)
    assert hook.last is None and all(torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_step_hook_rejects_closures_and_can_be_removed():
    w = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([w], lr=1.0)
    hook = apply_before_step(optimizer, normalize_gradients_)
    w.grad = torch.tensor([3.0, 4.0])
    with pytest.raises(ValueError, match="closure"):
        optimizer.step(lambda: 0.0)
    hook.remove()
    optimizer.step()
    assert w.tolist() == [-3.0, -4.0]  # no normalization any more


# ---- bad input ----

BAD = [
    ("unknown scope", lambda: normalize_gradients_([nn.Parameter(torch.ones(1))], scope="unit"), ValueError,
     "scope must be one of global, group, layer, parameter"),
    ("layer scope without names", lambda: normalize_gradients_(list(net_with_grads().parameters()), scope="layer"),
     ValueError, "needs to know which parameters form a layer"),
    ("bad eps", lambda: normalize_gradients_([], eps=-1.0), ValueError, "eps must be a positive"),
    ("bad clipping", lambda: adaptive_clip_gradients_([], clipping=0), ValueError, "clipping must be a positive"),
    ("not parameters", lambda: normalize_gradients_(3), TypeError, "parameters must be"),
    ("list of non-tensors", lambda: adaptive_clip_gradients_(["a"]), TypeError, "expected parameters"),
    ("group without params", lambda: normalize_gradients_([{"lr": 0.1}]), TypeError, "'params' entry"),
    ("hook on a non-optimizer", lambda: apply_before_step([], normalize_gradients_), TypeError, "Optimizer"),
]


@pytest.mark.parametrize("case,call,error,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_clear_error(case, call, error, message):
    with pytest.raises(error, match=message):
        call()
