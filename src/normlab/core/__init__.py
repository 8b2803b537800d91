"""The one normalization core: statistics over chosen dims, applied with an optional affine map."""

from normlab.core.dispatch import reference_only, register_fast_path
from normlab.core.functional import (
    add_layer_norm,
    add_rms_norm,
    affine,
    apply_stats,
    batch_norm,
    group_norm,
    instance_norm,
    layer_norm,
    normalize,
    rms_norm,
)
from normlab.core.stats import Moments, compute_dtype, moments, update_running_stats_

__all__ = [
    "Moments",
    "add_layer_norm",
    "add_rms_norm",
    "affine",
    "apply_stats",
    "batch_norm",
    "compute_dtype",
    "group_norm",
    "instance_norm",
    "layer_norm",
    "moments",
    "normalize",
    "reference_only",
    "register_fast_path",
    "rms_norm",
    "update_running_stats_",
]
