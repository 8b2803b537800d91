"""param_groups: every parameter exactly once; norm parameters and biases without weight decay."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import surgery_models as M
from normlab.surgery import param_groups


class ThirdPartyRMSNorm(nn.Module):
    """An unregistered norm class, like Hugging Face's LlamaRMSNorm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)


class Tied(nn.Module):
    """Input embedding tied to the output head, a third-party norm in between."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.norm = ThirdPartyRMSNorm(8)
        self.head = nn.Linear(8, 20)
        self.head.weight = self.embed.weight


def _norm_names_by_hand(model: nn.Module) -> set[str]:
    """Independent expectation: the parameters of modules whose class is a known norm type."""
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, ThirdPartyRMSNorm)
    return {f"{path}.{name}" if path else name for path, m in model.named_modules() if isinstance(m, norm_types)
            for name, _ in m.named_parameters(recurse=False)}


MODELS = [M.TinyResNet, M.Nested, M.Shared, M.TinyTransformer, Tied, M.plain_sequential]


@pytest.mark.parametrize("build", MODELS, ids=lambda b: b.__name__)
def test_every_parameter_exactly_once_in_the_right_group(build):
    model = build()
    groups = param_groups(model, weight_decay=0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    names = {g["name"]: set(g["param_names"]) for g in groups}
    assert names.get("norm", set()) == _norm_names_by_hand(model)
    assert all(n.endswith(".bias") for n in names.get("bias", ()))
    assert all(not n.endswith(".bias") for n in names.get("decay", ()))
    decay = {g["name"]: g["weight_decay"] for g in groups}
    assert decay["decay"] == 0.1 and decay.get("norm", 0.0) == 0.0 and decay.get("bias", 0.0) == 0.0


def test_decay_values_and_an_optimizer_step():
    model = M.TinyResNet()
    groups = param_groups(model, weight_decay=0.05, norm_weight_decay=0.01, bias_weight_decay=0.02)
    assert [(g["name"], g["weight_decay"]) for g in groups] == [("decay", 0.05), ("norm", 0.01), ("bias", 0.02)]
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    model(M.image_batch()).sum().backward()
    optimizer.step()
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.01, 0.02]


def test_tied_parameters_are_listed_once():
    groups = param_groups(Tied())
    decay = next(g for g in groups if g["name"] == "decay")
    assert decay["param_names"] == ["embed.weight"]


def test_prints_a_table():
    text = str(param_groups(M.TinyResNet()))
    assert text.splitlines()[0].split() == ["group", "weight_decay", "tensors", "values", "parameters"]
    assert "bn1.weight" in text


@pytest.mark.parametrize("kwargs", [{"weight_decay": -1}, {"norm_weight_decay": "0"}, {"bias_weight_decay": True}])
def test_bad_decay_raises(kwargs):
    with pytest.raises(ValueError, match="must be a number"):
        param_groups(M.mlp(), **kwargs)
