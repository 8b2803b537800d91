"""Pruning by normalization scale factors: network slimming (Liu et al. 2017) on Torch-Pruning's dependency graph.

Train with :func:`gamma_l1_penalty` added to the loss, then :func:`slim` the model at a ratio; compare with
:func:`random_slim` (same architecture, random channels). :func:`model_cost` gives parameters and FLOPs.
The theory and the rules for coupled and grouped channels are in :mod:`normlab.pruning.slimming`.
"""

from normlab.pruning.cost import ModelCost, count_flops, count_parameters, model_cost
from normlab.pruning.plan import GroupPlan, SlimmingPlan, random_plan
from normlab.pruning.pruners import (
    GROUPED_KINDS,
    PER_CHANNEL_KINDS,
    PRUNABLE_KINDS,
    ChannelNormPruner,
    FixedWidthPruner,
    GroupNormPruner,
    customized_pruners,
)
from normlab.pruning.slimming import (
    SlimmingResult,
    apply_plan,
    build_dependency_graph,
    channel_importance,
    gamma_l1_penalty,
    global_threshold,
    plan_slimming,
    random_slim,
    slim,
)

__all__ = [
    "GROUPED_KINDS",
    "PER_CHANNEL_KINDS",
    "PRUNABLE_KINDS",
    "ChannelNormPruner",
    "FixedWidthPruner",
    "GroupNormPruner",
    "GroupPlan",
    "ModelCost",
    "SlimmingPlan",
    "SlimmingResult",
    "apply_plan",
    "build_dependency_graph",
    "channel_importance",
    "count_flops",
    "count_parameters",
    "customized_pruners",
    "gamma_l1_penalty",
    "global_threshold",
    "model_cost",
    "plan_slimming",
    "random_plan",
    "random_slim",
    "slim",
]
