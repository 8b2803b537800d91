"""normlab: every normalization technique on one unified core.

Activation norms (:mod:`normlab.nn`) are thin layers over one functional core (:mod:`normlab.core`); the
registry builds any of them by name (:func:`create_norm`, :func:`list_norms`). Weight normalizations are applied
with :func:`reparametrize` (:mod:`normlab.weight`), gradient normalization lives in :mod:`normlab.optim`.
"""

from normlab import nn, optim, weight
from normlab.registry import create_norm, default_num_groups, list_norms, norm_factory, register_norm
from normlab.surgery import (
    audit,
    convert_sync_bn,
    fold_bn,
    freeze_norm,
    param_groups,
    revert_sync_bn,
    swap_norm,
    unfreeze_norm,
)
from normlab.weight import bake_weights, reparametrize

__version__ = "0.1.0"

__all__ = [
    "audit",
    "bake_weights",
    "convert_sync_bn",
    "create_norm",
    "default_num_groups",
    "fold_bn",
    "freeze_norm",
    "list_norms",
    "nn",
    "norm_factory",
    "optim",
    "param_groups",
    "register_norm",
    "reparametrize",
    "revert_sync_bn",
    "swap_norm",
    "unfreeze_norm",
    "weight",
]
