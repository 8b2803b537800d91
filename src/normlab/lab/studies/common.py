"""What the studies share: the normalization arms, the per-profile training set-ups, and helpers that turn runs
into mean ± std curves and table cells.

**Arms.** :data:`NORM_ARMS` maps an arm name to the :class:`~normlab.lab.config.TrainConfig` fields that build it
(LayerNorm in a conv net is GroupNorm with one group — Ba et al.'s normalization over ``(C, H, W)``, the LN of
Wu & He's comparison; Weight Standardization is applied to the convolutions only, as Qiao et al. do).

**Set-ups.** :func:`image_setup` and :func:`text_setup` give the shared part of a run's config for a profile:
``smoke`` — synthetic 16×16 images (4 classes) and a two-convolution VGG, one epoch; ``quick`` — CIFAR-10 and a
three-convolution VGG (16-32-64 channels), 4,000 training images, 4 epochs on 2 CPU cores; ``paper`` — full
CIFAR-10, ResNet-20 and the usual 160-epoch step schedule (He et al. 2016). Each study overrides what its
protocol needs.

Examples:
    >>> sorted(NORM_ARMS)[:3]
    ['batch_norm', 'batch_renorm', 'frn']
    >>> image_setup("smoke")["dataset"], image_setup("quick")["dataset"]
    ('synthetic', 'cifar10')
    >>> mean_curve([[1.0, 2.0], [3.0, 4.0]])
    ([2.0, 3.0], [1.4142135623730951, 1.4142135623730951])
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from .framework import PlannedRun
from .results import RunSet
from .stats import format_mean_std

__all__ = ["NORM_ARMS", "ARM_LABELS", "image_setup", "text_setup", "plan_grid", "mean_curve", "curves_by",
           "cell", "pct", "mean_of", "std_of"]

NORM_ARMS: dict[str, dict[str, Any]] = {
    "none": {"norm": "none"},
    "batch_norm": {"norm": "batch_norm"},
    "layer_norm": {"norm": "group_norm", "norm_kwargs": {"num_groups": 1}},
    "group_norm": {"norm": "group_norm"},
    "instance_norm": {"norm": "instance_norm", "norm_kwargs": {"affine": True}},
    "rms_norm": {"norm": "rms_norm"},
    "weight_norm": {"norm": "none", "weight_norm": "weight_norm"},
    "gn_ws": {"norm": "group_norm", "weight_norm": "weight_standardization",
              "weight_norm_kwargs": {"exclude": "classifier"}},
    "frn": {"norm": "filter_response_norm"},
    "batch_renorm": {"norm": "batch_renorm"},
    "ghost_batch_norm": {"norm": "ghost_batch_norm", "norm_kwargs": {"virtual_batch_size": 16}},
}

ARM_LABELS: dict[str, str] = {
    "none": "none", "batch_norm": "BatchNorm", "layer_norm": "LayerNorm (GN, G=1)", "group_norm": "GroupNorm",
    "instance_norm": "InstanceNorm", "rms_norm": "RMSNorm", "weight_norm": "Weight Norm", "gn_ws": "GN + WS",
    "frn": "FRN", "batch_renorm": "Batch Renorm", "ghost_batch_norm": "Ghost BN (16)",
}

_IMAGE_SETUPS: dict[str, dict[str, Any]] = {
    "smoke": {"dataset": "synthetic", "data_kwargs": {"image_size": 16, "num_classes": 4}, "train_subset": 256,
              "test_subset": 128, "model": "vgg11", "model_kwargs": {"cfg": [8, "M", 16, "M"]}, "epochs": 1,
              "batch_size": 32, "lr": 0.05, "weight_decay": 5e-4, "device": "cpu", "eval_batch_size": 256},
    "quick": {"dataset": "cifar10", "model": "vgg11", "model_kwargs": {"cfg": [16, "M", 32, "M", 64, "M"]},
              "train_subset": 4000, "epochs": 4, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4, "device": "cpu",
              "eval_batch_size": 512},
    "paper": {"dataset": "cifar10", "model": "resnet20", "epochs": 160, "batch_size": 128, "lr": 0.1,
              "weight_decay": 1e-4, "schedule": "step", "milestones": [0.5, 0.75], "device": "auto"},
}

_TEXT_SETUPS: dict[str, dict[str, Any]] = {
    "smoke": {"dataset": "shakespeare", "model": "char_transformer",
              "model_kwargs": {"n_layer": 1, "n_embd": 32, "n_head": 2}, "block_size": 32, "batch_size": 16,
              "steps_per_epoch": 10, "test_subset": 8, "epochs": 1, "optimizer": "adamw", "lr": 3e-3,
              "weight_decay": 0.1, "device": "cpu", "augment": False},
    "quick": {"dataset": "shakespeare", "model": "char_transformer",
              "model_kwargs": {"n_layer": 2, "n_embd": 64, "n_head": 4}, "block_size": 64, "batch_size": 32,
              "steps_per_epoch": 100, "test_subset": 64, "epochs": 4, "optimizer": "adamw", "lr": 2e-3,
              "weight_decay": 0.1, "device": "cpu", "augment": False},
    "paper": {"dataset": "shakespeare", "model": "char_transformer",
              "model_kwargs": {"n_layer": 6, "n_embd": 384, "n_head": 6, "dropout": 0.2}, "block_size": 256,
              "batch_size": 64, "steps_per_epoch": 500, "test_subset": 200, "epochs": 10, "optimizer": "adamw",
              "lr": 1e-3, "weight_decay": 0.1, "warmup_epochs": 1.0, "device": "auto", "augment": False},
}


def image_setup(profile: str) -> dict[str, Any]:
    """The shared TrainConfig fields of an image study for ``profile`` (a copy)."""
    return _deep_copy(_IMAGE_SETUPS[profile])


def text_setup(profile: str) -> dict[str, Any]:
    """The shared TrainConfig fields of the Transformer study for ``profile`` (a copy)."""
    return _deep_copy(_TEXT_SETUPS[profile])


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def plan_grid(base: dict[str, Any], arms: dict[str, dict[str, Any]], seeds: Sequence[int], *,
              arm_key: str = "arm", **extra_labels: Any) -> list[PlannedRun]:
    """One :class:`PlannedRun` per (arm, seed): ``base`` updated by the arm's fields and the seed.

    Args:
        base: shared TrainConfig fields.
        arms: arm name → fields that differ (merged over ``base``; dict fields are replaced, not merged).
        seeds: the profile's seeds.
        arm_key: the label under which the arm's name is stored.
        **extra_labels: labels added to every run (e.g. ``batch_size=8``).
    """
    planned = []
    for name, fields in arms.items():
        for seed in seeds:
            config = {**_deep_copy(base), **_deep_copy(fields), "seed": seed}
            planned.append(PlannedRun({arm_key: name, **extra_labels, "seed": seed}, config))
    return planned


def plan_weight_decay_grid(settings: dict[str, Any], arms: dict[str, dict[str, Any]],
                           seeds: Sequence[int]) -> list[PlannedRun]:
    """Every norm of ``settings["norms"]`` (configs from ``arms``) at every weight decay of
    ``settings["weight_decays"]``, over ``seeds``; runs are labelled by ``norm`` and ``weight_decay``."""
    planned: list[PlannedRun] = []
    for wd in settings["weight_decays"]:
        planned += plan_grid({**settings["base"], "weight_decay": wd}, {n: arms[n] for n in settings["norms"]},
                             seeds, arm_key="norm", weight_decay=wd)
    return planned


def mean_curve(curves: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """Pointwise mean and std (``ddof=1``; 0 with one curve) of equal-length curves, cut to the shortest."""
    curves = [list(c) for c in curves if len(c)]
    if not curves:
        return [], []
    length = min(len(c) for c in curves)
    means, stds = [], []
    for i in range(length):
        column = [c[i] for c in curves]
        mean = sum(column) / len(column)
        var = sum((v - mean) ** 2 for v in column) / (len(column) - 1) if len(column) > 1 else 0.0
        means.append(mean)
        stds.append(math.sqrt(var))
    return means, stds


def curves_by(runs: RunSet, metric: str, scale: float = 1.0, **labels: Any) -> tuple[list[float], list[float],
                                                                                      list[float]]:
    """``(epochs 1..E, mean, std)`` of a per-epoch metric over the finished runs selected by ``labels``."""
    chosen = [r for r in runs.select(**labels).finished()]
    curves = [[v * scale for v in r.curve(metric)[1]] for r in chosen]
    mean, std = mean_curve(curves)
    return [float(i + 1) for i in range(len(mean))], mean, std


def cell(values: Sequence[float], digits: int = 1, scale: float = 1.0) -> str:
    """``"mean ± std"`` of per-seed values for a table (nan values dropped; ``"—"`` when none)."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return format_mean_std(finite, digits=digits, scale=scale)


def pct(values: Sequence[float]) -> list[float]:
    """Fractions to percentages."""
    return [100.0 * v for v in values]


def mean_of(values: Sequence[float]) -> float:
    """Mean of the finite values (nan when there are none)."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def std_of(values: Sequence[float]) -> float:
    """Sample std (``ddof=1``) of the finite values; 0 with fewer than two (an error bar of nothing)."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return 0.0
    mean = sum(finite) / len(finite)
    return math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
