r"""Freeze normalization layers: running statistics fixed, and optionally the affine parameters too.

Fine-tuning with small batches (detection, segmentation, few-shot) usually keeps a pretrained network's
BatchNorm statistics as they are: in train mode BatchNorm would normalize with the statistics of each small batch
and overwrite its running averages. :func:`freeze_norm` pins such layers in evaluation mode *so that it survives*
``model.train()``: each frozen layer gets its own ``train`` (an instance attribute that always selects eval mode),
so the layer keeps its class, its state_dict keys and its place in the model; ``copy.deepcopy`` and ``pickle``
keep the pin, and :func:`unfreeze_norm` removes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from normlab.surgery._report import SurgeryReport, join_paths
from normlab.surgery._walk import Source, select, source_predicate

_FROZEN_PARAMS = "_normlab_frozen_params"


class _PinnedEval:
    """Replaces a layer's ``train``: whatever mode is asked for, the layer stays in eval mode."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, mode: bool = True) -> nn.Module:
        return nn.Module.train(self.module, False)


def has_running_stats(module: nn.Module) -> bool:
    """True when the layer keeps running statistics that evaluation mode would use."""
    return getattr(module, "running_mean", None) is not None or getattr(module, "running_var", None) is not None


def is_frozen(module: nn.Module) -> bool:
    """True when :func:`freeze_norm` pinned this layer in evaluation mode."""
    return isinstance(vars(module).get("train"), _PinnedEval)


def pin_eval(module: nn.Module) -> None:
    """Put ``module`` in eval mode and keep it there through later ``.train()`` calls."""
    module.train = _PinnedEval(module)
    nn.Module.train(module, False)


@dataclass
class FreezeRecord:
    """One layer frozen: its paths, class, what happened to its statistics and to its parameters."""

    paths: list[str]
    layer: str
    stats: str
    params: str

    def row(self) -> tuple[str, ...]:
        return join_paths(self.paths), self.layer, self.stats, self.params


class FreezeReport(SurgeryReport):
    """The layers :func:`freeze_norm` or :func:`unfreeze_norm` touched (a list of :class:`FreezeRecord`)."""

    headers = ("module", "layer", "running stats", "parameters")


def freeze_norm(model: nn.Module, *, affine: bool = False, source: Source = None) -> FreezeReport:
    """Fix the running statistics of every normalization layer, and optionally its affine parameters. In place.

    Layers with running statistics (BatchNorm and its variants, InstanceNorm with ``track_running_stats``) are put
    in eval mode and pinned there, so ``model.train()`` no longer switches them back: they normalize with
    :math:`\\hat\\mu, \\hat\\sigma^2` and never update them. Layers without running statistics (GroupNorm,
    LayerNorm, RMSNorm, BatchNorm with ``track_running_stats=False``) have nothing to fix and are listed as
    such. With ``affine=True`` every parameter of the selected layers (:math:`\\gamma, \\beta`, and FRN's
    :math:`\\tau` or Dynamic Tanh's :math:`\\alpha`) gets ``requires_grad=False``.

    Args:
        model: any ``nn.Module``; changed in place.
        affine: also freeze the layers' parameters. Default: False.
        source: which layers (see :func:`~normlab.surgery.swap_norm`); ``None`` means every registered
            normalization layer.

    Returns:
        A :class:`FreezeReport` (``.model`` is ``model``). An empty report warns: nothing to do.

    Examples:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.LayerNorm(4))
        >>> print(freeze_norm(model, affine=True))
        freeze_norm: 2 layers
        module  layer        running stats         parameters
        ------  -----------  --------------------  --------------------
        1       BatchNorm1d  frozen (eval pinned)  frozen: weight, bias
        2       LayerNorm    none to freeze        frozen: weight, bias
        >>> model.train()[1].training, model[0].training, model[1].weight.requires_grad
        (False, True, False)
    """
    predicate = source_predicate(source, model)
    records = []
    for paths, layer in select(model, predicate):
        if has_running_stats(layer):
            pin_eval(layer)
            stats = "frozen (eval pinned)"
        elif getattr(layer, "track_running_stats", None) is False:
            stats = "none: batch stats in every mode"
        else:
            stats = "none to freeze"
        names = [name for name, p in layer.named_parameters(recurse=False)]
        if affine and names:
            for name, param in layer.named_parameters(recurse=False):
                param.requires_grad_(False)
            setattr(layer, _FROZEN_PARAMS, names)
            params = "frozen: " + ", ".join(names)
        else:
            params = "trainable" if names else "none"
        records.append(FreezeRecord(paths, type(layer).__name__, stats, params))
    report = FreezeReport(records, model=model, action=f"freeze_norm: {len(records)} layers")
    report.warn_if_empty("no normalization layer matched source; pass source= for third-party classes")
    return report


def unfreeze_norm(model: nn.Module) -> FreezeReport:
    """Undo :func:`freeze_norm`: remove the eval pin (layers follow ``model.training`` again) and make the
    parameters it froze trainable again. In place.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        >>> _ = freeze_norm(model)
        >>> _ = unfreeze_norm(model)
        >>> model.train()[1].training
        True
    """
    records = []
    for paths, layer in select(model, lambda path, m: is_frozen(m) or hasattr(m, _FROZEN_PARAMS)):
        stats = "unchanged"
        if is_frozen(layer):
            del layer.train
            layer.train(model.training)
            stats = "follows model.train() again"
        names = vars(layer).pop(_FROZEN_PARAMS, [])
        for name in names:
            getattr(layer, name).requires_grad_(True)
        params = "trainable: " + ", ".join(names) if names else "unchanged"
        records.append(FreezeRecord(paths, type(layer).__name__, stats, params))
    report = FreezeReport(records, model=model, action=f"unfreeze_norm: {len(records)} layers")
    report.warn_if_empty("no layer was frozen by freeze_norm")
    return report
