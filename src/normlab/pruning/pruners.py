r"""Torch-Pruning pruners for normalization layers, so its dependency graph handles normlab's classes.

Torch-Pruning (Fang et al. 2023, "DepGraph: Towards Any Structural Pruning", arXiv:2301.12900) recognises
torch.nn's BatchNorm, LayerNorm, GroupNorm and InstanceNorm by class. normlab's layers are not subclasses of
those, so each class found in a model is registered as a *customized layer* (``customized_pruners=`` of
``tp.DependencyGraph.build_dependency`` / ``tp.pruner.MetaPruner``) with one of the pruners below.

Which removals keep the function of the remaining channels (the condition for pruning by scale factors):

* **per-channel** kinds — BatchNorm (and its variants), InstanceNorm, Filter Response Norm — compute each
  channel's statistics from that channel alone: removing channel :math:`c` leaves every other channel unchanged.
  :class:`ChannelNormPruner` removes the channel from every per-channel tensor (γ, β, τ, running statistics).
* **GroupNorm** shares statistics within a group of :math:`C/G` channels: only *whole groups* can be removed
  without changing the others. :class:`GroupNormPruner` removes whole groups and lowers ``num_groups``; it
  refuses a partial group.
* **LayerNorm, LayerNorm2d, RMSNorm, ScaleNorm, Dynamic Tanh** normalize over all channels together (one
  group): removing any channel changes every other channel's statistics. :class:`FixedWidthPruner` lets the
  graph trace them and refuses to prune them; groups containing them are left whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch_pruning as tp
from torch import nn

from normlab.registry import norm_kind

#: normalization kinds whose channels can be removed one at a time without changing the other channels
PER_CHANNEL_KINDS = ("batch_norm", "batch_renorm", "ghost_batch_norm", "instance_norm", "filter_response_norm")
#: kinds prunable by whole groups
GROUPED_KINDS = ("group_norm",)
#: every kind that pruning by scale factors can remove channels from
PRUNABLE_KINDS = PER_CHANNEL_KINDS + GROUPED_KINDS


def _channel_count_attr(layer: nn.Module) -> str:
    for attr in ("num_features", "num_channels"):
        if isinstance(getattr(layer, attr, None), int):
            return attr
    raise TypeError(f"{type(layer).__name__} has neither num_features nor num_channels")


class ChannelNormPruner(tp.pruner.BasePruningFunc):
    """Remove channels from a per-channel normalization layer (every parameter and buffer whose first dim is
    the channel count: γ, β, FRN's τ, running mean and variance)."""

    TARGET_MODULES = None

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        attr = _channel_count_attr(layer)
        count = getattr(layer, attr)
        removed = {int(i) for i in idxs}
        keep = [i for i in range(count) if i not in removed]
        for name, param in list(layer.named_parameters(recurse=False)):
            if param.dim() >= 1 and param.shape[0] == count:
                setattr(layer, name, self._prune_parameter_and_grad(param, keep, 0))
        for name, buffer in list(layer.named_buffers(recurse=False)):
            if buffer is not None and buffer.dim() >= 1 and buffer.shape[0] == count:
                setattr(layer, name, buffer[keep].clone())
        setattr(layer, attr, len(keep))
        return layer

    prune_in_channels = prune_out_channels  # one index space: in = out (intra-layer dependency)

    def get_out_channels(self, layer: nn.Module) -> int:
        return getattr(layer, _channel_count_attr(layer))

    get_in_channels = get_out_channels


class GroupNormPruner(ChannelNormPruner):
    """Remove whole groups from a GroupNorm layer (normlab's or torch.nn's) and lower ``num_groups``."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        size = layer.num_channels // layer.num_groups
        removed = sorted({int(i) for i in idxs})
        groups = {i // size for i in removed}
        if len(removed) != len(groups) * size:
            raise ValueError(
                f"GroupNorm({layer.num_groups}, {layer.num_channels}): only whole groups of {size} channels can be "
                f"removed without changing the other groups' statistics; got channels {removed}"
            )
        super().prune_out_channels(layer, removed)
        layer.num_groups -= len(groups)
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channel_groups(self, layer: nn.Module) -> int:
        return layer.num_groups

    get_in_channel_groups = get_out_channel_groups


class FixedWidthPruner(tp.pruner.BasePruningFunc):
    """Trace a normalization over all channels (LayerNorm-like) as one layer, and refuse to prune it."""

    TARGET_MODULES = None

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        raise ValueError(
            f"{type(layer).__name__} normalizes over all channels together: removing a channel changes the "
            "statistics of every other one, so it is not pruned by scale factors"
        )

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        shape = getattr(layer, "normalized_shape", None)
        if shape is not None:
            return int(tuple(shape)[-1])
        return getattr(layer, _channel_count_attr(layer))

    get_in_channels = get_out_channels


def customized_pruners(model: nn.Module) -> dict[type, tp.pruner.BasePruningFunc]:
    """The ``customized_pruners`` mapping that lets Torch-Pruning handle every normalization class in ``model``.

    torch.nn's BatchNorm and LayerNorm keep Torch-Pruning's own pruners; GroupNorm (whole groups),
    InstanceNorm (with running statistics) and every normlab class get the pruners of this module.

    Examples:
        >>> import normlab
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), normlab.nn.BatchNorm2d(8), nn.GroupNorm(2, 8))
        >>> {cls.__name__: type(p).__name__ for cls, p in customized_pruners(net).items()}
        {'BatchNorm2d': 'ChannelNormPruner', 'GroupNorm': 'GroupNormPruner'}
    """
    pruners: dict[type, tp.pruner.BasePruningFunc] = {}
    for module in model.modules():
        kind = norm_kind(module)
        cls = type(module)
        if kind is None or cls in pruners:
            continue
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
            continue  # Torch-Pruning's own pruners handle these
        if kind in PER_CHANNEL_KINDS:
            pruners[cls] = ChannelNormPruner()
        elif kind in GROUPED_KINDS:
            pruners[cls] = GroupNormPruner()
        else:
            pruners[cls] = FixedWidthPruner()
    return pruners


__all__ = [
    "GROUPED_KINDS",
    "PER_CHANNEL_KINDS",
    "PRUNABLE_KINDS",
    "ChannelNormPruner",
    "FixedWidthPruner",
    "GroupNormPruner",
    "customized_pruners",
    "norm_kind",
]
