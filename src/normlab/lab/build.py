r"""Turning a :class:`~normlab.lab.config.TrainConfig` into data, a model and an optimizer.

* :func:`build_data` — in-memory tensors on the training device and resumable loaders
  (:class:`~normlab.lab.data.TensorLoader` for images with on-device crop/flip/normalize,
  :class:`~normlab.lab.data.BlockLoader` for characters), plus the data's provenance;
* :func:`build_model` — the model of the registry with the config's norm, initialised from ``config.seed``
  (without touching the global generator), and the optional weight reparametrization;
* :func:`build_optimizer` — SGD (momentum, Nesterov; L2 weight decay) or AdamW (decoupled decay), with optional
  parameter groups that exempt normalization parameters / biases from decay (:func:`normlab.surgery.param_groups`);
* :func:`sparsity_penalty` — the L1 penalty of network slimming (Liu et al. 2017), :math:`\lambda \sum |\gamma|`
  over the scale factors of the prunable norm layers (:func:`normlab.pruning.gamma_l1_penalty`), added to the loss;
  :func:`norm_scale_parameters` lists every activation norm's :math:`\gamma`;
* :func:`transform_gradients_` — gradient normalization / adaptive clipping (:mod:`normlab.optim`) and norm
  clipping, applied between ``backward()`` and ``step()``.

Examples:
    >>> from normlab.lab.config import TrainConfig
    >>> config = TrainConfig(model="resnet20", norm="group_norm", dataset="synthetic", train_subset=32,
    ...                      test_subset=16, batch_size=16, data_kwargs={"image_size": 8})
    >>> data = build_data(config)
    >>> data.task, data.num_outputs, len(data.train), data.summary.startswith("synthetic")
    ('image', 10, 2, True)
    >>> model = build_model(config, data)
    >>> [group["name"] for group in build_optimizer(config.replace(no_decay_norm=True), model).param_groups]
    ['decay', 'norm', 'bias']
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from normlab.lab.config import TrainConfig
from normlab.lab.models import get_model_spec
from normlab.registry import get_norm_spec, list_norms

__all__ = ["TrainData", "build_data", "build_model", "build_optimizer", "norm_scale_parameters",
           "sparsity_penalty", "transform_gradients_", "default_num_outputs", "CLASSIFIER_PREFIXES"]

#: parameter-name prefixes of the models' final classifiers (left out of adaptive gradient clipping, as NFNets)
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.")
_SYNTHETIC_DEFAULTS = {"train": 512, "test": 128}
_LANGUAGE_DEFAULTS = {"steps_per_epoch": 200, "eval_sequences": 256}


@dataclass
class TrainData:
    """Loaders and facts about the data of one run.

    Attributes:
        task: ``"image"`` or ``"language"``.
        train: the training loader (global batches of ``config.batch_size``; resumable state).
        test: the evaluation loader (images: this process's share of the test set, in order; language: fixed
            validation blocks).
        num_outputs: classes, or the vocabulary size.
        summary: one line of provenance for logs and the store.
        provenance: a JSON-ready dict for the store.
        samples_per_epoch: training samples (sequences) per epoch over all processes.
    """

    task: str
    train: Any
    test: Any
    num_outputs: int
    summary: str
    provenance: dict
    samples_per_epoch: int


def default_num_outputs(config: TrainConfig) -> int | None:
    """Classes implied by the config alone (None for language models: the vocabulary comes from the text)."""
    if config.dataset == "cifar10":
        return 10
    if config.dataset == "cifar100":
        return 100
    if config.dataset == "synthetic":
        return int(config.data_kwargs.get("num_classes", 10))
    return None


def _shard_range(n: int, rank: int, world_size: int) -> slice:
    per = math.ceil(n / world_size)
    return slice(min(rank * per, n), min((rank + 1) * per, n))


def build_data(config: TrainConfig, *, data_dir: str | os.PathLike | None = None, device: Any = "cpu",
               download: bool = False, progress: bool = True, rank: int = 0, world_size: int = 1) -> TrainData:
    """Load the config's data set into memory on ``device`` and wrap it in resumable loaders.

    Args:
        config: the run's settings (``dataset``, ``train_subset``, ``test_subset``, ``augment``, ``batch_size``,
            ``eval_batch_size``, ``block_size``, ``steps_per_epoch``, ``seed``, ``data_kwargs``).
        data_dir: the data folder (else ``$NORMLAB_DATA``); unused for synthetic data.
        device: where tensors live and batches are produced.
        download: fetch the official files when missing (needs network access).
        progress: show a download progress bar.
        rank / world_size: this process's share of the evaluation set.

    Returns:
        A :class:`TrainData`.

    Raises:
        normlab.lab.data.DataNotFoundError: no local data (the message says how to get it).
    """
    from normlab.lab import data as labdata

    if config.dataset == "shakespeare":
        return _language_data(config, labdata, data_dir, device, download, progress)
    if config.dataset == "synthetic":
        options = {"num_train": config.train_subset or _SYNTHETIC_DEFAULTS["train"],
                   "num_test": config.test_subset or _SYNTHETIC_DEFAULTS["test"], **config.data_kwargs}
        images = labdata.make_synthetic_images(**options)
    else:
        images = labdata.load_cifar(config.dataset, data_dir, download=download, progress=progress)
    train_x, train_y = images.train_images[:config.train_subset], images.train_labels[:config.train_subset]
    test_x, test_y = images.test_images[:config.test_subset], images.test_labels[:config.test_subset]
    summary = images.provenance.summary
    if config.dataset != "synthetic" and (config.train_subset or config.test_subset):
        summary += f"; this run uses the first {len(train_x):,} train / {len(test_x):,} test images"
    augment = labdata.ImageTransform(images.mean, images.std, crop_padding=4 if config.augment else 0,
                                     flip=config.augment)
    plain = labdata.ImageTransform(images.mean, images.std)
    train = labdata.TensorLoader(train_x, train_y, config.batch_size, shuffle=True, drop_last=True, seed=config.seed,
                                 device=device, transform=augment)
    share = _shard_range(len(test_x), rank, world_size)
    test = labdata.TensorLoader(test_x[share], test_y[share], config.eval_batch_size, shuffle=False, device=device,
                                transform=plain)
    provenance = dict(images.provenance.to_dict(), used_train=len(train_x), used_test=len(test_x))
    return TrainData("image", train, test, images.num_classes, summary, provenance,
                     len(train) * config.batch_size)


def _language_data(config: TrainConfig, labdata: Any, data_dir: Any, device: Any, download: bool,
                   progress: bool) -> TrainData:
    corpus = labdata.load_shakespeare(data_dir, download=download, progress=progress)
    train_tokens = corpus.train[:config.train_subset]
    steps = config.steps_per_epoch or _LANGUAGE_DEFAULTS["steps_per_epoch"]
    train = labdata.BlockLoader(train_tokens, config.batch_size, config.block_size, steps, seed=config.seed,
                                device=device)
    sequences = config.test_subset or _LANGUAGE_DEFAULTS["eval_sequences"]
    batch = min(config.eval_batch_size, sequences)
    # Evaluation blocks come from a fixed seed, so every run and epoch is scored on the same text.
    test = labdata.BlockLoader(corpus.val, batch, config.block_size, math.ceil(sequences / batch), seed=0,
                               device=device)
    summary = corpus.summary
    if config.train_subset:
        summary += f"; this run trains on the first {len(train_tokens):,} characters"
    provenance = {"summary": summary, "source": corpus.source, "md5": corpus.md5, "official": corpus.official,
                  "train_characters": len(train_tokens), "val_characters": len(corpus.val),
                  "vocab_size": corpus.vocab.size}
    return TrainData("language", train, test, corpus.vocab.size, summary, provenance, steps * config.batch_size)


def build_model(config: TrainConfig, data: TrainData | None = None, *, num_outputs: int | None = None) -> nn.Module:
    """The config's model, initialised from ``config.seed`` (the global RNG is left untouched).

    Args:
        config: ``model``, ``norm``, ``norm_kwargs``, ``model_kwargs``, ``norm_placement``, ``block_size``,
            ``weight_norm``, ``weight_norm_kwargs``, ``seed``.
        data: gives the number of classes / the vocabulary size.
        num_outputs: overrides ``data`` (e.g. when rebuilding a trained model without its data).

    Returns:
        The model on the CPU, in training mode.
    """
    spec = get_model_spec(config.model)
    outputs = num_outputs or (data.num_outputs if data is not None else default_num_outputs(config))
    if outputs is None:
        raise ValueError(f"{config.model} needs the vocabulary size: pass data= (build_data) or num_outputs=")
    kwargs = dict(config.model_kwargs)
    if spec.task == "language":
        kwargs.setdefault("placement", config.norm_placement)
        kwargs.setdefault("block_size", config.block_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = spec.build(config.norm, outputs, norm_kwargs=dict(config.norm_kwargs), **kwargs)
        if config.weight_norm:
            from normlab.weight import reparametrize

            options = dict(config.weight_norm_kwargs)
            if spec.task == "language":
                options.setdefault("exclude", "head")  # the head shares the token embedding's weight
            reparametrize(model, config.weight_norm, **options)
    return model


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW over ``model``'s trainable parameters, grouped by :func:`normlab.surgery.param_groups`
    when ``no_decay_norm`` / ``no_decay_bias`` ask for it (groups named ``decay``, ``norm``, ``bias``)."""
    decay = config.weight_decay
    if config.no_decay_norm or config.no_decay_bias:
        from normlab.surgery import param_groups

        groups = [dict(g) for g in param_groups(model, decay, norm_weight_decay=0.0 if config.no_decay_norm else decay,
                                                 bias_weight_decay=0.0 if config.no_decay_bias else decay)]
        for group in groups:
            keep = [(n, p) for n, p in zip(group["param_names"], group["params"]) if p.requires_grad]
            group["param_names"], group["params"] = [n for n, _ in keep], [p for _, p in keep]
        groups = [g for g in groups if g["params"]]
    else:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [{"name": "all", "params": [p for _, p in named], "param_names": [n for n, _ in named],
                   "weight_decay": decay}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=decay)
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), weight_decay=decay)


def norm_scale_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The per-channel scale :math:`\\gamma` (``weight``, 1-D) of every activation-normalization layer."""
    classes = tuple(cls for name in list_norms("activation") for cls in get_norm_spec(name).classes)
    found, seen = [], set()
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, classes) and isinstance(weight, nn.Parameter) and weight.dim() == 1:
            if id(weight) not in seen:
                seen.add(id(weight))
                found.append(weight)
    return found


def sparsity_penalty(model: nn.Module, strength: float) -> torch.Tensor:
    r""":math:`\lambda\sum|\gamma|` over the prunable norm layers' scales, to add to the loss (network slimming)."""
    from normlab.pruning import gamma_l1_penalty

    return gamma_l1_penalty(model, strength)


def transform_gradients_(config: TrainConfig, model: nn.Module) -> None:
    """Apply ``config.grad_transform`` (``normalize`` / ``agc``) and then ``config.grad_clip`` to the gradients."""
    if config.grad_transform == "normalize":
        from normlab.optim import normalize_gradients_

        normalize_gradients_(model, **config.grad_transform_kwargs)
    elif config.grad_transform == "agc":
        from normlab.optim import adaptive_clip_gradients_

        named = [(n, p) for n, p in model.named_parameters()
                 if p.grad is not None and not n.startswith(CLASSIFIER_PREFIXES)]
        adaptive_clip_gradients_(named, **config.grad_transform_kwargs)
    if config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], config.grad_clip)
