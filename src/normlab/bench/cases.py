r"""What ``normlab bench`` measures: every activation norm of the registry, its torch.nn counterpart, the fused
residual-add norms, the shapes, and the minimum traffic each call must move.

**Norms.** Every ``"activation"`` entry of :func:`normlab.list_norms`, built with :func:`normlab.create_norm`
(``dims=2`` for the conv family), plus the fused ``add_layer_norm`` / ``add_rms_norm`` (returning ``(y, x + r)``
as a pre-norm Transformer needs), whose baseline is the *unfused pair*: ``x + r`` then the same normlab norm.
Norms whose features are the last dim run on the token shapes; ``(N, C, *)`` norms on the conv shapes.

**Counterparts.** :data:`TORCH_COUNTERPARTS` builds the torch.nn layer that computes the same function with the
same settings (LayerNorm2d has none in torch.nn; its counterpart is the usual permute → ``nn.LayerNorm`` →
permute). Norms without a counterpart (ScaleNorm, DynamicTanh, ...) are timed alone.

**Minimum traffic** (bytes for the bandwidth column): every tensor the call must read or write, once, at the
input's element size — forward: inputs + outputs; backward: the saved input, each output's gradient and the
input gradient. So LayerNorm moves :math:`2\cdot\text{numel}` elements forward and :math:`5` for forward+backward;
the fused ops :math:`4` and :math:`8`. Parameters (a few KiB) are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from normlab import nn as nlnn
from normlab.core import functional as F
from normlab.registry import create_norm, get_norm_spec, list_norms


@dataclass(frozen=True)
class Shape:
    """One benchmarked input shape; ``layout`` is ``"rows"`` (tokens × hidden), ``"nchw"`` or ``"nhwc"``."""

    dims: tuple[int, ...]
    layout: str

    @property
    def family(self) -> str:
        return "tokens" if self.layout == "rows" else "conv"

    @property
    def label(self) -> str:
        text = "x".join(str(d) for d in self.dims)
        return text if self.layout == "rows" else f"{text} {self.layout}"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.layout == "nhwc" else torch.contiguous_format

    @property
    def features(self) -> int:
        return self.dims[-1] if self.layout == "rows" else self.dims[1]


FULL_SHAPES = (
    Shape((8192, 1024), "rows"),
    Shape((4096, 4096), "rows"),
    Shape((32, 64, 32, 32), "nchw"),
    Shape((32, 64, 32, 32), "nhwc"),
)
QUICK_SHAPES = (  # the full run's conv shapes (a few ms a call) and a token shape a quarter of the full one
    Shape((2048, 1024), "rows"),
    Shape((32, 64, 32, 32), "nchw"),
    Shape((32, 64, 32, 32), "nhwc"),
)


class PermutedLayerNorm(nn.Module):
    """torch.nn.LayerNorm over the channels of ``(N, C, H, W)``: permute C last, normalize, permute back."""

    def __init__(self, num_channels: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(num_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


TORCH_COUNTERPARTS: dict[str, tuple[str, Callable[[nn.Module, int], nn.Module]]] = {
    "layer_norm": ("torch.nn.LayerNorm", lambda m, n: nn.LayerNorm(n, eps=m.eps)),
    "rms_norm": ("torch.nn.RMSNorm", lambda m, n: nn.RMSNorm(n, eps=m.eps)),
    "group_norm": ("torch.nn.GroupNorm", lambda m, n: nn.GroupNorm(m.num_groups, n, eps=m.eps)),
    "instance_norm": (
        "torch.nn.InstanceNorm2d",
        lambda m, n: nn.InstanceNorm2d(n, eps=m.eps, affine=m.affine, track_running_stats=m.track_running_stats),
    ),
    "batch_norm": ("torch.nn.BatchNorm2d", lambda m, n: nn.BatchNorm2d(n, eps=m.eps, momentum=m.momentum)),
    "layer_norm_2d": ("torch.nn.LayerNorm (permuted)", lambda m, n: PermutedLayerNorm(n, m.eps)),
}
# Settings for the benchmark where a layer's default would skip work a typical model does.
BUILD_KWARGS: dict[str, dict] = {"instance_norm": {"affine": True}}


class AddNorm(nn.Module):
    """``(norm(x + r), x + r)`` with ``norm`` a normlab LayerNorm or RMSNorm: fused through the core's
    ``add_*_norm`` op, or unfused (an add, then the layer) as the baseline."""

    def __init__(self, norm: nn.Module, fused: bool) -> None:
        super().__init__()
        self.norm, self.fused = norm, fused

    def forward(self, x: Tensor, residual: Tensor) -> tuple[Tensor, Tensor]:
        if not self.fused:
            total = x + residual
            return self.norm(total), total
        if isinstance(self.norm, nlnn.LayerNorm):
            return F.add_layer_norm(x, residual, self.norm.normalized_shape, self.norm.weight, self.norm.bias,
                                    self.norm.eps)
        return F.add_rms_norm(x, residual, self.norm.normalized_shape, self.norm.weight, self.norm.eps)


class TorchAddNorm(nn.Module):
    """The same pair in plain torch: ``x + r``, then a torch.nn norm."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor, residual: Tensor) -> tuple[Tensor, Tensor]:
        total = x + residual
        return self.norm(total), total


@dataclass(frozen=True)
class Contender:
    """One implementation in a comparison: ``impl`` is ``normlab``, ``torch.nn``, ``torch.compile`` or
    ``unfused``; ``compile`` marks a module to wrap in torch.compile."""

    impl: str
    module: nn.Module
    label: str
    compile: bool = False


@dataclass(frozen=True)
class BenchNorm:
    """One benchmarked norm: its name, family, arity, and a builder of its contenders for a shape."""

    name: str
    family: str
    inputs: int
    outputs: int
    build: Callable[[Shape], list[Contender]]

    def traffic(self, numel: int, itemsize: int, backward: bool) -> int:
        """Minimum bytes a call moves (see the module doc)."""
        elements = self.inputs + self.outputs
        if backward:
            elements += 1 + self.outputs + 1
        return elements * numel * itemsize


def _registry_norm(name: str) -> BenchNorm:
    spec = get_norm_spec(name)
    family = "tokens" if spec.channel_dim == -1 else "conv"

    def build(shape: Shape) -> list[Contender]:
        kwargs = dict(BUILD_KWARGS.get(name, {}))
        if family == "conv":
            kwargs["dims"] = 2
        ours = create_norm(name, shape.features, **kwargs)
        contenders = [Contender("normlab", ours, type(ours).__name__)]
        if name in TORCH_COUNTERPARTS:
            label, make = TORCH_COUNTERPARTS[name]
            theirs = make(ours, shape.features)
            contenders += [Contender("torch.nn", theirs, label), Contender("torch.compile", theirs, label, True)]
        return contenders

    return BenchNorm(name, family, 1, 1, build)


def _fused_norm(name: str, base: str) -> BenchNorm:
    def build(shape: Shape) -> list[Contender]:
        norm = create_norm(base, shape.features)
        label, make = TORCH_COUNTERPARTS[base]
        theirs = TorchAddNorm(make(norm, shape.features))
        return [
            Contender("normlab", AddNorm(norm, fused=True), f"fused {name}"),
            Contender("unfused", AddNorm(norm, fused=False), f"x + r, then normlab {base}"),
            Contender("torch.nn", theirs, f"x + r, then {label}"),
            Contender("torch.compile", theirs, f"x + r, then {label}", True),
        ]

    return BenchNorm(name, "tokens", 2, 2, build)


def bench_norms() -> list[BenchNorm]:
    """Every activation norm of the registry, then the two fused residual-add norms."""
    norms = [_registry_norm(name) for name in list_norms("activation")]
    return norms + [_fused_norm("add_layer_norm", "layer_norm"), _fused_norm("add_rms_norm", "rms_norm")]


def parse_shape(text: str) -> Shape:
    """``"8192x1024"`` (tokens × hidden), ``"32x64x32x32"`` (NCHW) or ``"32x64x32x32:nhwc"`` (channels_last).

    Examples:
        >>> parse_shape("32x64x8x8:nhwc").label
        '32x64x8x8 nhwc'
    """
    body, _, layout = text.strip().partition(":")
    try:
        dims = tuple(int(d) for d in body.lower().split("x"))
    except ValueError as error:
        raise ValueError(f"bad shape {text!r}: write it as 8192x1024 or 32x64x32x32[:nhwc]") from error
    if len(dims) == 2 and not layout:
        return Shape(dims, "rows")
    if len(dims) == 4 and layout in ("", "nchw", "nhwc"):
        return Shape(dims, layout or "nchw")
    raise ValueError(f"bad shape {text!r}: write tokens as TxH (8192x1024), conv as NxCxHxW (32x64x32x32) with "
                     "an optional ':nhwc' or ':nchw'")
