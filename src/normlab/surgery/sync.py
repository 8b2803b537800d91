r"""BatchNorm ↔ SyncBatchNorm, both ways, for torch.nn and normlab BatchNorm layers.

SyncBatchNorm computes the batch statistics over every process of a data-parallel group, so each device's small
batch is normalized with the statistics of the global batch. ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``
goes one way only and knows only torch's classes; here both directions keep ``.training``, device, dtype,
``requires_grad`` and every weight and buffer.

**Which class comes back.** :func:`convert_sync_bn` records the original class on each SyncBatchNorm it makes, and
a forward pre-hook records the rank of the inputs it sees. :func:`revert_sync_bn` restores the recorded class;
for a SyncBatchNorm it did not make (torch's converter, or a model built with it), it picks
``BatchNorm1d`` for 2-D/3-D inputs, ``BatchNorm2d`` for 4-D, ``BatchNorm3d`` for 5-D, as seen by a forward
after conversion, and ``BatchNorm2d`` when the rank is unknown (``dims=`` chooses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from normlab import nn as nlnn
from normlab.surgery import _walk
from normlab.surgery._report import SurgeryReport, join_paths
from normlab.surgery.freeze import is_frozen, pin_eval

_ORIGIN = "_normlab_sync_origin"  # {"cls": original class, "bias": had β}
_RANK = "_normlab_input_rank"
_TORCH_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_RANK_TO_DIMS = {2: 1, 3: 1, 4: 2, 5: 3}


@dataclass
class SyncRecord:
    """One layer converted: its paths, old and new class, and a note on any choice made."""

    paths: list[str]
    old: str
    new: str
    note: str = ""

    def row(self) -> tuple[str, ...]:
        return join_paths(self.paths), f"{self.old} → {self.new}", self.note


class SyncReport(SurgeryReport):
    """What :func:`convert_sync_bn` or :func:`revert_sync_bn` did: a list of :class:`SyncRecord`."""

    headers = ("module", "conversion", "note")


def _record_rank(module: nn.Module, args: tuple[Any, ...]) -> None:
    if args and isinstance(args[0], torch.Tensor):
        setattr(module, _RANK, args[0].dim())


def _carry(old: nn.Module, new: nn.Module) -> nn.Module:
    """Copy weights, buffers, mode, requires_grad, device, dtype and a freeze pin from ``old`` to ``new``."""
    device, dtype = _walk.device_and_dtype(old)
    if device is not None:
        new.to(device=device, dtype=dtype)
    theirs = _walk.own_tensors(new)
    with torch.no_grad():
        for name, tensor in _walk.own_tensors(old).items():
            if name in theirs:
                theirs[name].copy_(tensor)
                if isinstance(tensor, nn.Parameter):
                    theirs[name].requires_grad_(tensor.requires_grad)
    new.train(old.training)
    if is_frozen(old):
        pin_eval(new)
    return new


def _is_plain_bn(module: nn.Module) -> bool:
    if isinstance(module, nn.SyncBatchNorm):
        return False
    if isinstance(module, (nlnn.BatchRenorm, nlnn.GhostBatchNorm)):
        return False
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, nlnn.BatchNorm))


def _replace_all(model: nn.Module, replacements: list[tuple[list[str], nn.Module]]) -> nn.Module:
    for paths, new in replacements:
        if paths == [""]:
            return new
        for path in paths:
            _walk.replace_at(model, path, new)
    return model


def convert_sync_bn(model: nn.Module, process_group: Any = None) -> SyncReport:
    """Replace every BatchNorm layer (torch.nn's and normlab's) with ``torch.nn.SyncBatchNorm``. In place.

    The statistics become :math:`\\mu = \\frac1{N_{all}}\\sum x`, :math:`\\sigma^2 = \\frac1{N_{all}}\\sum (x-\\mu)^2`
    over the batches of every process in ``process_group``; in eval mode nothing changes. Batch Renormalization
    and Ghost BatchNorm are left (their training statistics are not plain batch statistics) and listed.

    Args:
        model: any ``nn.Module``; changed in place.
        process_group: the group to synchronise over; ``None`` is the default (world) group.

    Returns:
        A :class:`SyncReport`; ``.model`` is the model (a new object only when ``model`` itself was a BatchNorm).

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
        >>> print(convert_sync_bn(model))
        convert_sync_bn: 1 layers
        module  conversion                   note
        ------  ---------------------------  ----
        1       BatchNorm2d → SyncBatchNorm
        >>> model[1].training
        False
    """
    records, replacements = [], []
    for paths, old in _walk.select(model, lambda path, m: _walk.looks_like_norm(m) and
                                   isinstance(m, (nn.modules.batchnorm._BatchNorm, nlnn.BatchNorm))):
        if not _is_plain_bn(old):
            if not isinstance(old, nn.SyncBatchNorm):
                records.append(SyncRecord(paths, type(old).__name__, type(old).__name__,
                                          "left: its training statistics are not plain batch statistics"))
            continue
        has_bias = old.bias is not None
        new = nn.SyncBatchNorm(old.num_features, old.eps, old.momentum, old.affine, old.track_running_stats,
                               process_group)
        _carry(old, new)
        note = ""
        if old.affine and not has_bias:
            with torch.no_grad():
                new.bias.zero_()
            new.bias.requires_grad_(False)
            note = "β fixed at 0 (the original had none)"
        setattr(new, _ORIGIN, {"cls": type(old), "bias": has_bias})
        new.register_forward_pre_hook(_record_rank)
        records.append(SyncRecord(paths, type(old).__name__, "SyncBatchNorm", note))
        replacements.append((paths, new))
    model = _replace_all(model, replacements)
    report = SyncReport(records, model=model, action=f"convert_sync_bn: {len(replacements)} layers")
    report.warn_if_empty("the model has no BatchNorm layer to synchronise")
    return report


def revert_sync_bn(model: nn.Module, *, dims: int | None = None) -> SyncReport:
    """Replace every ``SyncBatchNorm`` with a plain BatchNorm layer, e.g. to run a DDP-trained model on one
    device or on the CPU (SyncBatchNorm needs a process group in training). In place.

    Args:
        model: any ``nn.Module``; changed in place.
        dims: spatial dims (1, 2 or 3) of the BatchNorm to build, overriding what was recorded (see the module
            docstring for the rule used without it).

    Returns:
        A :class:`SyncReport`; ``.model`` is the model (a new object only when ``model`` itself was a
        SyncBatchNorm).

    Examples:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        >>> _ = convert_sync_bn(model)
        >>> _ = revert_sync_bn(model)
        >>> type(model[1]).__name__, model[1].training
        ('BatchNorm1d', True)
    """
    if dims is not None and dims not in _TORCH_BN:
        raise ValueError(f"revert_sync_bn: dims must be 1, 2 or 3 (spatial dims) or None, got {dims!r}")
    records, replacements = [], []
    for paths, old in _walk.select(model, lambda path, m: isinstance(m, nn.SyncBatchNorm)):
        origin = getattr(old, _ORIGIN, None)
        rank = getattr(old, _RANK, None)
        if dims is not None:
            cls, note = _TORCH_BN[dims], f"dims={dims} as asked"
        elif origin is not None:
            cls, note = origin["cls"], "class recorded at conversion"
        elif rank in _RANK_TO_DIMS:
            cls, note = _TORCH_BN[_RANK_TO_DIMS[rank]], f"from the {rank}-D inputs seen"
        else:
            cls, note = nn.BatchNorm2d, "input rank unknown: BatchNorm2d assumed (pass dims= to choose)"
        bias = origin["bias"] if origin is not None and cls is origin["cls"] else True
        extra = {} if bias else {"bias": False}  # older torch.nn BatchNorms have no bias= argument
        new = cls(old.num_features, old.eps, old.momentum, old.affine, old.track_running_stats, **extra)
        _carry(old, new)
        records.append(SyncRecord(paths, "SyncBatchNorm", cls.__name__, note))
        replacements.append((paths, new))
    model = _replace_all(model, replacements)
    report = SyncReport(records, model=model, action=f"revert_sync_bn: {len(replacements)} layers")
    report.warn_if_empty("the model has no SyncBatchNorm layer")
    return report
