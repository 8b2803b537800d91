"""FGSM/PGD: the ε-ball and [0, 1] are never left; FGSM against the analytic gradient of a linear model;
robust accuracy sanity checks on a trained BN model; the gradient-masking warning."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import normlab.nn as nl
from normlab.analysis import GradientMaskingWarning, InputNormalization, fgsm, pgd, robust_accuracy

MEAN, STD = (0.45, 0.5, 0.55), (0.2, 0.25, 0.3)


def _images(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=gen)
    x[0] = 0.0  # pixels on the box boundary, where clamping is active
    x[1] = 1.0
    return x, torch.randint(3, (n,), generator=gen)


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()


ATTACKS = {
    "fgsm": lambda m, x, y, e, norm: fgsm(m, x, y, e, norm=norm, normalize=(MEAN, STD)),
    "pgd": lambda m, x, y, e, norm: pgd(m, x, y, e, norm=norm, normalize=(MEAN, STD), steps=5,
                                        generator=torch.Generator().manual_seed(0)),
    "pgd_large_steps": lambda m, x, y, e, norm: pgd(m, x, y, e, norm=norm, steps=3, step_size=5 * e),
    "pgd_no_random_start": lambda m, x, y, e, norm: pgd(m, x, y, e, norm=norm, steps=3, random_start=False),
}


@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("linf", 0.3), ("l2", 0.5), ("l2", 3.0)])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_never_leaves_the_ball_or_the_box(attack, norm, eps):
    x, y = _images()
    adversarial = ATTACKS[attack](small_model(), x, y, eps, norm)
    delta = (adversarial - x).flatten(1)
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
    else:
        assert (delta.norm(dim=1) <= eps * (1 + 1e-6)).all()
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    assert not adversarial.requires_grad
    assert delta.abs().max() > 0  # it moved


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_matches_the_analytic_gradient_of_a_linear_model(norm):
    """For logits W (x − μ)/σ + b the input gradient of cross-entropy is ((p − onehot) W) / σ, here in float64."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).double()
    x = torch.rand(7, 3, 4, 4, dtype=torch.float64) * 0.8 + 0.1
    y = torch.randint(5, (7,))
    eps = 0.05
    mean, std = torch.tensor(MEAN).double().view(1, 3, 1, 1), torch.tensor(STD).double().view(1, 3, 1, 1)
    W, b = model[1].weight.detach(), model[1].bias.detach()
    probs = torch.softmax(((x - mean) / std).flatten(1) @ W.T + b, dim=1)
    grad = ((probs - F.one_hot(y, 5).double()) @ W).reshape_as(x) / std
    if norm == "linf":
        expected = (x + eps * grad.sign()).clamp(0, 1)
    else:
        expected = (x + eps * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
    torch.testing.assert_close(fgsm(model, x, y, eps, norm=norm, normalize=(MEAN, STD)), expected)


def test_attacks_leave_parameter_gradients_alone():
    model = small_model()
    x, y = _images()
    pgd(model, x, y, 0.1, steps=2)
    assert all(p.grad is None for p in model.parameters())


def _two_class_data(n, gen):
    """Left-to-right brightness ramp (class 1) or right-to-left (class 0), weak against pixel noise."""
    y = torch.randint(2, (n,), generator=gen)
    ramp = torch.linspace(0, 1, 8)
    pattern = torch.where(y[:, None, None, None] == 1, ramp.view(1, 1, 1, 8), ramp.flip(0).view(1, 1, 1, 8))
    x = (0.45 + 0.1 * pattern + 0.15 * torch.randn(n, 3, 8, 8, generator=gen)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="module")
def trained():
    gen = torch.Generator().manual_seed(0)
    x, y = _two_class_data(256, gen)
    test = _two_class_data(128, gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nl.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 2))
    net = nn.Sequential(InputNormalization(MEAN, STD), model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(60):
        idx = torch.randint(256, (64,), generator=gen)
        optimizer.zero_grad()
        F.cross_entropy(net(x[idx]), y[idx]).backward()
        optimizer.step()
    loader = [(test[0][:64], test[1][:64]), (test[0][64:], test[1][64:])]
    return model, loader


EPS = {"linf": [0.0, 0.005, 0.01, 0.02, 0.04], "l2": [0.0, 0.1, 0.25, 0.5, 1.0]}


def _clean_accuracy(model, loader):
    model.eval()
    with torch.no_grad():
        correct = sum((model((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
                       .argmax(1) == y).sum().item() for x, y in loader)
    return correct / sum(len(y) for _, y in loader)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_robust_accuracy_sanity(trained, norm):
    model, loader = trained
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)
        by_fgsm = robust_accuracy(model, loader, "fgsm", EPS[norm], normalize=(MEAN, STD), norm=norm)
        by_pgd = robust_accuracy(model, loader, "pgd", EPS[norm], normalize=(MEAN, STD), norm=norm, steps=5,
                                 generator=torch.Generator().manual_seed(0))
    assert model.training  # the mode was restored
    clean = _clean_accuracy(model, loader)
    model.train()
    assert clean > 0.9
    for result in (by_fgsm, by_pgd):
        assert result.num_samples == 128
        assert result.clean_accuracy == clean  # ε = 0 is the clean accuracy
        assert all(b <= a + 1 / 128 for a, b in zip(result.accuracy, result.accuracy[1:]))  # falls with ε
        assert result.accuracy[-1] < clean - 0.3
    mean = lambda values: sum(values) / len(values)
    assert mean(by_pgd.accuracy) <= mean(by_fgsm.accuracy) + 1 / 128  # the iterative attack is at least as strong


class Quantized(nn.Module):
    """Rounds its input to 4 levels: zero gradient everywhere, the textbook case of gradient masking."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 4) / 4)


def test_gradient_masking_is_flagged(trained):
    model, loader = trained
    with pytest.warns(GradientMaskingWarning, match="did not fall"):
        result = robust_accuracy(Quantized(model), loader, "fgsm", [0.0, 0.01, 0.05], normalize=(MEAN, STD))
    assert result.accuracy[0] == result.accuracy[-1]


def test_a_rising_curve_is_flagged():
    calls = []

    def flaky_attack(net, x, y, eps):  # stronger at the smaller budget: impossible for a real attack
        calls.append(eps)
        return x if eps > 0.01 else torch.zeros_like(x)

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
        model[1].weight[0].fill_(1.0)  # class 0 for bright images, class 1 for black ones
    x = torch.full((4, 3, 8, 8), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.warns(GradientMaskingWarning, match="rose"):
        robust_accuracy(model, [(x, y)], flaky_attack, [0.0, 0.01, 0.02])
    assert calls == [0.01, 0.02]


@pytest.mark.parametrize("call, error, match", [
    (lambda m, x, y: fgsm(m, x * 3, y, 0.1), ValueError, "normalize"),
    (lambda m, x, y: fgsm(m, x, y, -0.1), ValueError, "eps"),
    (lambda m, x, y: pgd(m, x, y, 0.1, norm="l1"), ValueError, "norm"),
    (lambda m, x, y: pgd(m, x, y, 0.1, steps=0), ValueError, "steps"),
    (lambda m, x, y: fgsm(m, x, y, 0.1, normalize=(0.5,)), ValueError, "mean, std"),
    (lambda m, x, y: fgsm(m, (x * 255).byte(), y, 0.1), TypeError, "floating"),
    (lambda m, x, y: robust_accuracy(m, [(x, y)], "cw", [0.1]), ValueError, "attack"),
    (lambda m, x, y: robust_accuracy(m, [], "fgsm", [0.1]), ValueError, "no samples"),
    (lambda m, x, y: robust_accuracy(m, [(x, y)], "fgsm", [-1.0]), ValueError, "eps_list"),
    (lambda m, x, y: InputNormalization(0.5, 0.0), ValueError, "std"),
])
def test_bad_input(call, error, match):
    x, y = _images()
    with pytest.raises(error, match=match):
        call(small_model(), x, y)


def test_eps_zero_returns_the_images():
    x, y = _images()
    for attack in (fgsm, pgd):
        assert torch.equal(attack(small_model(), x, y, 0.0), x)
