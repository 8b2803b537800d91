"""A slimming plan: which channels of each coupled group to remove, and the random-channel control."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class GroupPlan:
    """What to remove from one group of coupled channels."""

    root: str  #: name of the layer Torch-Pruning roots the group at (its output channels index the group)
    norms: tuple[str, ...]  #: prunable normalization layers in the group
    size: int  #: channels in the group
    remove: tuple[int, ...]  #: channel indices (in the root's output) to remove
    units: tuple[tuple[int, ...], ...] = ()  #: channels that must go together (GroupNorm groups; else singletons)


@dataclass
class SlimmingPlan:
    """Which channels to remove from each group; prints as a table."""

    method: str  #: ``"scale_factor"`` or ``"random"``
    threshold: float  #: importance threshold (channels strictly below were selected); nan for random plans
    groups: list[GroupPlan]
    skipped: dict[str, str] = field(default_factory=dict)  #: root layer → why its group is not pruned

    @property
    def total_channels(self) -> int:
        return sum(g.size for g in self.groups)

    @property
    def removed_channels(self) -> int:
        return sum(len(g.remove) for g in self.groups)

    @property
    def ratio(self) -> float:
        """Fraction of the prunable channels removed."""
        return self.removed_channels / self.total_channels if self.total_channels else 0.0

    def table(self) -> str:
        lines = [f"{'group root':<24} {'norm layers':<32} {'channels':>8} {'removed':>8}"]
        for g in self.groups:
            lines.append(f"{g.root:<24} {', '.join(g.norms):<32} {g.size:>8d} {len(g.remove):>8d}")
        lines.append(f"{self.method}: removed {self.removed_channels}/{self.total_channels} channels "
                     f"({self.ratio:.1%}), threshold {self.threshold:.4g}")
        lines += [f"not pruned: {root} ({why})" for root, why in self.skipped.items()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.table()


def random_plan(like: SlimmingPlan, seed: int = 0) -> SlimmingPlan:
    """The random-channel control: from each group, remove as many channels as ``like`` does, chosen at random
    (whole units for GroupNorm). Same architecture as ``like``'s result, so the same parameters and FLOPs.

    Examples:
        >>> plan = SlimmingPlan("scale_factor", 0.1, [GroupPlan("conv", ("bn",), 4, (0, 1), ((0,), (1,), (2,), (3,)))])
        >>> control = random_plan(plan, seed=1)
        >>> control.method, len(control.groups[0].remove)
        ('random', 2)
    """
    rng = random.Random(seed)
    groups = []
    for g in like.groups:
        units = list(g.units) or [(i,) for i in range(g.size)]
        rng.shuffle(units)
        chosen, count = [], 0
        for unit in units:
            if count + len(unit) <= len(g.remove):
                chosen.extend(unit)
                count += len(unit)
        groups.append(GroupPlan(g.root, g.norms, g.size, tuple(sorted(chosen)), g.units))
    return SlimmingPlan("random", float("nan"), groups, dict(like.skipped))


__all__ = ["GroupPlan", "SlimmingPlan", "random_plan"]
