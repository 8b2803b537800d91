r"""Replace the normalization layers of any model with another kind: ``swap_norm``.

The rules, layer by layer:

* **Features.** The new layer gets the old one's feature count (``num_features``, ``num_channels``,
  ``normalized_shape``, the ``weight``'s shape or ``hidden_size``) and, for BatchNorm/InstanceNorm targets, the 1d/2d/3d
  variant of the old class (``BatchNorm2d`` → ``InstanceNorm2d``); a class that does not say gives the
  rank-agnostic normlab layer.
* **GroupNorm groups.** :func:`normlab.default_num_groups`: 32 groups if 32 divides ``C`` and leaves ≥ 2 channels
  per group, else the largest divisor of ``C`` below 32 leaving ≥ 2 channels per group, else 1 (``num_groups=``
  overrides it).
* **eps, affine.** The old ``eps`` (or ``variance_epsilon``) is kept when both layers add it to a variance or a
  mean square; an affine old layer gives an affine new one (InstanceNorm's ``affine=False`` default is not
  used). Keyword arguments override both.
* **Parameters and buffers** are copied by name when both layers have them with the same shape:
  :math:`\gamma` and :math:`\beta` across BatchNorm ↔ GroupNorm ↔ LayerNorm2d ↔ InstanceNorm ↔ LayerNorm;
  LayerNorm → RMSNorm keeps :math:`\gamma` and *drops* :math:`\beta` (RMSNorm has none; RMSNorm → LayerNorm
  starts :math:`\beta` at 0); running statistics only when both keep them. What is dropped or new is listed.
* **Device, dtype, train/eval mode, requires_grad** and a :func:`~normlab.surgery.freeze_norm` pin carry over.
* **Layout.** Layers that take features in dim 1 (``(N, C, *)``) and those that take them last (``(*, C)``) are
  swapped only where that is the same dim: from ``BatchNorm2d``/``3d`` to a channels-last layer is refused (use
  ``layer_norm_2d``); the other crossings are noted, being right only for ``(N, C)`` inputs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from normlab.nn.convert import NORMLAB_TO_TORCH, TORCH_TO_NORMLAB, from_torch, to_torch
from normlab.registry import NormSpec, create_norm, get_norm_spec
from normlab.surgery import _walk
from normlab.surgery._report import SurgeryReport, join_paths
from normlab.surgery.freeze import is_frozen, pin_eval

# Kinds whose eps is added to a variance or a mean square (the same meaning, so it carries across).
_VARIANCE_EPS = {"batch_norm", "layer_norm", "layer_norm_2d", "group_norm", "instance_norm", "rms_norm",
                 "batch_renorm", "ghost_batch_norm", "filter_response_norm"}
_CONVERT = {"torch": (NORMLAB_TO_TORCH, to_torch), "normlab": (TORCH_TO_NORMLAB, from_torch)}


@dataclass
class SwapRecord:
    """One layer replaced (or deliberately left): where, from what, to what, and what carried over."""

    paths: list[str]
    old: str
    new: str
    kept: list[str] = field(default_factory=list)  #: parameters/buffers copied across
    dropped: list[str] = field(default_factory=list)  #: the old layer's tensors with no place in the new one
    fresh: list[str] = field(default_factory=list)  #: the new layer's tensors at their default initial value
    note: str = ""

    def row(self) -> tuple[str, ...]:
        changes = [f"dropped {', '.join(self.dropped)}"] if self.dropped else []
        changes += [f"new {', '.join(self.fresh)}"] if self.fresh else []
        note = "; ".join(changes + ([self.note] if self.note else []))
        return join_paths(self.paths), f"{self.old} → {self.new}", ", ".join(self.kept) or "-", note


class SwapReport(SurgeryReport):
    """What :func:`swap_norm` did: a list of :class:`SwapRecord` that prints as a table."""

    headers = ("module", "swap", "kept", "notes")


@dataclass
class _Target:
    label: str
    build: Callable[[int | tuple[int, ...], int | None, dict[str, Any]], nn.Module]
    signature_of: Any  # the class (or factory) whose parameters decide which defaults we may pass
    spec: NormSpec | None


def _resolve_target(to: Any) -> _Target:
    if isinstance(to, str):
        spec = get_norm_spec(to)  # the registry's error for an unknown name
        if spec.build is None:
            raise TypeError(f"swap_norm: {spec.name!r} is a weight normalization, not a layer; apply it with "
                            f"normlab.reparametrize(module, {spec.name!r})")
        return _Target(spec.name, lambda c, dims, kw: create_norm(to, c, dims=kw.pop("dims", dims), **kw),
                       spec.classes[0] if spec.classes else None, spec)
    if isinstance(to, type):
        if not issubclass(to, nn.Module):
            raise TypeError(f"swap_norm: to= must be a registry name, an nn.Module class or a factory, "
                            f"got the class {to.__name__}")
        spec = _walk.norm_spec_of(to)
        return _Target(to.__name__, lambda c, dims, kw: create_norm(to, c, **kw), to, spec)
    if callable(to):
        label = getattr(to, "__name__", None) or getattr(getattr(to, "func", None), "__name__", "factory")
        return _Target(label, lambda c, dims, kw: to(c, **{k: v for k, v in kw.items() if k != "dims"}), to, None)
    raise TypeError(f"swap_norm: to= must be a registry name (see normlab.list_norms()), a layer class or a "
                    f"factory f(num_features) -> nn.Module, got {type(to).__name__}")


def _accepts(target: Any, name: str) -> bool:
    try:
        return name in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def _defaults(old: nn.Module, target: _Target, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments that carry the old layer's eps, affine flag and layout over."""
    options = dict(kwargs)
    old_spec = _walk.norm_spec_of(old)
    eps_name, eps = _walk.eps_of(old)
    old_kind_ok = old_spec is None and eps_name is not None or old_spec is not None and old_spec.name in _VARIANCE_EPS
    new_kind_ok = target.spec.name in _VARIANCE_EPS if target.spec is not None else True
    if "eps" not in options and old_kind_ok and new_kind_ok and isinstance(eps, float) \
            and _accepts(target.signature_of, "eps"):
        options["eps"] = eps
    has_gamma = isinstance(getattr(old, "weight", None), torch.Tensor)
    for flag in ("affine", "elementwise_affine"):
        if flag not in options and "affine" not in options and "elementwise_affine" not in options \
                and _accepts(target.signature_of, flag):
            options[flag] = has_gamma
    if "channels_last" not in options and _accepts(target.signature_of, "channels_last"):
        options["channels_last"] = _walk.channel_dim_of(old) != 1
    return options


def _copy_tensors(old: nn.Module, new: nn.Module, record: SwapRecord) -> None:
    ours, theirs = _walk.own_tensors(old), _walk.own_tensors(new)
    trainable = all(p.requires_grad for p in old.parameters(recurse=False))
    with torch.no_grad():
        for name, target in theirs.items():
            source = ours.get(name)
            if source is not None and source.shape == target.shape:
                target.copy_(source)
                if isinstance(target, nn.Parameter):
                    target.requires_grad_(source.requires_grad)
                record.kept.append(name)
            else:
                if isinstance(target, nn.Parameter):
                    target.requires_grad_(trainable)
                if name != "num_batches_tracked":
                    record.fresh.append(name)
    record.dropped = [name for name in ours if name not in record.kept and name != "num_batches_tracked"]


def _layout_note(old: nn.Module, new: nn.Module, path: str, target: str) -> str:
    before, after = _walk.channel_dim_of(old), _walk.channel_dim_of(new)
    if before is None or after is None or before == after:
        return ""
    if before == 1 and (_walk.spatial_dims_of(old) or 0) >= 2:
        raise ValueError(
            f"swap_norm: {path!r} is a {type(old).__name__} (features in dim 1 of (N, C, H, W...)) but {target} "
            f"normalizes the last dim; for conv features use 'layer_norm_2d' (LayerNorm over channels)"
        )
    where = "dim 1 to the last dim" if before == 1 else "the last dim to dim 1"
    return f"features move from {where}: same only for (N, C) inputs"


def _build(old: nn.Module, path: str, target: _Target, kwargs: dict[str, Any], model: nn.Module) -> nn.Module:
    features = _walk.num_features_of(old)
    if features is None:
        raise ValueError(f"swap_norm: cannot tell the feature count of {path!r} ({type(old).__name__}); it has no "
                         f"num_features, num_channels, normalized_shape, weight or hidden_size")
    if isinstance(features, tuple) and (target.spec is None or target.spec.name not in ("layer_norm", "rms_norm")):
        raise ValueError(f"swap_norm: {path!r} normalizes over the trailing shape {features}; only 'layer_norm' "
                         f"and 'rms_norm' take such a shape, {target.label} takes one feature count")
    try:
        new = target.build(features, _walk.spatial_dims_of(old), _defaults(old, target, kwargs))
    except (TypeError, ValueError) as error:
        raise type(error)(f"swap_norm: building {target.label} for {path!r} ({features} features) failed: "
                          f"{error}") from error
    if not isinstance(new, nn.Module):
        raise TypeError(f"swap_norm: the factory returned {type(new).__name__}, not an nn.Module")
    device, dtype = _walk.device_and_dtype(old, model)
    if device is not None:
        new.to(device=device, dtype=dtype)
    new.train(old.training)
    return new


def _swap_one(old: nn.Module, paths: list[str], target: _Target, kwargs: dict[str, Any],
              model: nn.Module) -> tuple[nn.Module | None, SwapRecord]:
    new = _build(old, paths[0], target, kwargs, model)
    record = SwapRecord(paths, type(old).__name__, type(new).__name__)
    if type(new) is type(old) and not kwargs:
        record.note = "already this kind: left as is"
        return None, record
    _copy_tensors(old, new, record)
    notes = [_layout_note(old, new, paths[0], target.label)]
    if is_frozen(old):
        pin_eval(new)
        notes.append("kept frozen (freeze_norm)")
    record.note = "; ".join(n for n in notes if n)
    return new, record


def _convert_one(old: nn.Module, paths: list[str], direction: str) -> tuple[nn.Module | None, SwapRecord]:
    table, convert = _CONVERT[direction]
    if type(old) not in table:
        record = SwapRecord(paths, type(old).__name__, type(old).__name__)
        record.note = f"left: no {direction} counterpart"
        return None, record
    new = convert(old)
    if is_frozen(old):
        pin_eval(new)
    record = SwapRecord(paths, f"{type(old).__module__.split('.')[0]}.{type(old).__name__}",
                        f"{type(new).__module__.split('.')[0]}.{type(new).__name__}")
    record.kept = ["all weights and buffers"]
    return new, record


def swap_norm(model: nn.Module, to: Any, *, source: _walk.Source = None, **kwargs: Any) -> SwapReport:
    """Replace every normalization layer of ``model`` (or those ``source`` selects) with another kind. In place.

    Works through nested containers, ``ModuleList``/``ModuleDict`` and modules shared in several places (a shared
    layer is replaced once and stays shared). See the module docstring for what carries over and what cannot.

    Args:
        model: any ``nn.Module``; changed in place (the torch convention, like ``module.to()``).
        to: the new kind: a registry name (``"group_norm"``, ``"rms_norm"``, any of :func:`normlab.list_norms`),
            a layer class (``nn.GroupNorm``, ``normlab.nn.RMSNorm``), or a factory ``f(num_features, **kwargs)``;
            or ``"normlab"`` / ``"torch"`` to convert torch.nn layers to their normlab equivalents or back, with
            every weight and buffer (:func:`normlab.nn.from_torch` / :func:`~normlab.nn.to_torch`).
        source: which layers to replace: ``None`` (every registered normalization layer, normlab's and torch.nn's),
            a class, a registry name, a class name of a layer in the model (``"LlamaRMSNorm"``), a predicate
            ``(path, module) -> bool`` (asked about every leaf module), or a list of these. Third-party norm
            classes are swapped only through it.
        **kwargs: arguments for the new layers (``num_groups=8``, ``eps=1e-6``, ``dims=2``, ...).

    Returns:
        A :class:`SwapReport` with one record per replaced layer; ``.model`` is the model (a new object only
        when ``model`` itself was a norm layer). An empty report warns: nothing to do.

    Raises:
        ValueError: an unknown registry name (the registry's message), or a swap that would normalize the
            wrong dim.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 24, 3), nn.BatchNorm2d(24), nn.ReLU())
        >>> print(swap_norm(model, "group_norm"))
        swap_norm → group_norm: 1 layers
        module  swap                     kept          notes
        ------  -----------------------  ------------  ---------------------------------
        1       BatchNorm2d → GroupNorm  weight, bias  dropped running_mean, running_var
        >>> model[1]
        GroupNorm(12, 24, eps=1e-05, affine=True)
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     print(swap_norm(nn.Sequential(nn.Linear(4, 4)), "rms_norm"))
        swap_norm → rms_norm: 0 layers: nothing to do
        >>> caught[0].category.__name__
        'UserWarning'
    """
    direction = to if isinstance(to, str) and to in _CONVERT else None
    target = None if direction else _resolve_target(to)
    if direction:  # the layers of the other library: torch.nn's when converting to normlab, and back
        other = "torch." if direction == "normlab" else "normlab."
        base = _walk.source_predicate(source, model)
        predicate = lambda path, m: base(path, m) and type(m).__module__.startswith(other)  # noqa: E731
    else:
        predicate = _walk.source_predicate(source, model)
    label = direction or target.label
    records, replacements = [], []
    for paths, old in list(_walk.select(model, predicate)):
        new, record = _convert_one(old, paths, direction) if direction else _swap_one(old, paths, target, kwargs,
                                                                                     model)
        records.append(record)
        if new is not None:
            replacements.append((paths, new))
    for paths, new in replacements:
        if paths == [""]:
            model = new
            continue
        for path in paths:
            _walk.replace_at(model, path, new)
    report = SwapReport(records, model=model, action=f"swap_norm → {label}: {len(replacements)} layers")
    report.warn_if_empty("no normalization layer matched; pass source= (a class, a name or a predicate) to "
                         "choose third-party layers")
    return report
