"""Shared helpers: recognising normalization layers in any model, calling a model, leaving it untouched."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn



def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(inputs)`` for a tensor, ``model(*inputs)`` for a tuple or list."""
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    if isinstance(inputs, Tensor):
        return model(inputs)
    raise TypeError(f"inputs must be a tensor or a tuple/list of tensors, got {type(inputs).__name__}")


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore every buffer (e.g. BatchNorm running statistics) and the train/eval flags on exit."""
    buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    modes = {module: module.training for module in model.modules()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name in buffers:
                    buffer.copy_(buffers[name])
        for module, training in modes.items():
            module.training = training
