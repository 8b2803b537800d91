"""The training configuration: one typed dataclass holding every setting that can change a run's result.

:class:`TrainConfig` is what a run *is*: its run id is the results store's hash of :meth:`TrainConfig.to_dict`
(``normlab.lab.store.config_hash``), so the same settings always land on the same stored run, and a sweep
skips what is already finished. Each field carries its reason in ``metadata["help"]`` (shown by
``normlab train --help``, whose options are generated from these fields).

What is deliberately *not* in the config (it does not change the result): where the data lives (``data_dir`` /
``$NORMLAB_DATA``; the data's provenance is stored with every run instead), where results go (``home``), progress
bars and log verbosity. Numbers are normalised on construction (``lr=1`` becomes ``1.0``, tuples become lists),
so a config built from the CLI, a sweep grid or Python hashes the same.

Examples:
    >>> config = TrainConfig(model="resnet20", norm="group_norm", epochs=2, lr=1)
    >>> config.lr, config.to_dict()["norm"]
    (1.0, 'group_norm')
    >>> TrainConfig.from_dict(config.to_dict()) == config
    True
    >>> len(config.run_id)
    16
    >>> TrainConfig(optimizer="adam")
    Traceback (most recent call last):
        ...
    ValueError: TrainConfig.optimizer must be one of ['adamw', 'sgd'], got 'adam'
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["TrainConfig", "DATASETS", "OPTIMIZERS", "SCHEDULES", "PRECISIONS", "GRAD_TRANSFORMS", "PLACEMENTS"]

DATASETS = ("cifar10", "cifar100", "synthetic", "shakespeare")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "onecycle", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
GRAD_TRANSFORMS = ("normalize", "agc")
PLACEMENTS = ("pre", "post")


def _option(default: Any, help: str, group: str, **extra: Any) -> Any:
    """A dataclass field with its reason (``help``) and CLI group in the metadata."""
    meta = {"help": help, "group": group, **extra}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every setting of one training run (see the module docstring); all values are JSON values."""

    # -- what is trained ------------------------------------------------------------------------------------
    model: str = _option("resnet20", "model name: resnet20/32/56 (He et al. 2016), vgg11/16/19 (network "
                         "slimming), char_transformer (GPT-style, character level)", "model")
    norm: str = _option("batch_norm", "normalization registry name (normlab norms lists them) or 'none'; feature-"
                        "last norms are mapped for conv nets (layer_norm -> layer_norm_2d)", "model")
    norm_kwargs: dict = _option({}, "extra arguments for every norm layer, e.g. {\"num_groups\": 8}", "model")
    norm_placement: str = _option("pre", "Transformer only: 'pre' (x + f(norm(x))) or 'post' (norm(x + f(x)))",
                                  "model", choices=PLACEMENTS)
    model_kwargs: dict = _option({}, "extra model arguments, e.g. {\"width\": 8} for a ResNet, {\"cfg\": [...]} for "
                                 "a (pruned) VGG, {\"n_layer\": 2} for the Transformer", "model")
    weight_norm: str | None = _option(None, "weight reparametrization applied to every conv/linear layer through "
                                      "normlab.weight.reparametrize (e.g. weight_norm, spectral_norm)", "model")
    weight_norm_kwargs: dict = _option({}, "extra arguments for the weight reparametrization", "model")

    # -- data -----------------------------------------------------------------------------------------------
    dataset: str = _option("cifar10", "cifar10, cifar100, synthetic (generated, for tests) or shakespeare "
                           "(character level, for the Transformer)", "data", choices=DATASETS)
    data_kwargs: dict = _option({}, "synthetic data only: arguments of make_synthetic_images, e.g. "
                                "{\"image_size\": 16, \"num_classes\": 4}", "data")
    train_subset: int | None = _option(None, "use only the first N training images (or N synthetic ones): small, "
                                       "fast runs", "data")
    test_subset: int | None = _option(None, "use only the first N test images", "data")
    augment: bool = _option(True, "random crop (padding 4) and horizontal flip on the device, as He et al.", "data")
    block_size: int = _option(128, "language models: characters per training sequence (context length)", "data")
    steps_per_epoch: int | None = _option(None, "language models: batches per epoch (default 200); images: "
                                          "always the whole training set", "data")

    # -- optimisation ---------------------------------------------------------------------------------------
    epochs: int = _option(30, "passes over the training set; the schedule spans all of them", "optim")
    batch_size: int = _option(128, "global batch size (split evenly across processes under torchrun); the last "
                              "incomplete batch of an epoch is dropped", "optim")
    optimizer: str = _option("sgd", "sgd (with momentum, optionally Nesterov) or adamw", "optim",
                             choices=OPTIMIZERS)
    lr: float = _option(0.1, "peak learning rate (after warmup)", "optim")
    momentum: float = _option(0.9, "SGD momentum", "optim")
    nesterov: bool = _option(False, "SGD: Nesterov momentum", "optim")
    betas: list = _option([0.9, 0.999], "AdamW: (beta1, beta2)", "optim")
    weight_decay: float = _option(5e-4, "decoupled for AdamW, L2 added to the gradient for SGD", "optim")
    no_decay_norm: bool = _option(False, "exempt normalization parameters (gamma, beta, ...) from weight decay", "optim")
    no_decay_bias: bool = _option(False, "exempt biases of conv/linear layers from weight decay", "optim")
    schedule: str = _option("cosine", "learning-rate schedule, updated every step: cosine, step (x gamma at the "
                            "milestones), onecycle (Smith & Topin 2019) or constant", "optim", choices=SCHEDULES)
    warmup_epochs: float = _option(0.0, "linear warmup from lr/steps to lr over this many epochs (cosine, step, "
                                   "constant)", "optim")
    min_lr_ratio: float = _option(0.0, "cosine: final learning rate as a fraction of lr", "optim")
    milestones: list = _option([0.5, 0.75], "step: fractions of training at which lr is multiplied by gamma "
                               "(He et al.: 32k and 48k of 64k iterations)", "optim")
    gamma: float = _option(0.1, "step: factor applied at each milestone", "optim")
    onecycle_peak: float = _option(0.3, "onecycle: fraction of training spent rising to lr", "optim")
    label_smoothing: float = _option(0.0, "label smoothing of the cross-entropy (Szegedy et al. 2016)", "optim")
    grad_clip: float | None = _option(None, "clip the global gradient norm to this value", "optim")
    grad_transform: str | None = _option(None, "gradient normalization before the step: 'normalize' (per-layer "
                                         "unit-norm gradients) or 'agc' (adaptive gradient clipping, Brock et al. "
                                         "2021)", "optim", choices=GRAD_TRANSFORMS)
    grad_transform_kwargs: dict = _option({}, "extra arguments for the gradient transform, e.g. {\"clip\": 0.01}",
                                          "optim")
    sparsity_l1: float = _option(0.0, "L1 penalty on norm scale factors (gamma) for network slimming (Liu et al. "
                                 "2017); 1e-4 in the paper", "optim")

    # -- numerics and speed -------------------------------------------------------------------------------------
    precision: str = _option("fp32", "fp32, bf16 (autocast; CPU and GPU) or fp16 (autocast + GradScaler, GPU only)",
                             "speed", choices=PRECISIONS)
    channels_last: bool = _option(False, "conv nets: NHWC memory format (faster on GPUs with tensor cores)", "speed")
    compile: bool = _option(False, "torch.compile the model (slower start, faster steps)", "speed")
    deterministic: bool = _option(True, "torch.use_deterministic_algorithms and no cuDNN autotuning: bit-exact "
                                  "reruns and resumes", "speed")

    # -- the run --------------------------------------------------------------------------------------------
    seed: int = _option(0, "seeds the model initialisation, data order, augmentation and dropout", "run")
    device: str = _option("auto", "auto (cuda if available, else cpu), cpu, cuda, cuda:1, mps ...", "run")
    world_size: int = _option(1, "number of processes (torchrun sets WORLD_SIZE; normlab train fills this in)",
                              "run")
    sync_bn: bool = _option(False, "multi-process: BatchNorm statistics over the global batch (SyncBatchNorm)",
                            "run")
    eval_batch_size: int = _option(500, "batch size for evaluation (no effect on the result)", "run")
    callbacks: list = _option([], "named callbacks run every epoch, e.g. weight_norm, norm_scales (their metrics "
                              "are stored with the run)", "run")

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for spec in dataclasses.fields(self):
            setattr(self, spec.name, _coerce(spec.name, getattr(self, spec.name), hints[spec.name]))
            choices = spec.metadata.get("choices")
            value = getattr(self, spec.name)
            if choices and value is not None and value not in choices:
                raise ValueError(f"TrainConfig.{spec.name} must be one of {sorted(choices)}, got {value!r}")
        self._check_values()

    def _check_values(self) -> None:
        positive = ("epochs", "batch_size", "eval_batch_size", "block_size", "world_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("train_subset", "test_subset", "steps_per_epoch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1 or None, got {value}")
        for name in ("lr", "weight_decay", "momentum", "warmup_epochs", "sparsity_l1", "min_lr_ratio"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"TrainConfig.label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if not 0.0 < self.onecycle_peak < 1.0:
            raise ValueError(f"TrainConfig.onecycle_peak must lie in (0, 1), got {self.onecycle_peak}")
        if self.schedule == "onecycle" and self.warmup_epochs:
            raise ValueError("TrainConfig: onecycle rises on its own (onecycle_peak); set warmup_epochs=0")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"TrainConfig.warmup_epochs={self.warmup_epochs} exceeds epochs={self.epochs}")
        if sorted(self.milestones) != list(self.milestones) or any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"TrainConfig.milestones must be increasing fractions in (0, 1), got {self.milestones}")
        if len(self.betas) != 2 or any(not 0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.seed < 0:
            raise ValueError(f"TrainConfig.seed must be >= 0, got {self.seed}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("TrainConfig.nesterov needs optimizer='sgd' and momentum > 0")
        if not all(isinstance(name, str) and name for name in self.callbacks):
            raise ValueError(f"TrainConfig.callbacks must be a list of callback names, got {self.callbacks!r}")
        self._check_names()

    def _check_names(self) -> None:
        from normlab.lab.models import get_model_spec
        from normlab.registry import get_norm_spec

        spec = get_model_spec(self.model)  # raises with the list of valid names
        if get_norm_spec(self.norm).family == "weight":  # an unknown name raises with the list of valid ones
            raise ValueError(f"{self.norm!r} is a weight normalization: set weight_norm={self.norm!r} and keep an "
                             f"activation norm (or 'none') as norm")
        language = self.dataset == "shakespeare"
        if (spec.task == "language") != language:
            needs = "the 'shakespeare' dataset" if spec.task == "language" else "an image dataset (cifar10, cifar100, " \
                                                                                "synthetic)"
            raise ValueError(f"model {self.model!r} needs {needs}, got dataset={self.dataset!r}")
        if self.weight_norm is not None:
            from normlab.weight import resolve_kind

            resolve_kind(self.weight_norm)  # raises with the list of valid kinds
        if self.data_kwargs and self.dataset != "synthetic":
            raise ValueError(f"TrainConfig.data_kwargs is for dataset='synthetic' only, got {self.data_kwargs!r}")
        if self.precision == "fp16" and self.device.startswith("cpu"):
            raise ValueError("precision='fp16' needs a GPU; use 'bf16' on the CPU")

    # -- conversion -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON values (the text the run id hashes)."""
        return {spec.name: _to_json(getattr(self, spec.name)) for spec in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build a config from a dict such as :meth:`to_dict`'s; unknown keys are refused with the valid ones."""
        if not isinstance(values, Mapping):
            raise TypeError(f"TrainConfig.from_dict needs a dict, got {type(values).__name__}")
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields: {', '.join(cls.field_names())}")
        return cls(**dict(values))

    @classmethod
    def field_names(cls) -> list[str]:
        """The names of all fields, in declaration order."""
        return [spec.name for spec in dataclasses.fields(cls)]

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields: {', '.join(self.field_names())}")
        return dataclasses.replace(self, **changes)

    @property
    def run_id(self) -> str:
        """The run id: the results store's hash of :meth:`to_dict`."""
        from normlab.lab.store import config_hash

        return config_hash(self.to_dict())


def _to_json(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    return value


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Normalise ``value`` to the field's declared type (``1`` → ``1.0`` for floats), or raise a clear error."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise TypeError(f"TrainConfig.{name} must not be None")
    base = next(t for t in allowed if t is not type(None))
    if base is bool:
        if not isinstance(value, bool):
            raise TypeError(f"TrainConfig.{name} must be true or false, got {value!r}")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise TypeError(f"TrainConfig.{name} must be an integer, got {value!r}")
        return int(value)
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"TrainConfig.{name} must be a number, got {value!r}")
        return float(value)
    if base is str:
        if not isinstance(value, str):
            raise TypeError(f"TrainConfig.{name} must be a string, got {value!r}")
        return value
    if base is list:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"TrainConfig.{name} must be a list, got {value!r}")
        return [float(v) if isinstance(v, int) and not isinstance(v, bool) and name in _FLOAT_LISTS else v
                for v in _to_json(value)]
    if base is dict:
        if not isinstance(value, Mapping):
            raise TypeError(f"TrainConfig.{name} must be a dict, got {value!r}")
        return _to_json(value)
    return value


_FLOAT_LISTS = ("betas", "milestones")
