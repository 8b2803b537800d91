r"""Apply weight reparametrizations to a layer or a whole model, and bake them back into plain weights.

``reparametrize(model, "weight_standardization")`` registers the reparametrization on every Linear, Conv and
ConvTranspose weight through :mod:`torch.nn.utils.parametrize`, so ``.weight``, ``state_dict()``, optimizers
and :func:`torch.nn.utils.parametrize.remove_parametrizations` behave the torch way. ``bake_weights(model)``
undoes it, leaving each weight a plain parameter holding its current effective value (for export or inference).

**Create the optimizer afterwards.** ``weight_norm`` and ``centered_weight_norm`` replace the weight by two new
parameters (``g`` and ``v``); the one-tensor kinds keep the original parameter object. Baking a two-tensor kind
creates a new parameter again.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Union

from torch import Tensor, nn
from torch.nn.utils import parametrizations as torch_parametrizations
from torch.nn.utils import parametrize

from normlab.registry import get_norm_spec, list_norms
from normlab.weight.parametrizations import (
    CenteredWeightNorm,
    SpectralNorm,
    WeightNorm,
    WeightParametrization,
    WeightStandardization,
    output_unit_dim,
    resolve_dim,
)

__all__ = ["KIND_ALIASES", "WEIGHT_LAYER_TYPES", "WeightChange", "bake_weights", "reparametrize",
           "reparametrized_weights", "resolve_kind"]

#: Module types :func:`reparametrize` looks for by default (Lazy variants need one forward pass first).
WEIGHT_LAYER_TYPES: tuple[type, ...] = (nn.Linear, nn.modules.conv._ConvNd)

#: Other spellings of each kind, registered with :func:`normlab.register_norm`.
KIND_ALIASES: dict[str, tuple[str, ...]] = {
    "weight_norm": ("wn",),
    "centered_weight_norm": ("cwn", "centred_weight_norm", "centered_wn"),
    "weight_standardization": ("ws", "weight_standardisation", "weight_std", "std_conv"),
    "spectral_norm": ("sn",),
}

# kind -> (options it accepts besides dim, whether it stores two tensors (g, v))
_OPTIONS: dict[str, tuple[tuple[str, ...], bool]] = {
    "weight_norm": ((), True),
    "centered_weight_norm": (("eps",), True),
    "weight_standardization": (("eps",), False),
    "spectral_norm": (("n_power_iterations", "eps"), False),
}

# torch's own parametrizations, recognised so that applying a kind twice or baking them works.
_TORCH_KINDS = {
    torch_parametrizations._WeightNorm: "weight_norm",
    torch_parametrizations._SpectralNorm: "spectral_norm",
}

Selector = Union[type, str, Callable[[str, nn.Module], bool], Iterable[Any], None]


@dataclass(frozen=True)
class WeightChange:
    """One weight that was reparametrized (or baked)."""

    path: str  #: the module's path in the model (``""`` for the model itself)
    module: str  #: the module's class name, e.g. ``"Conv2d"``
    tensor: str  #: the tensor's name in the module, usually ``"weight"``
    kind: str  #: registry name of the reparametrization, e.g. ``"weight_norm"``
    dim: int  #: the dim of output units it used


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_kind(kind: str) -> str:
    """The canonical name of a weight-normalization kind in any spelling: ``"WS"`` → ``"weight_standardization"``.

    Examples:
        >>> resolve_kind("SN"), resolve_kind("centred-weight-norm")
        ('spectral_norm', 'centered_weight_norm')
    """
    if not isinstance(kind, str):
        raise TypeError(f"reparametrize: kind must be a name such as 'weight_norm', got {type(kind).__name__}")
    valid = list(list_norms("weight"))
    try:
        spec = get_norm_spec(kind)
    except ValueError:
        spellings = {_key(n): n for n in valid} | {_key(a): n for n, aliases in KIND_ALIASES.items() for a in aliases}
        close = difflib.get_close_matches(_key(kind), list(spellings), n=1, cutoff=0.5)
        hint = f" Did you mean {spellings[close[0]]!r}?" if close else ""
        raise ValueError(f"unknown weight normalization {kind!r}.{hint} Valid kinds: {', '.join(valid)}") from None
    if spec.family != "weight" or spec.name not in _OPTIONS:
        raise ValueError(
            f"{spec.name!r} is not a weight normalization (it is a {spec.family} normalization; build layers with "
            f"normlab.create_norm). Valid kinds: {', '.join(valid)}"
        )
    return spec.name


def _matches(selector: Selector, path: str, module: nn.Module) -> bool:
    if isinstance(selector, type):
        return isinstance(module, selector)
    if isinstance(selector, str):
        return fnmatch.fnmatchcase(path, selector)
    if callable(selector):
        return bool(selector(path, module))
    if isinstance(selector, Iterable):
        return any(_matches(s, path, module) for s in selector)
    raise TypeError(
        "include/exclude must be a module type, a glob over module paths (e.g. 'layer1.*'), a predicate "
        f"(path, module) -> bool, or a list of these; got {type(selector).__name__}"
    )


def _kinds_on(module: nn.Module, tensor: str) -> list[tuple[str, int]]:
    """(kind, dim) of every weight normalization registered on ``module.<tensor>``, in order."""
    if not parametrize.is_parametrized(module, tensor):
        return []
    found = []
    for p in module.parametrizations[tensor]:
        kind = p.kind if isinstance(p, WeightParametrization) else _TORCH_KINDS.get(type(p))
        if kind:
            found.append((kind, getattr(p, "dim", 0)))
    return found


def _label(path: str) -> str:
    return repr(path) if path else "the model itself"


def _check_target(path: str, module: nn.Module, tensor: str, kind: str, dim: int | None) -> int:
    """Validate one target and return its resolved output-unit dim."""
    where = f"{type(module).__name__} at {_label(path)}"
    weight = getattr(module, tensor, None)
    if not isinstance(weight, Tensor):
        names = ", ".join(n for n, _ in module.named_parameters(recurse=False)) or "none"
        raise ValueError(f"{where} has no parameter {tensor!r} to reparametrize (its parameters: {names}); "
                         "pass name=... or exclude this module")
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"{where} is a lazy module whose {tensor!r} is not initialized yet; run one forward "
                         "pass first")
    if not weight.is_floating_point() or weight.dim() < 2:
        raise ValueError(f"{where}: {tensor!r} has dtype {weight.dtype} and shape {tuple(weight.shape)}; weight "
                         "normalization needs a floating-point weight with at least 2 dims (units × fan-in)")
    existing = _kinds_on(module, tensor)
    if any(k == kind for k, _ in existing):
        raise ValueError(f"{where}: {tensor!r} already has {kind}; applying it twice would normalize twice. "
                         "Call normlab.bake_weights(...) first if you mean to start again")
    two_tensors = _OPTIONS[kind][1]
    if two_tensors and parametrize.is_parametrized(module, tensor):
        raise ValueError(f"{where}: {tensor!r} is already reparametrized; {kind} stores two tensors (g, v) and "
                         "must be the first parametrization on a weight (torch's rule); apply it first")
    unit_dim = resolve_dim(output_unit_dim(module) if dim is None else dim, weight.dim(), f"{kind} on {where}")
    if kind in ("centered_weight_norm", "weight_standardization") and weight.numel() // weight.shape[unit_dim] < 2:
        raise ValueError(f"{where}: each output unit of {tensor!r} (shape {tuple(weight.shape)}, dim={unit_dim}) "
                         f"has a single weight; {kind} removes the mean and would make it zero")
    return unit_dim


def _build(kind: str, weight: Tensor, dim: int, options: dict[str, Any]) -> WeightParametrization:
    if kind == "weight_norm":
        return WeightNorm(dim)
    if kind == "centered_weight_norm":
        return CenteredWeightNorm(dim, **options)
    if kind == "weight_standardization":
        return WeightStandardization(dim, **options)
    return SpectralNorm(weight, dim=dim, **options)


def reparametrize(module: nn.Module, kind: str, *, name: str = "weight",
                  types: type | tuple[type, ...] = WEIGHT_LAYER_TYPES, include: Selector = None,
                  exclude: Selector = None, dim: int | None = None, **options: Any) -> list[WeightChange]:
    r"""Reparametrize the weight of a layer, or of every eligible layer of a model, by a weight normalization.

    The kinds (registry names; spelling variants and aliases such as ``"wn"``, ``"cwn"``, ``"ws"``, ``"sn"``
    accepted), each per output unit :math:`i` of the weight:

    - ``weight_norm`` (Salimans & Kingma 2016): :math:`w_i = g_i v_i / \lVert v_i\rVert` —
      :class:`~normlab.weight.WeightNorm`;
    - ``centered_weight_norm`` (Huang et al. 2017): :math:`w_i = g_i (v_i - \bar v_i) / \lVert v_i - \bar v_i\rVert`
      (options: ``eps``) — :class:`~normlab.weight.CenteredWeightNorm`;
    - ``weight_standardization`` (Qiao et al. 2019): :math:`\hat w_i = (w_i - \mu_i)/\sqrt{\sigma_i^2 + \epsilon}`
      (options: ``eps``) — :class:`~normlab.weight.WeightStandardization`;
    - ``spectral_norm`` (Miyato et al. 2018): :math:`W / \sigma_{\max}(W)` by power iteration
      (options: ``n_power_iterations``, ``eps``) — :class:`~normlab.weight.SpectralNorm`.

    Every module of an eligible type (``types``; by default Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d —
    the module itself included) is reparametrized, narrowed by ``include`` and ``exclude``. All targets are
    checked before any is changed, so an error leaves the model untouched.

    Args:
        module: a layer or a model.
        kind: which weight normalization (see above, or ``normlab.list_norms("weight")``).
        name: the tensor to reparametrize in each module.
        types: module classes eligible at all (widen it for custom layers).
        include: keep only matching modules — a type (or tuple of types), a glob over module paths
            (``"layer1.*"``, ``"*conv*"``), a predicate ``(path, module) -> bool``, or a list of these.
        exclude: drop matching modules (same forms), e.g. ``exclude="fc"`` to leave the classifier alone.
        dim: the dim of output units; ``None`` picks it per module (0, or 1 for ConvTranspose, whose weight is
            ``(in, out/groups, *k)``). Unlike torch's ``weight_norm(dim=None)``, ``None`` never means
            "the whole tensor".
        **options: the kind's options listed above.

    Returns:
        One :class:`WeightChange` (path, module class, tensor, kind, dim) per weight changed, in module order.

    Raises:
        ValueError: unknown kind, a module without ``name``, ``dim`` out of range, the same kind applied twice,
            or no eligible module found. TypeError: an option the kind does not take.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(4, 8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
        >>> changes = reparametrize(model, "ws", exclude=nn.LazyLinear)
        >>> [(c.path, c.module, c.kind) for c in changes]
        [('0', 'Conv2d', 'weight_standardization')]
        >>> reparametrize(nn.ConvTranspose1d(4, 6, 3), "weight_norm")[0].dim
        1
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"reparametrize expects an nn.Module, got {type(module).__name__}")
    kind = resolve_kind(kind)
    types = (types,) if isinstance(types, type) else tuple(types)
    accepted = _OPTIONS[kind][0]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"reparametrize: {kind} does not take {', '.join(unknown)}; its options are: "
                        f"{', '.join(('dim',) + accepted)}")
    targets = [
        (path, m) for path, m in module.named_modules()
        if isinstance(m, types) and (include is None or _matches(include, path, m))
        and not (exclude is not None and _matches(exclude, path, m))
    ]
    if not targets:
        kinds = ", ".join(t.__name__ for t in types)
        raise ValueError(f"reparametrize found no module to change in {type(module).__name__}: none is of the "
                         f"eligible types ({kinds}) and matches include/exclude; widen them, e.g. "
                         f"types=({type(module).__name__},)")
    dims = [_check_target(path, m, name, kind, dim) for path, m in targets]
    changes = []
    for (path, m), unit_dim in zip(targets, dims):
        parametrization = _build(kind, getattr(m, name), unit_dim, options)
        parametrize.register_parametrization(m, name, parametrization)
        changes.append(WeightChange(path, parametrize.type_before_parametrizations(m).__name__, name, kind, unit_dim))
    return changes


def reparametrized_weights(module: nn.Module) -> list[WeightChange]:
    """Every weight of ``module`` that carries a weight normalization (normlab's, or torch's weight_norm /
    spectral_norm parametrizations).

    Examples:
        >>> model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
        >>> _ = reparametrize(model, "sn", include="1")
        >>> [(c.path, c.kind) for c in reparametrized_weights(model)]
        [('1', 'spectral_norm')]
    """
    found = []
    for path, m in module.named_modules():
        if not parametrize.is_parametrized(m):
            continue
        for tensor in m.parametrizations:
            kinds = _kinds_on(m, tensor)
            if kinds:
                label = "+".join(k for k, _ in kinds)
                found.append(WeightChange(path, parametrize.type_before_parametrizations(m).__name__, tensor, label,
                                          kinds[0][1]))
    return found


def bake_weights(module: nn.Module) -> list[WeightChange]:
    """Replace every weight-normalized tensor by a plain parameter holding its current effective value.

    Uses :func:`torch.nn.utils.parametrize.remove_parametrizations` with ``leave_parametrized=True``. The
    parametrizations are evaluated in eval mode, so spectral norm uses its current ``u``, ``v`` without one
    more power-iteration step. Other parametrizations stacked on the same tensor are removed with it (their
    effect is baked in too); tensors without a weight normalization are left alone.

    Args:
        module: a layer or a model.

    Returns:
        One :class:`WeightChange` per tensor baked (``kind`` joins stacked kinds with ``+``).

    Examples:
        >>> layer = nn.Linear(4, 2)
        >>> _ = reparametrize(layer, "weight_standardization")
        >>> before = layer.weight.detach().clone()
        >>> [c.kind for c in bake_weights(layer)], type(layer).__name__, bool(layer.weight.eq(before).all())
        (['weight_standardization'], 'Linear', True)
    """
    baked = reparametrized_weights(module)
    modules = dict(module.named_modules())
    for change in baked:
        owner = modules[change.path]
        plist = owner.parametrizations[change.tensor]
        was_training = plist.training
        plist.eval()
        try:
            parametrize.remove_parametrizations(owner, change.tensor, leave_parametrized=True)
        except Exception:
            plist.train(was_training)
            raise
    return baked
