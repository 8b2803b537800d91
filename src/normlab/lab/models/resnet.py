r"""CIFAR ResNets (He, Zhang, Ren & Sun, 2016, "Deep Residual Learning for Image Recognition", Sec. 4.2).

The network of the paper's CIFAR-10 experiments: a 3×3 convolution with 16 filters, then three stages of
:math:`n` basic blocks (two 3×3 convolutions each) on feature maps of 32×32, 16×16 and 8×8 with 16, 32 and 64
filters, then global average pooling and a linear classifier — :math:`6n + 2` weighted layers:
ResNet-20 (:math:`n=3`, 0.27 M parameters), ResNet-32 (:math:`n=5`, 0.46 M), ResNet-56 (:math:`n=9`, 0.85 M).
Every convolution is followed by a normalization layer (``norm=``; batch norm in the paper) and, except the
block's second one, a ReLU; a block computes :math:`\mathrm{relu}(\mathrm{norm}_2(W_2\,
\mathrm{relu}(\mathrm{norm}_1(W_1 x))) + s(x))`.

**Shortcut.** Option A by default, as the paper uses for CIFAR: where a stage halves the resolution and doubles
the channels, the shortcut :math:`s(x)` takes every second pixel and appends zero channels — no parameters. This
keeps the published parameter counts and puts every normalization layer inside a residual branch, so comparing
norms compares only the norms. Option B (``shortcut="B"``: a strided 1×1 convolution followed by a norm) is
available for the ImageNet-style variant.

With ``norm="none"`` the convolutions get biases (nothing else would supply them); otherwise they have none,
since the norm's own shift :math:`\beta` makes a bias redundant. Convolutions use He (Kaiming) normal
initialisation, as the paper.

Examples:
    >>> model = resnet20(norm="group_norm")
    >>> round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    0.27
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab.lab.models.norms import NormArg, conv_norm, is_none

__all__ = ["CifarResNet", "BasicBlock", "ZeroPadShortcut", "resnet20", "resnet32", "resnet56", "SHORTCUTS"]

SHORTCUTS = ("A", "B")


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and append ``extra_channels`` zero channels.

    Shape:
        - Input: :math:`(N, C, H, W)`; Output: :math:`(N, C + \\text{extra}, \\lceil H/s \\rceil, \\lceil W/s \\rceil)`.
    """

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride, self.extra_channels = stride, extra_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # zeros after the existing channels

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


class BasicBlock(nn.Module):
    """Two 3×3 conv–norm layers with a shortcut (see the module docstring)."""

    def __init__(self, in_channels: int, channels: int, stride: int, norm: NormArg, shortcut: str,
                 norm_kwargs: dict[str, Any]) -> None:
        super().__init__()
        bias = is_none(norm)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=bias)
        self.norm1 = conv_norm(norm, channels, **norm_kwargs)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=bias)
        self.norm2 = conv_norm(norm, channels, **norm_kwargs)
        if stride == 1 and in_channels == channels:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(stride, channels - in_channels)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=bias),
                                          conv_norm(norm, channels, **norm_kwargs))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A CIFAR ResNet of depth :math:`6n + 2` (see the module docstring).

    Args:
        depth: 20, 32, 44, 56, 110, ... (:math:`6n + 2`).
        norm: normalization (registry name, class, partial or ``"none"``).
        num_classes: outputs of the classifier.
        width: filters of the first stage (16 in the paper; the stages have width, 2·width, 4·width).
        shortcut: ``"A"`` (zero-padded identity, the paper's CIFAR choice) or ``"B"`` (1×1 projection).
        norm_kwargs: extra arguments for every norm layer (e.g. ``num_groups``).
        in_channels: input channels.

    Shape:
        - Input: :math:`(N, \\text{in\\_channels}, H, W)`; Output: :math:`(N, \\text{num\\_classes})`.
    """

    def __init__(self, depth: int = 20, norm: NormArg = "batch_norm", num_classes: int = 10, *, width: int = 16,
                 shortcut: str = "A", norm_kwargs: dict[str, Any] | None = None, in_channels: int = 3) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (20, 32, 56, ...), got {depth!r}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be 'A' (zero-padded identity) or 'B' (1x1 projection), got {shortcut!r}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        norm_kwargs = dict(norm_kwargs or {})
        blocks_per_stage = (depth - 2) // 6
        self.depth, self.shortcut_option = depth, shortcut
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=is_none(norm))
        self.norm1 = conv_norm(norm, width, **norm_kwargs)
        stages, channels = [], width
        for stage, out_channels in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, stride, norm, shortcut, norm_kwargs))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, 4 * width)
        return self.fc(x)


def resnet20(norm: NormArg = "batch_norm", num_classes: int = 10, **kwargs: Any) -> CifarResNet:
    """ResNet-20 (n = 3, 0.27 M parameters); arguments as :class:`CifarResNet`."""
    return CifarResNet(20, norm, num_classes, **kwargs)


def resnet32(norm: NormArg = "batch_norm", num_classes: int = 10, **kwargs: Any) -> CifarResNet:
    """ResNet-32 (n = 5, 0.46 M parameters); arguments as :class:`CifarResNet`."""
    return CifarResNet(32, norm, num_classes, **kwargs)


def resnet56(norm: NormArg = "batch_norm", num_classes: int = 10, **kwargs: Any) -> CifarResNet:
    """ResNet-56 (n = 9, 0.85 M parameters); arguments as :class:`CifarResNet`."""
    return CifarResNet(56, norm, num_classes, **kwargs)
