"""The lab's models, each taking ``norm=`` (a registry name, a class, a partial, or ``"none"``).

=================  ========  ===================================================================================
name               task      what it is
=================  ========  ===================================================================================
resnet20/32/56     image     CIFAR ResNets of He et al. (2016), option-A (zero-padded identity) shortcuts
vgg11/16/19        image     CIFAR VGGs as used for network slimming (Liu et al. 2017); ``cfg=`` builds pruned ones
char_transformer   language  a small GPT-style character Transformer; ``placement="pre"`` or ``"post"``
=================  ========  ===================================================================================

:func:`create_model` builds any of them by name; an unknown name raises a ``ValueError`` listing the valid
ones. Conv nets map feature-last norms onto their ``(N, C, H, W)`` activations (``layer_norm`` becomes
``layer_norm_2d``); see :mod:`normlab.lab.models.norms` for the rule.

Examples:
    >>> model = create_model("resnet20", norm="rms_norm", num_classes=10)
    >>> model(torch.randn(1, 3, 32, 32)).shape
    torch.Size([1, 10])
    >>> create_model("resnet_20")
    Traceback (most recent call last):
        ...
    ValueError: unknown model 'resnet_20'. Did you mean 'resnet20'? Valid models: char_transformer, resnet20, ...
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

import torch  # noqa: F401  (the doctests use it)
from torch import nn

from normlab.lab.models.norms import FeaturesFirst, FeaturesLast, NormArg, conv_norm, sequence_norm
from normlab.lab.models.resnet import CifarResNet, resnet20, resnet32, resnet56
from normlab.lab.models.transformer import CharTransformer, char_transformer
from normlab.lab.models.vgg import VGG, VGG_CONFIGS, vgg11, vgg16, vgg19

__all__ = ["ModelSpec", "MODELS", "create_model", "get_model_spec", "list_models", "CifarResNet", "VGG",
           "VGG_CONFIGS", "CharTransformer", "FeaturesFirst", "FeaturesLast", "conv_norm", "sequence_norm",
           "resnet20", "resnet32", "resnet56", "vgg11", "vgg16", "vgg19", "char_transformer"]


@dataclass(frozen=True)
class ModelSpec:
    """One model of the registry: ``build(norm, num_outputs, **kwargs)`` and whether it classifies images
    (``task="image"``, ``num_outputs`` = classes) or models characters (``"language"``, ``num_outputs`` = vocabulary).
    """

    name: str
    description: str
    task: str
    build: Callable[..., nn.Module]


def _language(norm: NormArg, num_outputs: int, **kwargs: Any) -> nn.Module:
    return char_transformer(norm, vocab_size=num_outputs, **kwargs)


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("resnet20", "CIFAR ResNet-20 (He et al. 2016), 0.27 M parameters", "image", resnet20),
    ModelSpec("resnet32", "CIFAR ResNet-32 (He et al. 2016), 0.46 M parameters", "image", resnet32),
    ModelSpec("resnet56", "CIFAR ResNet-56 (He et al. 2016), 0.85 M parameters", "image", resnet56),
    ModelSpec("vgg11", "CIFAR VGG-11 with one linear classifier (network slimming setup)", "image", vgg11),
    ModelSpec("vgg16", "CIFAR VGG-16 with one linear classifier (network slimming setup)", "image", vgg16),
    ModelSpec("vgg19", "CIFAR VGG-19 with one linear classifier (Liu et al. 2017 prune it)", "image", vgg19),
    ModelSpec("char_transformer", "GPT-style character Transformer, pre- or post-norm", "language", _language),
)}


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a model name; an unknown name raises a ``ValueError`` listing the valid ones."""
    if isinstance(name, str) and name.lower() in MODELS:
        return MODELS[name.lower()]
    close = difflib.get_close_matches(str(name).lower(), list(MODELS), n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown model {name!r}.{hint} Valid models: {', '.join(sorted(MODELS))}")


def list_models() -> dict[str, str]:
    """``{name: description}`` of every model."""
    return {name: spec.description for name, spec in MODELS.items()}


def create_model(name: str, norm: NormArg = "batch_norm", num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Build a model by name.

    Args:
        name: see :data:`MODELS`.
        norm: normalization (registry name, class, partial or ``"none"``).
        num_classes: classes for image models; the vocabulary size for ``char_transformer``.
        **kwargs: the model's own arguments (``width``, ``shortcut``, ``cfg``, ``placement``, ``n_layer``,
            ``norm_kwargs``, ...).

    Returns:
        The model, in training mode, on the CPU.
    """
    spec = get_model_spec(name)
    return spec.build(norm, num_classes, **kwargs)
