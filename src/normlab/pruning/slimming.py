r"""Network slimming: prune the channels whose normalization scale factor γ is small (Liu et al. 2017).

Liu, Li, Shen, Huang, Yan & Zhang, "Learning Efficient Convolutional Networks through Network Slimming",
ICCV 2017 (arXiv:1708.06519). Every channel :math:`c` of a normalization layer is multiplied by its scale factor
:math:`\gamma_c`, so :math:`|\gamma_c|` measures how much the channel contributes. Training with an L1 penalty on
the scale factors,

.. math::
    L = \sum_{(x, y)} \ell(f(x, W), y) + \lambda \sum_{\gamma \in \Gamma} |\gamma|,

drives many of them towards zero (:func:`gamma_l1_penalty`: add it to the loss; autograd gives the subgradient
:math:`\lambda\,\mathrm{sign}(\gamma)`, the same update as the paper's in-place subgradient step, and it works
with any optimizer; the paper uses :math:`\lambda = 10^{-4}` or :math:`10^{-5}`). Then one **global
threshold** — the ``ratio`` percentile of all scale factors of the model — marks the channels to prune
(:func:`global_threshold`), and the channels are removed physically, giving a smaller dense model that runs
without masks.

**Coupled channels.** Channels joined by a residual addition or a concatenation must be removed together.
The removal uses Torch-Pruning's dependency graph (Fang et al. 2023, arXiv:2301.12900): each *group* of coupled
layers is pruned at once, and a channel's importance in a group is the largest :math:`|\gamma|` among the group's
normalization layers (a channel is removed only if every coupled layer marks it unimportant). GroupNorm channels
are pruned by whole groups (importance: the largest :math:`|\gamma|` of the group); groups that contain a
normalization over all channels (LayerNorm and the like) are left whole — see :mod:`normlab.pruning.pruners`.
Each group keeps at least ``min_channels`` channels.

A channel whose :math:`\gamma` and :math:`\beta` are both zero outputs exactly zero after the normalization, so
removing it (and the inputs of the next layer that read it) leaves the eval-mode output unchanged.
:func:`random_plan` prunes the same number of channels from each group at random: the same architecture, so
the same parameters and FLOPs — the control for whether :math:`|\gamma|` picks the right channels.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import Tensor, nn

from normlab.pruning.cost import ModelCost, model_cost
from normlab.pruning.plan import GroupPlan, SlimmingPlan, random_plan
from normlab.pruning.pruners import GROUPED_KINDS, PRUNABLE_KINDS, customized_pruners, norm_kind


def _check_kinds(kinds: Sequence[str]) -> None:
    unknown = set(kinds) - set(PRUNABLE_KINDS)
    if isinstance(kinds, str) or unknown:
        raise ValueError(f"kinds {sorted(unknown) or kinds!r} cannot be pruned by scale factors; give a tuple "
                         f"drawn from {PRUNABLE_KINDS}")


def _scale_layers(model: nn.Module, kinds: Sequence[str]) -> dict[str, nn.Module]:
    _check_kinds(kinds)
    return {name: m for name, m in model.named_modules()
            if norm_kind(m) in kinds and isinstance(getattr(m, "weight", None), Tensor) and m.weight.dim() == 1}


def gamma_l1_penalty(model: nn.Module, strength: float, *, kinds: Sequence[str] = PRUNABLE_KINDS) -> Tensor:
    r"""The sparsity term :math:`\lambda\sum|\gamma|` over the scale factors of ``model``'s normalization layers.

    Args:
        model: any model; layers of the given ``kinds`` with a per-channel ``weight`` contribute.
        strength: :math:`\lambda \ge 0`.
        kinds: normalization kinds whose γ are penalized. Default: every prunable kind.

    Returns:
        A scalar tensor to add to the loss (zero if the model has no such layer).

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        >>> round(gamma_l1_penalty(net, 1e-4).item(), 8)  # 4 channels with γ = 1
        0.0004
    """
    if not strength >= 0:
        raise ValueError(f"gamma_l1_penalty: strength must be ≥ 0, got {strength!r}")
    terms = [m.weight.abs().sum() for m in _scale_layers(model, kinds).values()]
    if not terms:
        return torch.zeros(())
    return strength * torch.stack(terms).sum()


def channel_importance(model: nn.Module, *, kinds: Sequence[str] = PRUNABLE_KINDS) -> dict[str, Tensor]:
    """:math:`|\\gamma|` of every channel of every prunable normalization layer, by layer name (detached, float32).

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2))
        >>> channel_importance(net)["1"].tolist()
        [1.0, 1.0]
    """
    return {name: m.weight.detach().abs().float().cpu() for name, m in _scale_layers(model, kinds).items()}


def global_threshold(importance: Mapping[str, Tensor] | Tensor, ratio: float) -> float:
    """The global threshold below which a fraction ``ratio`` of all scale factors lie.

    With the ``N`` values sorted, it is the value at position ``round(ratio * N)``: pruning every channel
    *strictly below* it prunes ``round(ratio * N)`` channels (fewer when values tie at the threshold).

    Examples:
        >>> global_threshold({"a": torch.tensor([0.1, 0.9]), "b": torch.tensor([0.5, 0.3])}, 0.5)
        0.5
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"global_threshold: ratio must be in [0, 1], got {ratio!r}")
    values = importance if isinstance(importance, Tensor) else torch.cat([v.flatten() for v in importance.values()])
    values = values.detach().flatten().float().sort().values
    k = round(ratio * values.numel())
    return float("inf") if k >= values.numel() else values[k].item()


def build_dependency_graph(model: nn.Module, example_inputs) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` with normlab's pruners, traced in eval mode (the model's
    modes and buffers are restored)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example_inputs, customized_pruners=customized_pruners(model), verbose=False)
    finally:
        for module, training in modes.items():
            module.training = training


def _group_units(group, size: int, kinds: Sequence[str], names: Mapping[nn.Module, str]
                 ) -> tuple[Tensor, list[str], list[list[int]], str | None]:
    """Per-channel importance in the root's index space, the norm layers, the removal units, or a skip reason.

    Channels that no scale factor covers get importance +inf: they are never removed."""
    importance = torch.full((size,), float("-inf"))
    norms, parent = [], list(range(size))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for item in group.items:
        module = item.dep.target.module
        if getattr(item.dep.target, "type", None) == tp.ops.OPTYPE.OUTPUT:
            return importance, norms, [], "its channels are outputs of the model"
        kind = norm_kind(module) if isinstance(module, nn.Module) else None
        if kind is None:
            continue
        if kind not in PRUNABLE_KINDS:
            return importance, norms, [], f"{type(module).__name__} normalizes over all channels together"
        name = names.get(module, type(module).__name__)
        if name not in norms:
            norms.append(name)
        idxs, roots = list(item.idxs), list(item.root_idxs)
        weight = getattr(module, "weight", None)
        if isinstance(weight, Tensor) and kind in kinds:
            values = weight.detach().abs().float().cpu()[idxs]
            importance[roots] = torch.maximum(importance[roots], values)
        if kind in GROUPED_KINDS:
            per = module.num_channels // module.num_groups
            for g in range(module.num_groups):
                members = [r for i, r in zip(idxs, roots) if i // per == g]
                for r in members[1:]:
                    parent[find(r)] = find(members[0])
    if not norms:
        return importance, norms, [], ""  # no normalization layer: nothing to judge the channels by
    if torch.isinf(importance).all():
        return importance, norms, [], "no scale factor in the group"
    units: dict[int, list[int]] = {}
    for i in range(size):
        units.setdefault(find(i), []).append(i)
    unit_list = list(units.values())
    importance[torch.isinf(importance)] = float("inf")
    for unit in unit_list:  # a unit is as important as its most important channel
        importance[unit] = importance[unit].max()
    return importance, norms, unit_list, None


def _groups(model: nn.Module, graph: tp.DependencyGraph, kinds: Sequence[str], ignored_layers: Sequence[nn.Module]):
    names = {m: n for n, m in model.named_modules()}
    roots = [nn.modules.conv._ConvNd, nn.Linear] + list({type(m) for m in model.modules() if norm_kind(m)})
    for group in graph.get_all_groups(ignored_layers=list(ignored_layers), root_module_types=roots):
        root = group.items[0].dep.target.module
        size = len(group.items[0].idxs)
        importance, norms, units, why = _group_units(group, size, kinds, names)
        yield names.get(root, str(root)), size, importance, norms, units, why


def plan_slimming(model: nn.Module, example_inputs, ratio: float | None = None, *, threshold: float | None = None,
                  min_channels: int = 1, kinds: Sequence[str] = PRUNABLE_KINDS,
                  ignored_layers: Sequence[nn.Module] = ()) -> SlimmingPlan:
    r"""Choose the channels to remove by a global threshold on :math:`|\gamma|` (module docstring).

    Args:
        model: the trained model (not modified).
        example_inputs: a batch the model accepts, used to trace the dependency graph.
        ratio: fraction of all prunable channels to remove; the threshold is :func:`global_threshold` of the
            channel importances at this ratio. Give ``ratio`` or ``threshold``.
        threshold: remove channels whose importance is strictly below this value.
        min_channels: channels each group keeps at least (GroupNorm: at least one whole group). Default: 1.
        kinds: normalization kinds whose γ give the importance. Default: every prunable kind.
        ignored_layers: modules whose channels must not be pruned.

    Returns:
        :class:`SlimmingPlan`.
    """
    if (ratio is None) == (threshold is None):
        raise ValueError("plan_slimming: give exactly one of ratio (fraction to prune) or threshold (on |γ|)")
    if not isinstance(min_channels, int) or min_channels < 1:
        raise ValueError(f"plan_slimming: min_channels must be a positive int, got {min_channels!r}")
    _check_kinds(kinds)
    graph = build_dependency_graph(model, example_inputs)
    found = list(_groups(model, graph, kinds, ignored_layers))
    skipped = {root: why for root, _, _, _, _, why in found if why}
    prunable = [(root, size, imp, norms, units) for root, size, imp, norms, units, why in found if why is None]
    if ratio is not None:
        values = torch.cat([imp for _, _, imp, _, _ in prunable] + [torch.zeros(0)])
        threshold = global_threshold(values[torch.isfinite(values)], ratio)
    plans = []
    for root, size, importance, norms, units in prunable:
        ranked = sorted(units, key=lambda u: importance[u[0]].item())  # least important first
        chosen, left = [], size
        for unit in ranked:
            if importance[unit[0]].item() >= threshold or left - len(unit) < min_channels:
                break
            chosen.append(unit)
            left -= len(unit)
        plans.append(GroupPlan(root, tuple(norms), size, tuple(sorted(i for u in chosen for i in u)),
                               tuple(tuple(u) for u in units)))
    return SlimmingPlan("scale_factor", float(threshold), plans, skipped)


def apply_plan(model: nn.Module, example_inputs, plan: SlimmingPlan, *, inplace: bool = False) -> nn.Module:
    """Remove the planned channels physically (Torch-Pruning prunes each coupled group at once).

    Args:
        model: the model the plan was made for.
        example_inputs: a batch the model accepts.
        plan: from :func:`plan_slimming` or :func:`random_plan`.
        inplace: prune ``model`` itself instead of a deep copy. Default: False.

    Returns:
        The pruned model: ordinary, smaller layers, no masks.
    """
    target = model if inplace else copy.deepcopy(model)
    graph = build_dependency_graph(target, example_inputs)
    modules = dict(target.named_modules())
    for g in plan.groups:
        if not g.remove:
            continue
        if g.root not in modules:
            raise ValueError(f"apply_plan: the plan names layer {g.root!r}, which this model does not have")
        root = modules[g.root]
        pruning_fn = graph.get_pruner_of_module(root).prune_out_channels
        group = graph.get_pruning_group(root, pruning_fn, list(g.remove))
        if not graph.check_pruning_group(group):
            raise ValueError(f"apply_plan: removing {len(g.remove)} channels from {g.root!r} would empty a layer")
        group.prune()
    return target


@dataclass
class SlimmingResult:
    """A pruned model with its plan and the cost before and after."""

    model: nn.Module
    plan: SlimmingPlan
    before: ModelCost
    after: ModelCost

    def summary(self) -> str:
        b, a = self.before, self.after
        return (f"{self.plan.method}: channels −{self.plan.ratio:.1%}, parameters {b.parameters:,} → {a.parameters:,} "
                f"({a.parameters / b.parameters:.1%}), FLOPs {b.flops:,} → {a.flops:,} ({a.flops / max(b.flops, 1):.1%})")

    def __repr__(self) -> str:
        return self.summary()


def slim(model: nn.Module, example_inputs, ratio: float | None = None, *, threshold: float | None = None,
         min_channels: int = 1, kinds: Sequence[str] = PRUNABLE_KINDS, ignored_layers: Sequence[nn.Module] = (),
         inplace: bool = False) -> SlimmingResult:
    r"""Network slimming in one call: plan by :math:`|\gamma|`, remove the channels, count parameters and FLOPs.

    Args: as :func:`plan_slimming` and :func:`apply_plan`.

    Returns:
        :class:`SlimmingResult` (``.model`` is the pruned model).

    Examples:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
        >>> with torch.no_grad():
        ...     net[1].weight.copy_(torch.tensor([0.01, 1, 1, 0.02, 1, 1, 1, 1]))  # doctest: +ELLIPSIS
        Parameter...
        >>> result = slim(net, torch.randn(2, 3, 8, 8), ratio=0.25)
        >>> result.model[0], result.model[3].in_channels
        (Conv2d(3, 6, kernel_size=(3, 3), stride=(1, 1)), 6)
    """
    x = example_inputs
    plan = plan_slimming(model, x, ratio, threshold=threshold, min_channels=min_channels, kinds=kinds,
                         ignored_layers=ignored_layers)
    before = model_cost(model, x)
    pruned = apply_plan(model, x, plan, inplace=inplace)
    return SlimmingResult(pruned, plan, before, model_cost(pruned, x))


def random_slim(model: nn.Module, example_inputs, like: SlimmingPlan, *, seed: int = 0) -> SlimmingResult:
    """The random-channel baseline of :func:`slim`: same number of channels per group, chosen at random."""
    plan = random_plan(like, seed)
    before = model_cost(model, example_inputs)
    pruned = apply_plan(model, example_inputs, plan)
    return SlimmingResult(pruned, plan, before, model_cost(pruned, example_inputs))


__all__ = [
    "SlimmingResult",
    "apply_plan",
    "build_dependency_graph",
    "channel_importance",
    "gamma_l1_penalty",
    "global_threshold",
    "plan_slimming",
    "random_slim",
    "slim",
]
