"""Finding and replacing normalization layers anywhere in a model: the helpers every surgery tool shares.

A layer is recognised as a normalization by the registry (:attr:`normlab.registry.NormSpec.classes` lists the
normlab *and* torch.nn classes of each kind). Third-party layers (Hugging Face's ``LlamaRMSNorm``, ``T5LayerNorm``)
are not registered; the tools that only read a model (:func:`~normlab.surgery.param_groups`,
:func:`~normlab.surgery.audit`) also accept a leaf module whose class name ends in ``Norm`` or
``Normalization``; the tools that change a model take them only through an explicit ``source=``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Union

import torch
from torch import nn

from normlab import nn as nlnn
from normlab.registry import NormSpec, find_norm_spec, get_norm_spec

#: what ``source=`` accepts: ``None`` (every registered norm), a class, a registry name, a predicate, or a sequence
Source = Union[None, type, str, Callable[[str, nn.Module], bool], Iterable[Union[type, str]]]

_NORM_NAME = re.compile(r"(Norm|Normalization|Norm\dd)$")
_KIND_BY_NAME = (("RMSNorm", "rms_norm"), ("LayerNorm", "layer_norm"), ("BatchNorm", "batch_norm"),
                 ("GroupNorm", "group_norm"), ("InstanceNorm", "instance_norm"))


def norm_spec_of(module: nn.Module | type) -> NormSpec | None:
    """The registry entry of an activation-norm layer (or class); ``None`` for unregistered classes and for the
    ``"none"`` entry (``nn.Identity`` is not a normalization)."""
    return find_norm_spec(module, family="activation")


def is_registered_norm(module: nn.Module) -> bool:
    """True for a layer of a registered normalization class (normlab's or torch.nn's)."""
    return norm_spec_of(module) is not None


def looks_like_norm(module: nn.Module) -> bool:
    """Registered norm layers, plus leaf modules named ``...Norm`` / ``...Normalization`` (third-party norms)."""
    if is_registered_norm(module):
        return True
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding)):
        return False
    return bool(_NORM_NAME.search(type(module).__name__)) and next(module.children(), None) is None


def norm_kind(module: nn.Module) -> str:
    """A short name of the layer's kind: its registry name, else a guess from the class name, else the class."""
    spec = norm_spec_of(module)
    if spec is not None:
        return spec.name
    name = type(module).__name__
    return next((kind for part, kind in _KIND_BY_NAME if part in name), name)


def source_predicate(source: Source, model: nn.Module | None = None) -> Callable[[str, nn.Module], bool]:
    """Turn ``source=`` into ``predicate(path, module) -> bool``.

    ``None`` selects every registered normalization layer; a class selects its instances; a string is a
    registry name (any spelling) or, failing that, the class name of a layer in ``model`` (``"LlamaRMSNorm"``);
    a callable is asked about every leaf module (containers never are norm layers); a list or tuple combines any
    of these.
    """
    if source is None:
        return lambda path, module: is_registered_norm(module)
    if isinstance(source, type):
        if not issubclass(source, nn.Module):
            raise TypeError(f"source class must be an nn.Module subclass, got {source.__name__}")
        return lambda path, module: isinstance(module, source)
    if isinstance(source, str):
        try:
            classes = get_norm_spec(source).classes
            return lambda path, module: isinstance(module, classes) and not type(module) is nn.Identity
        except ValueError:
            names = {type(m).__name__ for m in model.modules()} if model is not None else set()
            if source in names:
                return lambda path, module: type(module).__name__ == source
            raise
    if callable(source):  # asked about leaf modules only: containers are never normalization layers
        return lambda path, module: next(module.children(), None) is None and bool(source(path, module))
    if isinstance(source, Iterable):
        parts = [source_predicate(item, model) for item in source]
        return lambda path, module: any(p(path, module) for p in parts)
    raise TypeError(
        f"source must be None, a class, a registry name, a predicate(path, module) or a list of those, "
        f"got {type(source).__name__}"
    )


def occurrences(model: nn.Module) -> dict[int, list[str]]:
    """``id(module) -> every path it is reachable at`` (a module shared in two places has two paths)."""
    paths: dict[int, list[str]] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(module), []).append(path)
    return paths


def select(model: nn.Module, predicate: Callable[[str, nn.Module], bool]) -> Iterator[tuple[list[str], nn.Module]]:
    """Each distinct module that ``predicate`` accepts (at its first path), with all of its paths."""
    paths = occurrences(model)
    for path, module in model.named_modules():
        if predicate(path, module):
            yield paths[id(module)], module


def replace_at(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at ``path`` (``"layer1.0.bn1"``, ``"blocks.3"``, ``"heads.cls"``); works inside Sequential,
    ModuleList and ModuleDict because all of them keep their children under string keys."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    parent._modules[name] = new  # keeps the key and its position; setattr would also do for plain attributes


def device_and_dtype(*modules: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    """Device and floating dtype of the first floating tensor found in ``modules`` (in order)."""
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.is_floating_point():
                return tensor.device, tensor.dtype
    return None, None


def num_features_of(module: nn.Module) -> int | tuple[int, ...] | None:
    """The feature count of a norm layer: ``num_features``, ``num_channels``, ``normalized_shape`` (an int when
    it has one dim), the ``weight``'s shape, or ``hidden_size``, whichever it has first."""
    for attr in ("num_features", "num_channels"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    shape = getattr(module, "normalized_shape", None)
    if shape is not None:
        shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
        return shape[0] if len(shape) == 1 else shape
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() >= 1:
        return int(weight.shape[0]) if weight.dim() == 1 else tuple(weight.shape)
    value = getattr(module, "hidden_size", None)
    return value if isinstance(value, int) else None


_DIMS: dict[type, int] = {
    nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3,
    nn.InstanceNorm1d: 1, nn.InstanceNorm2d: 2, nn.InstanceNorm3d: 3,
    nn.LazyBatchNorm1d: 1, nn.LazyBatchNorm2d: 2, nn.LazyBatchNorm3d: 3,
    nlnn.BatchNorm1d: 1, nlnn.BatchNorm2d: 2, nlnn.BatchNorm3d: 3,
    nlnn.InstanceNorm1d: 1, nlnn.InstanceNorm2d: 2, nlnn.InstanceNorm3d: 3,
}


def spatial_dims_of(module: nn.Module) -> int | None:
    """Spatial dims implied by the layer's class (``BatchNorm2d`` → 2), ``None`` when the class does not say."""
    for cls in type(module).__mro__:
        if cls in _DIMS:
            return _DIMS[cls]
    return None


def channel_dim_of(module: nn.Module) -> int | None:
    """Where the layer expects its features: 1 for ``(N, C, *)``, -1 for ``(*, C)``, ``None`` when unknown."""
    if hasattr(module, "channels_last"):
        return -1 if module.channels_last else 1
    spec = norm_spec_of(module)
    if spec is not None:
        return spec.channel_dim
    if hasattr(module, "normalized_shape") or any(p in type(module).__name__ for p in ("LayerNorm", "RMSNorm")):
        return -1
    if hasattr(module, "num_features") or hasattr(module, "num_channels"):
        return 1
    return None


_EPS_ATTRS = ("eps", "variance_epsilon", "epsilon", "variance_eps")


def eps_of(module: nn.Module) -> tuple[str | None, Any]:
    """``(attribute name, value)`` of the layer's epsilon (``eps``, or Hugging Face's ``variance_epsilon``)."""
    for attr in _EPS_ATTRS:
        if attr in vars(module) or hasattr(type(module), attr):
            return attr, getattr(module, attr)
    return None, None


def own_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """The layer's own parameters and buffers (not its children's), by name; ``None`` entries skipped."""
    tensors: dict[str, torch.Tensor] = {}
    for name, param in module.named_parameters(recurse=False):
        tensors[name] = param
    for name, buf in module.named_buffers(recurse=False):
        tensors[name] = buf
    return tensors
