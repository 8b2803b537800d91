"""The table of normalization layers the layer tests run over: each case builds a normlab layer, optionally its torch.nn
counterpart, an input, and the float64 reference of its output (``reference.py``, written from the papers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

import normlab.nn as nl
import reference as ref


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]
    # reference(x64, layer64) -> y64, for the layer in its current mode
    reference: Callable[[torch.Tensor, nn.Module], torch.Tensor]
    torch_build: Callable[[], nn.Module] | None = None
    modes: tuple[str, ...] = ("train",)
    # a layer with running statistics is checked in eval mode with randomised buffers
    running_stats: bool = False
    # "counts_batches": num_batches_tracked counts training batches where torch.nn's InstanceNorm leaves it at 0;
    # "stop_gradient": the backward treats batch-dependent terms as constants by design (Batch Renorm's r, d)
    tags: frozenset[str] = field(default_factory=frozenset)


def _p(layer, name):
    return getattr(layer, name, None)


def _bn_ref(x, m):
    if m.training or not m.track_running_stats:
        return ref.batch_norm(x, _p(m, "weight"), _p(m, "bias"), m.eps)
    return ref.batch_norm(x, _p(m, "weight"), _p(m, "bias"), m.eps, m.running_mean, m.running_var)


def _in_ref(x, m):
    if x.dim() == m.spatial_dims + 1:
        return _in_ref(x.unsqueeze(0), m).squeeze(0)
    if m.training or not m.track_running_stats:
        return ref.instance_norm(x, _p(m, "weight"), _p(m, "bias"), m.eps)
    return ref.batch_norm(x, _p(m, "weight"), _p(m, "bias"), m.eps, m.running_mean, m.running_var)


def _ln_ref(x, m):
    return ref.layer_norm(x, _p(m, "weight"), _p(m, "bias"), m.eps, len(m.normalized_shape))


def _rms_ref(x, m):
    eps = torch.finfo(torch.float64).eps if m.eps is None else m.eps
    return ref.rms_norm(x, _p(m, "weight"), eps, len(m.normalized_shape))


def _brn_ref(x, m):
    if not m.training:
        return _bn_ref(x, m)
    return ref.batch_renorm(x, _p(m, "weight"), _p(m, "bias"), m.eps, m.running_mean, m.running_var, m.r_max, m.d_max)


CASES: list[Case] = [
    Case("bn1d-2d", lambda: nl.BatchNorm1d(6), (8, 6), _bn_ref, lambda: nn.BatchNorm1d(6), ("train", "eval"), True),
    Case("bn1d-3d", lambda: nl.BatchNorm1d(6), (4, 6, 5), _bn_ref, lambda: nn.BatchNorm1d(6), ("train", "eval"), True),
    Case("bn2d", lambda: nl.BatchNorm2d(4), (4, 4, 5, 5), _bn_ref, lambda: nn.BatchNorm2d(4), ("train", "eval"), True),
    Case("bn3d", lambda: nl.BatchNorm3d(3), (3, 3, 2, 4, 4), _bn_ref, lambda: nn.BatchNorm3d(3), ("train", "eval"),
         True),
    Case("bn-no-track", lambda: nl.BatchNorm2d(4, track_running_stats=False), (4, 4, 3, 3), _bn_ref,
         lambda: nn.BatchNorm2d(4, track_running_stats=False), ("train", "eval")),
    Case("bn-momentum-none", lambda: nl.BatchNorm2d(4, momentum=None), (4, 4, 3, 3), _bn_ref,
         lambda: nn.BatchNorm2d(4, momentum=None), ("train",), True),
    Case("bn-any-rank", lambda: nl.BatchNorm(4), (2, 4, 3, 2, 2, 2), _bn_ref, None, ("train", "eval"), True),
    Case("in1d", lambda: nl.InstanceNorm1d(4, affine=True), (3, 4, 7), _in_ref,
         lambda: nn.InstanceNorm1d(4, affine=True)),
    Case("in1d-unbatched", lambda: nl.InstanceNorm1d(4, affine=True), (4, 7), _in_ref,
         lambda: nn.InstanceNorm1d(4, affine=True)),
    Case("in2d", lambda: nl.InstanceNorm2d(4, affine=True), (3, 4, 5, 5), _in_ref,
         lambda: nn.InstanceNorm2d(4, affine=True)),
    Case("in2d-track", lambda: nl.InstanceNorm2d(4, affine=True, track_running_stats=True), (3, 4, 5, 5), _in_ref,
         lambda: nn.InstanceNorm2d(4, affine=True, track_running_stats=True), ("train", "eval"), True,
         frozenset({"counts_batches"})),
    Case("in3d", lambda: nl.InstanceNorm3d(3), (2, 3, 3, 4, 4), _in_ref, lambda: nn.InstanceNorm3d(3)),
    Case("ln", lambda: nl.LayerNorm(8), (3, 5, 8), _ln_ref, lambda: nn.LayerNorm(8)),
    Case("ln-2dims", lambda: nl.LayerNorm((4, 8)), (3, 4, 8), _ln_ref, lambda: nn.LayerNorm((4, 8))),
    Case("ln-nobias", lambda: nl.LayerNorm(8, bias=False), (6, 8), _ln_ref, lambda: nn.LayerNorm(8, bias=False)),
    Case("ln-noaffine", lambda: nl.LayerNorm(8, elementwise_affine=False), (6, 8), _ln_ref,
         lambda: nn.LayerNorm(8, elementwise_affine=False)),
    Case("ln2d", lambda: nl.LayerNorm2d(6), (2, 6, 4, 4),
         lambda x, m: ref.layer_norm_2d(x, _p(m, "weight"), _p(m, "bias"), m.eps)),
    Case("gn-1d", lambda: nl.GroupNorm(2, 6), (3, 6, 5),
         lambda x, m: ref.group_norm(x, _p(m, "weight"), _p(m, "bias"), m.eps, m.num_groups),
         lambda: nn.GroupNorm(2, 6)),
    Case("gn-2d", lambda: nl.GroupNorm(3, 6), (2, 6, 4, 4),
         lambda x, m: ref.group_norm(x, _p(m, "weight"), _p(m, "bias"), m.eps, m.num_groups),
         lambda: nn.GroupNorm(3, 6)),
    Case("gn-3d", lambda: nl.GroupNorm(2, 4), (2, 4, 2, 3, 3),
         lambda x, m: ref.group_norm(x, _p(m, "weight"), _p(m, "bias"), m.eps, m.num_groups),
         lambda: nn.GroupNorm(2, 4)),
    Case("rms", lambda: nl.RMSNorm(8, eps=1e-6), (3, 5, 8), _rms_ref, lambda: nn.RMSNorm(8, eps=1e-6)),
    Case("rms-eps-none", lambda: nl.RMSNorm(8), (4, 8), _rms_ref, lambda: nn.RMSNorm(8)),
    Case("brn", lambda: nl.BatchRenorm(4, momentum=0.0), (6, 4, 3, 3), _brn_ref, None, ("train", "eval"), True,
         frozenset({"stop_gradient"})),
    Case("gbn", lambda: nl.GhostBatchNorm(4, virtual_batch_size=3), (7, 4, 3, 3),
         lambda x, m: ref.ghost_batch_norm(x, _p(m, "weight"), _p(m, "bias"), m.eps, m.virtual_batch_size)
         if m.training else _bn_ref(x, m), None, ("train", "eval"), True),
    Case("frn", lambda: nl.FilterResponseNorm(4), (2, 4, 5, 5),
         lambda x, m: ref.filter_response_norm(x, _p(m, "weight"), _p(m, "bias"), _p(m, "tau"), m.eps)),
    Case("scale", lambda: nl.ScaleNorm(8), (3, 8), lambda x, m: ref.scale_norm(x, _p(m, "scale"), m.eps)),
    Case("dyt", lambda: nl.DynamicTanh(8), (3, 5, 8),
         lambda x, m: ref.dynamic_tanh(x, _p(m, "alpha"), _p(m, "weight"), _p(m, "bias"))),
    Case("dyt-channels-first", lambda: nl.DynamicTanh(4, channels_last=False), (2, 4, 3, 3),
         lambda x, m: ref.dynamic_tanh(x, _p(m, "alpha"), _p(m, "weight").view(-1, 1, 1),
                                       _p(m, "bias").view(-1, 1, 1))),
]


def randomize(layer: nn.Module, seed: int = 1) -> nn.Module:
    """Give every parameter and running buffer random values, so the affine map and running stats matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name in ("weight", "scale") else 0.0))
        for name, buf in layer.named_buffers():
            if name == "running_mean":
                buf.copy_(torch.randn(buf.shape, generator=g))
            elif name == "running_var":
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    return layer


def make_input(case: Case, dtype=torch.float32, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(case.shape, generator=g, dtype=torch.float64) * 2 + 0.5).to(dtype)


def build(case: Case, mode: str, dtype=torch.float32) -> nn.Module:
    layer = randomize(case.build()).to(dtype)
    return layer.train(mode == "train")


def mode_cases(predicate=lambda case: True):
    """``(case, mode)`` pairs as pytest params, ids like ``bn2d-eval``."""
    import pytest

    return [pytest.param(c, m, id=f"{c.id}-{m}") for c in CASES if predicate(c) for m in c.modes]
