"""Model surgery: work on the user's own model.

* :func:`swap_norm` — replace every normalization layer with another kind (BatchNorm → GroupNorm, LayerNorm →
  RMSNorm, torch.nn ↔ normlab, third-party classes through ``source=``).
* :func:`fold_bn` — fold eval-mode BatchNorm into the Conv/Linear that feeds it, across the whole model.
* :func:`freeze_norm` / :func:`unfreeze_norm` — fix running statistics (and optionally the affine parameters).
* :func:`convert_sync_bn` / :func:`revert_sync_bn` — BatchNorm ↔ SyncBatchNorm, both ways.
* :func:`param_groups` — optimizer groups without weight decay on normalization parameters and biases.
* :func:`audit` — check a model against the known pitfalls of normalization.

Each returns a report: a list of records in Python, a table when printed.
"""

from normlab.surgery.auditor import AuditReport, Finding, audit
from normlab.surgery.fold import FoldRecord, FoldReport, fold_bn
from normlab.surgery.freeze import FreezeRecord, FreezeReport, freeze_norm, unfreeze_norm
from normlab.surgery.groups import ParamGroups, param_groups
from normlab.surgery.swap import SwapRecord, SwapReport, swap_norm
from normlab.surgery.sync import SyncRecord, SyncReport, convert_sync_bn, revert_sync_bn

__all__ = [
    "AuditReport",
    "Finding",
    "FoldRecord",
    "FoldReport",
    "FreezeRecord",
    "FreezeReport",
    "ParamGroups",
    "SwapRecord",
    "SwapReport",
    "SyncRecord",
    "SyncReport",
    "audit",
    "convert_sync_bn",
    "fold_bn",
    "freeze_norm",
    "param_groups",
    "revert_sync_bn",
    "swap_norm",
    "unfreeze_norm",
]
