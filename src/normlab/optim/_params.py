"""Turn the many ways of naming parameters (a model, an optimizer, param groups, named or bare tensors) into
one flat list, keeping what the gradient tools need: a label, the param group, the layer and the output-unit dim.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor, nn

Parameters = Union[nn.Module, torch.optim.Optimizer, Tensor, Iterable[Any]]

_PARAMETRIZED = re.compile(r"\.?parametrizations\.([^.]+)\.original\d*$")


@dataclass(frozen=True)
class ParamEntry:
    """One parameter with a gradient, as the gradient tools see it."""

    label: str  #: its name, or ``group{g}.{i}`` / ``{i}`` when unnamed
    param: Tensor
    group: int  #: index of its param group (0 when there are none)
    layer: str | None  #: path of the layer owning it (``None`` when unnamed)
    unit_dim: int  #: the dim of output units (1 for ConvTranspose weights when known, else 0)


def _tensor_path(name: str) -> str:
    """``"fc.parametrizations.weight.original1"`` → ``"fc.weight"``: the path of the tensor the model uses."""
    return _PARAMETRIZED.sub(lambda m: ("." if m.start() > 0 else "") + m.group(1), name)


def _layer_of(name: str) -> str:
    path = _tensor_path(name)
    return path.rsplit(".", 1)[0] if "." in path else ""


def _check_param(p: Any, who: str) -> Tensor:
    if not isinstance(p, Tensor):
        raise TypeError(f"{who}: expected parameters (tensors), got {type(p).__name__}")
    if p.grad is not None and p.grad.is_sparse:
        raise TypeError(f"{who}: sparse gradients are not supported (parameter of shape {tuple(p.shape)})")
    return p


def _from_module(model: nn.Module, who: str) -> list[ParamEntry]:
    modules = dict(model.named_modules())
    entries = []
    for name, p in model.named_parameters():
        path = _tensor_path(name)
        owner, _, tensor = path.rpartition(".")
        transposed = isinstance(modules.get(owner), nn.modules.conv._ConvTransposeNd) and tensor == "weight"
        entries.append(ParamEntry(name, _check_param(p, who), 0, _layer_of(name), int(transposed and p.dim() >= 2)))
    return entries


def _from_groups(groups: Iterable[Mapping[str, Any]], who: str) -> list[ParamEntry]:
    entries = []
    for g, group in enumerate(groups):
        if "params" not in group:
            raise TypeError(f"{who}: a param group must be a dict with a 'params' entry, got keys {sorted(group)}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        names = group.get("param_names")
        for i, p in enumerate(params):
            name = names[i] if names is not None else None
            label = name if name is not None else f"group{g}.{i}"
            entries.append(ParamEntry(label, _check_param(p, who), g, None if name is None else _layer_of(name), 0))
    return entries


def collect_parameters(parameters: Parameters, who: str) -> list[ParamEntry]:
    """Every distinct parameter that has a gradient, from a model, an optimizer, a list of param-group dicts,
    ``model.named_parameters()``, a list of tensors or one tensor."""
    if isinstance(parameters, nn.Module):
        entries = _from_module(parameters, who)
    elif isinstance(parameters, torch.optim.Optimizer):
        entries = _from_groups(parameters.param_groups, who)
    elif isinstance(parameters, Tensor):
        entries = [ParamEntry("0", _check_param(parameters, who), 0, None, 0)]
    elif isinstance(parameters, Iterable) and not isinstance(parameters, (str, bytes)):
        items = list(parameters)
        if all(isinstance(item, Mapping) for item in items):
            entries = _from_groups(items, who)
        elif all(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) for item in items):
            entries = [ParamEntry(n, _check_param(p, who), 0, _layer_of(n), 0) for n, p in items]
        else:
            entries = [ParamEntry(str(i), _check_param(p, who), 0, None, 0) for i, p in enumerate(items)]
    else:
        raise TypeError(
            f"{who}: parameters must be a model, an optimizer, param groups, named parameters or tensors; "
            f"got {type(parameters).__name__}"
        )
    seen: set[int] = set()
    kept = []
    for entry in entries:
        if entry.param.grad is None or id(entry.param) in seen:
            continue
        seen.add(id(entry.param))
        kept.append(entry)
    return kept
