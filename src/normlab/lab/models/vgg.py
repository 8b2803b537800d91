r"""CIFAR VGG networks as used for network slimming (Liu, Li, Shen, Huang, Yan & Zhang, 2017, "Learning
Efficient Convolutional Networks through Network Slimming").

The VGG of Simonyan & Zisserman (2015) adapted to 32×32 images: stacks of 3×3 convolution → norm → ReLU, with
2×2 max pooling between stages (four poolings: 32 → 2), then global average pooling and a single linear
classifier — the small classifier of the slimming experiments instead of VGG's three large fully connected
layers. Layer widths follow the standard configurations (``VGG_CONFIGS``, "M" marks a pooling); VGG-19 is the
network the slimming paper prunes on CIFAR.

**Slimming.** Network slimming puts an L1 penalty on the scale factors :math:`\gamma` of the norm layers that
follow every convolution, then removes the channels whose :math:`\gamma` is small. A pruned network is just a VGG
with fewer channels per layer: build it with ``cfg=`` (a list of channel counts and "M"), e.g. from
:attr:`VGG.cfg` with some entries reduced.

Convolutions have no bias unless ``norm="none"``; they use He (Kaiming) normal initialisation and the classifier
:math:`\mathcal{N}(0, 0.01^2)` weights. ``gamma_init`` sets the initial scale of every norm layer (the slimming
authors' code starts at 0.5; the default keeps the norm's own initialisation, 1).

Examples:
    >>> model = vgg11(norm="batch_norm")
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> small = VGG(cfg=[8, "M", 16, "M", 16], norm="group_norm", num_classes=4)
    >>> small.cfg, small(torch.randn(1, 3, 32, 32)).shape
    ([8, 'M', 16, 'M', 16], torch.Size([1, 4]))
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab.lab.models.norms import NormArg, conv_norm, is_none

__all__ = ["VGG", "VGG_CONFIGS", "vgg11", "vgg16", "vgg19"]

VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}


def _check_cfg(cfg: Sequence[int | str]) -> list[int | str]:
    cfg = list(cfg)
    if not cfg or not any(isinstance(v, int) for v in cfg):
        raise ValueError(f"a VGG cfg needs at least one channel count, got {cfg!r}")
    for value in cfg:
        if value != "M" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"VGG cfg entries must be positive channel counts or 'M' (max pooling), got {value!r}")
    return cfg


class VGG(nn.Module):
    """A CIFAR VGG (see the module docstring).

    Args:
        cfg: channel counts and "M" for max pooling, e.g. ``VGG_CONFIGS["vgg19"]`` or a pruned variant.
        norm: normalization after every convolution (registry name, class, partial or ``"none"``).
        num_classes: outputs of the classifier.
        norm_kwargs: extra arguments for every norm layer.
        gamma_init: initial value of every norm layer's ``weight`` (None keeps the layer's own).
        in_channels: input channels.

    Shape:
        - Input: :math:`(N, \\text{in\\_channels}, H, W)`; Output: :math:`(N, \\text{num\\_classes})`.
    """

    def __init__(self, cfg: Sequence[int | str] = VGG_CONFIGS["vgg19"], norm: NormArg = "batch_norm",
                 num_classes: int = 10, *, norm_kwargs: dict[str, Any] | None = None, gamma_init: float | None = None,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.cfg = _check_cfg(cfg)
        layers: list[nn.Module] = []
        channels = in_channels
        for value in self.cfg:
            if value == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers += [nn.Conv2d(channels, value, 3, padding=1, bias=is_none(norm)),
                       conv_norm(norm, value, **(norm_kwargs or {})), nn.ReLU()]
            channels = value
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)
        if gamma_init is not None:
            for layer in self.features:
                weight = getattr(getattr(layer, "norm", layer), "weight", None)
                if not isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.ReLU)) and isinstance(weight, nn.Parameter):
                    nn.init.constant_(weight, gamma_init)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, last channel count)
        return self.classifier(x)


def vgg11(norm: NormArg = "batch_norm", num_classes: int = 10, **kwargs: Any) -> VGG:
    """VGG-11 for CIFAR; arguments as :class:`VGG`."""
    return VGG(kwargs.pop("cfg", VGG_CONFIGS["vgg11"]), norm, num_classes, **kwargs)


def vgg16(norm: NormArg = "batch_norm", num_classes: int = 10, **kwargs: Any) -> VGG:
    """VGG-16 for CIFAR; arguments as :class:`VGG`."""
    return VGG(kwargs.pop("cfg", VGG_CONFIGS["vgg16"]), norm, num_classes, **kwargs)


def vgg19(norm: NormArg = "batch_norm", num_classes: int = 10, **kwargs: Any) -> VGG:
    """VGG-19 for CIFAR (the network the slimming paper prunes); arguments as :class:`VGG`."""
    return VGG(kwargs.pop("cfg", VGG_CONFIGS["vgg19"]), norm, num_classes, **kwargs)
