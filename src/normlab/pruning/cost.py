"""What a model costs: parameters, and FLOPs of one forward pass counted by ``torch.utils.flop_counter``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ModelCost:
    """Parameters and forward FLOPs of a model on one input batch."""

    parameters: int  #: number of parameter elements (shared parameters counted once)
    flops: int  #: FLOPs of one forward pass as counted by :class:`torch.utils.flop_counter.FlopCounterMode`


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (each shared parameter once).

    Examples:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, example_inputs) -> int:
    """FLOPs of one forward pass on ``example_inputs`` in eval mode, counted by
    :class:`torch.utils.flop_counter.FlopCounterMode` (matrix multiplications and convolutions, 2 FLOPs per
    multiply-add; elementwise work such as normalization is not counted). The model's modes are restored.

    Examples:
        >>> count_flops(nn.Linear(3, 2, bias=False), torch.randn(5, 3))  # 2 * 5 * 3 * 2
        60
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            if isinstance(example_inputs, (tuple, list)):
                model(*example_inputs)
            else:
                model(example_inputs)
    finally:
        for module, training in modes.items():
            module.training = training
    return int(counter.get_total_flops())


def model_cost(model: nn.Module, example_inputs) -> ModelCost:
    """:class:`ModelCost` of ``model`` on ``example_inputs``."""
    return ModelCost(count_parameters(model), count_flops(model, example_inputs))


__all__ = ["ModelCost", "count_flops", "count_parameters", "model_cost"]
