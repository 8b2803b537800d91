"""The registry of normalizations: one name for each technique, one way to build it.

``create_norm(name, num_features, **kwargs)`` builds an activation-normalization layer from a registry name
(spelling variants accepted: ``"batch_norm"``, ``"batchnorm"``, ``"BatchNorm"``, ``"bn"``), a class, or a
``functools.partial`` — the ``norm_layer=`` convention of timm and torchvision, so a model can take any of them.
``list_norms()`` names everything normlab provides, weight normalizations included (those are applied with
:func:`normlab.reparametrize`, not built as layers).

**Choosing 1d/2d/3d.** BatchNorm, InstanceNorm take ``dims`` — the number of spatial dims (1, 2 or 3) — and then
return :class:`~normlab.nn.BatchNorm2d` and friends, which check the input rank like torch.nn's. Without ``dims``
they return the rank-agnostic :class:`~normlab.nn.BatchNorm` / :class:`~normlab.nn.InstanceNorm`, which accept any
``(N, C, *)`` input. Every other layer is rank-agnostic already and ignores ``dims``.

**Where the features are.** Each entry says which dim holds the features: ``1`` for ``(N, C, *)`` layers (BatchNorm,
GroupNorm, LayerNorm2d, …) and ``-1`` for ``(*, C)`` layers (LayerNorm, RMSNorm, ScaleNorm, DynamicTanh). In a
conv net use ``layer_norm_2d`` for a LayerNorm over channels.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from normlab import nn as nlnn

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class NormSpec:
    """One registered normalization."""

    name: str  #: canonical name, e.g. ``"group_norm"``
    description: str  #: one line for :func:`list_norms`
    family: str  #: ``"activation"`` (a layer), ``"weight"`` (a reparametrization) or ``"none"``
    build: Builder | None  #: ``build(num_features, dims, **kwargs)`` → layer; ``None`` for weight norms
    channel_dim: int = 1  #: where the features sit in the input: 1 for ``(N, C, *)``, -1 for ``(*, C)``
    classes: tuple[type, ...] = field(default=())  #: layer classes of this kind (normlab's and torch.nn's)


_REGISTRY: dict[str, NormSpec] = {}
_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def register_norm(
    name: str,
    description: str,
    build: Builder | None = None,
    *,
    family: str = "activation",
    channel_dim: int = 1,
    classes: tuple[type, ...] = (),
    aliases: dict[str, dict[str, Any]] | tuple[str, ...] = (),
) -> NormSpec:
    """Add a normalization to the registry.

    Args:
        name: canonical snake_case name.
        description: one line shown by :func:`list_norms`.
        build: ``build(num_features, dims, **kwargs)`` returning the layer (activation norms only).
        family: ``"activation"``, ``"weight"`` or ``"none"``.
        channel_dim: the input dim holding the features (1 or -1).
        classes: layer classes that are this kind of norm (used by model surgery to recognise layers).
        aliases: other spellings; a dict maps each to default keyword arguments (``{"bn2d": {"dims": 2}}``).

    Returns:
        The :class:`NormSpec` stored.
    """
    if _key(name) in _ALIASES and _ALIASES[_key(name)][0] != name:
        raise ValueError(f"register_norm: {name!r} is already an alias of {_ALIASES[_key(name)][0]!r}")
    spec = NormSpec(name, description, family, build, channel_dim, tuple(classes))
    _REGISTRY[name] = spec
    _ALIASES[_key(name)] = (name, {})
    alias_items = aliases.items() if isinstance(aliases, dict) else ((a, {}) for a in aliases)
    for alias, defaults in alias_items:
        _ALIASES[_key(alias)] = (name, dict(defaults))
    return spec


def _lookup(name: str) -> tuple[NormSpec, dict[str, Any]]:
    found = _ALIASES.get(_key(name))
    if found is None:
        names = sorted(_REGISTRY)
        close = difflib.get_close_matches(_key(name), [_key(n) for n in names] + list(_ALIASES), n=1, cutoff=0.5)
        hint = f" Did you mean {_ALIASES[close[0]][0]!r}?" if close else ""
        raise ValueError(f"unknown normalization {name!r}.{hint} Valid names: {', '.join(names)}")
    canonical, defaults = found
    return _REGISTRY[canonical], defaults


def get_norm_spec(norm: str | type) -> NormSpec:
    """The :class:`NormSpec` for a registry name (any spelling) or a layer class.

    Examples:
        >>> get_norm_spec("GroupNorm").name, get_norm_spec(nn.LayerNorm).channel_dim
        ('group_norm', -1)
    """
    if isinstance(norm, str):
        return _lookup(norm)[0]
    spec = find_norm_spec(norm)
    if spec is None:
        raise ValueError(f"{getattr(norm, '__name__', norm)!r} is not a registered normalization class")
    return spec


def find_norm_spec(layer: nn.Module | type, family: str | None = None) -> NormSpec | None:
    """The entry of a layer or class, or ``None``: the most specific registered class wins, so ``BatchRenorm``
    (a ``BatchNorm`` subclass) is ``batch_renorm``, not ``batch_norm``.

    Examples:
        >>> find_norm_spec(nlnn.BatchRenorm(4)).name, find_norm_spec(nn.Linear) is None
        ('batch_renorm', True)
    """
    cls = layer if isinstance(layer, type) else type(layer)
    best, best_rank = None, None
    for spec in _REGISTRY.values():
        if family is not None and spec.family != family:
            continue
        for registered in spec.classes:
            if issubclass(cls, registered):
                rank = cls.__mro__.index(registered)
                if best_rank is None or rank < best_rank:
                    best, best_rank = spec, rank
    return best


class NormListing(dict):
    """``{name: description}`` that prints as a two-column table."""

    def __repr__(self) -> str:
        width = max(map(len, self), default=0)
        return "\n".join(f"{name:<{width}}  {description}" for name, description in self.items())


def norm_kind(layer: nn.Module | type) -> str | None:
    """The registry name of an activation-normalization layer's kind (normlab's or torch.nn's classes), or
    ``None`` for any other module (``nn.Identity`` included).

    Examples:
        >>> norm_kind(nn.GroupNorm(2, 4)), norm_kind(nlnn.GhostBatchNorm(4)), norm_kind(nn.Linear(2, 2))
        ('group_norm', 'ghost_batch_norm', None)
    """
    spec = find_norm_spec(layer, family="activation")
    return None if spec is None else spec.name


def list_norms(family: str | None = None) -> NormListing:
    """Every registered normalization with its one-line description.

    Args:
        family: only ``"activation"`` layers or ``"weight"`` reparametrizations; ``None`` for all.

    Returns:
        ``{name: description}`` in registration order (a dict that prints as a table).

    Examples:
        >>> names = list_norms("activation")
        >>> "rms_norm" in names and "dynamic_tanh" in names
        True
    """
    return NormListing((n, s.description) for n, s in _REGISTRY.items() if family is None or s.family == family)


def default_num_groups(num_channels: int, preferred: int = 32) -> int:
    """GroupNorm's number of groups when none is given: ``preferred`` (32, Wu & He's default) if it divides the
    channels and leaves at least 2 channels per group, else the largest divisor of ``num_channels`` that is
    ≤ ``preferred`` and leaves at least 2 channels per group (1 group when none does).

    Examples:
        >>> default_num_groups(64), default_num_groups(16), default_num_groups(24), default_num_groups(3)
        (32, 8, 12, 1)
    """
    limit = min(preferred, num_channels // 2)
    return next((g for g in range(limit, 0, -1) if num_channels % g == 0), 1)


def _is_group_norm_class(cls: type) -> bool:
    return issubclass(cls, (nlnn.GroupNorm, nn.GroupNorm))


def create_norm(norm: str | type | Callable[..., nn.Module], num_features: int, *, dims: int | None = None,
                **kwargs: Any) -> nn.Module:
    """Build a normalization layer for ``num_features`` features (channels).

    Args:
        norm: a registry name (see :func:`list_norms`; spelling variants accepted), a layer class (called as
            ``cls(num_features, **kwargs)``; GroupNorm classes as ``cls(num_groups, num_features)``), or any
            callable such as ``functools.partial(nn.GroupNorm, 8)`` (called as ``norm(num_features, **kwargs)``).
        num_features: the number of features/channels ``C``.
        dims: spatial dims (1, 2, 3) for BatchNorm/InstanceNorm to pick the rank-checked 1d/2d/3d class;
            ``None`` builds the rank-agnostic one. Ignored by the other layers.
        **kwargs: passed to the layer (e.g. ``eps``, ``momentum``, ``num_groups``, ``affine``).

    Returns:
        The layer.

    Examples:
        >>> create_norm("BatchNorm", 16, dims=2)
        BatchNorm2d(16, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
        >>> create_norm("gn", 64)
        GroupNorm(32, 64, eps=1e-05, affine=True)
        >>> import functools
        >>> layer = create_norm(functools.partial(nn.GroupNorm, 4), 8)
        >>> type(layer).__module__, layer.num_groups, layer.num_channels
        ('torch.nn.modules.normalization', 4, 8)
        >>> create_norm("groupnrom", 8)
        Traceback (most recent call last):
            ...
        ValueError: unknown normalization 'groupnrom'. Did you mean 'group_norm'? Valid names: ...
    """
    if isinstance(norm, str):
        spec, defaults = _lookup(norm)
        if spec.build is None:
            raise TypeError(
                f"{spec.name!r} is a weight normalization, not a layer: apply it to a module with "
                f"normlab.reparametrize(module, {spec.name!r})"
            )
        options = {**defaults, **kwargs}
        dims = options.pop("dims", dims) if dims is None else dims
        options.pop("dims", None)
        return spec.build(num_features, dims, **options)
    if isinstance(norm, type) and _is_group_norm_class(norm):
        groups = kwargs.pop("num_groups", default_num_groups(num_features))
        return norm(groups, num_features, **kwargs)
    if callable(norm):
        return norm(num_features, **kwargs)
    raise TypeError(f"create_norm: norm must be a name, a class or a callable, got {type(norm).__name__}")


def norm_factory(norm: str | type | Callable[..., nn.Module], *, dims: int | None = None,
                 **kwargs: Any) -> Callable[..., nn.Module]:
    """A ``norm_layer``-style factory ``f(num_features, **more)`` for a name, class or callable.

    Examples:
        >>> make = norm_factory("rms_norm", eps=1e-6)
        >>> make(8)
        RMSNorm((8,), eps=1e-06, elementwise_affine=True)
    """
    if isinstance(norm, str):
        _lookup(norm)  # fail early on an unknown name
    return lambda num_features, **more: create_norm(norm, num_features, dims=dims, **{**kwargs, **more})


def _ranked(agnostic: type, ranked: dict[int, type]) -> Builder:
    def build(num_features: int, dims: int | None, **kwargs: Any) -> nn.Module:
        if dims is None:
            return agnostic(num_features, **kwargs)
        if dims not in ranked:
            raise ValueError(f"dims must be 1, 2 or 3 (spatial dims) or None, got {dims!r}")
        return ranked[dims](num_features, **kwargs)

    return build


def _plain(cls: type) -> Builder:
    return lambda num_features, dims, **kwargs: cls(num_features, **kwargs)


def _group_norm(num_features: int, dims: int | None, num_groups: int | None = None, **kwargs: Any) -> nn.Module:
    return nlnn.GroupNorm(num_groups or default_num_groups(num_features), num_features, **kwargs)


_BN = {1: nlnn.BatchNorm1d, 2: nlnn.BatchNorm2d, 3: nlnn.BatchNorm3d}
_IN = {1: nlnn.InstanceNorm1d, 2: nlnn.InstanceNorm2d, 3: nlnn.InstanceNorm3d}

register_norm(
    "batch_norm", "BatchNorm (Ioffe & Szegedy 2015): per channel over batch and space; running stats in eval",
    _ranked(nlnn.BatchNorm, _BN), classes=(nlnn.BatchNorm, nn.modules.batchnorm._BatchNorm),
    aliases={"bn": {}, "batchnorm1d": {"dims": 1}, "batchnorm2d": {"dims": 2}, "batchnorm3d": {"dims": 3}},
)
register_norm(
    "layer_norm", "LayerNorm (Ba et al. 2016): per sample over the trailing feature dims (*, C)",
    _plain(nlnn.LayerNorm), channel_dim=-1, classes=(nlnn.LayerNorm, nn.LayerNorm), aliases=("ln",),
)
register_norm(
    "layer_norm_2d", "channels-first LayerNorm over C of (N, C, *), as ConvNeXt uses (Liu et al. 2022)",
    _plain(nlnn.LayerNorm2d), classes=(nlnn.LayerNorm2d,), aliases=("ln2d", "layernorm2d", "channel_layer_norm"),
)
register_norm(
    "group_norm", "GroupNorm (Wu & He 2018): per sample over groups of channels and space; batch-independent",
    _group_norm, classes=(nlnn.GroupNorm, nn.GroupNorm), aliases=("gn",),
)
register_norm(
    "instance_norm", "InstanceNorm (Ulyanov et al. 2016): per sample and channel over space",
    _ranked(nlnn.InstanceNorm, _IN), classes=(nlnn.InstanceNorm, nn.modules.instancenorm._InstanceNorm),
    aliases={"in": {}, "instancenorm1d": {"dims": 1}, "instancenorm2d": {"dims": 2}, "instancenorm3d": {"dims": 3}},
)
register_norm(
    "rms_norm", "RMSNorm (Zhang & Sennrich 2019): rescale by the root mean square of the features, no centring",
    _plain(nlnn.RMSNorm), channel_dim=-1, classes=(nlnn.RMSNorm, nn.RMSNorm), aliases=("rms",),
)
register_norm(
    "batch_renorm", "Batch Renormalization (Ioffe 2017): BatchNorm corrected towards running stats (r, d)",
    _plain(nlnn.BatchRenorm), classes=(nlnn.BatchRenorm,), aliases=("brn",),
)
register_norm(
    "ghost_batch_norm", "Ghost BatchNorm (Hoffer et al. 2017): BatchNorm over virtual sub-batches",
    _plain(nlnn.GhostBatchNorm), classes=(nlnn.GhostBatchNorm,), aliases=("gbn", "ghost_bn", "virtual_batch_norm"),
)
register_norm(
    "filter_response_norm", "Filter Response Norm + TLU (Singh & Krishnan 2020): per channel mean square, no batch",
    _plain(nlnn.FilterResponseNorm), classes=(nlnn.FilterResponseNorm,), aliases=("frn",),
)
register_norm(
    "scale_norm", "ScaleNorm (Nguyen & Salazar 2019): project onto the sphere, one learned radius g",
    _plain(nlnn.ScaleNorm), channel_dim=-1, classes=(nlnn.ScaleNorm,),
)
register_norm(
    "dynamic_tanh", "Dynamic Tanh (Zhu et al. 2025): normalization-free gamma * tanh(alpha x) + beta",
    _plain(nlnn.DynamicTanh), channel_dim=-1, classes=(nlnn.DynamicTanh,), aliases=("dyt",),
)
register_norm(
    "none", "no normalization (identity), the baseline", lambda num_features, dims, **kwargs: nn.Identity(),
    family="none", classes=(nn.Identity,), aliases=("identity", "no_norm"),
)
