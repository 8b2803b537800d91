"""Activation-normalization layers, each a thin module over :mod:`normlab.core` (torch.nn-compatible
arguments and state_dict keys)."""

from normlab.nn.batch_variants import BatchRenorm, GhostBatchNorm
from normlab.nn.batchnorm import (
    BatchNorm,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    InstanceNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
)
from normlab.nn.convert import from_torch, to_torch
from normlab.nn.dyt import DynamicTanh
from normlab.nn.groupnorm import FilterResponseNorm, GroupNorm
from normlab.nn.layernorm import LayerNorm, LayerNorm2d, RMSNorm, ScaleNorm

__all__ = [
    "BatchNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchRenorm",
    "DynamicTanh",
    "FilterResponseNorm",
    "GhostBatchNorm",
    "GroupNorm",
    "InstanceNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "LayerNorm2d",
    "RMSNorm",
    "ScaleNorm",
    "from_torch",
    "to_torch",
]
