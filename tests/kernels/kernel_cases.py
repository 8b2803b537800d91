"""The table the CPU kernel tests run over: each case names a fast path, the core op it accelerates, and an
independent float64 reference (``tests/reference.py``), with the input shape and memory format."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import reference as ref
import torch
from torch import Tensor

from normlab.core import functional as F
from normlab.kernels import cpu_batch, cpu_channels, cpu_rows

CL = torch.channels_last
CL3 = torch.channels_last_3d
CONTIGUOUS = torch.contiguous_format


@dataclass(frozen=True)
class KernelCase:
    id: str
    shape: tuple[int, ...]
    fast: Callable[[Tensor, Tensor | None, Tensor | None], Tensor | None]
    core: Callable[[Tensor, Tensor | None, Tensor | None], Tensor]
    reference: Callable[[Tensor, Tensor | None, Tensor | None], Tensor]
    param_shape: tuple[int, ...]
    memory_format: torch.memory_format = CONTIGUOUS
    bias: bool = True


def _ln(shape_nd: int):
    def fast(x, w, b):
        return cpu_rows.fast_layer_norm(x, x.shape[-shape_nd:], w, b, 1e-5)

    def core(x, w, b):
        return F.layer_norm(x, x.shape[-shape_nd:], w, b, 1e-5)

    def reference(x, w, b):
        return ref.layer_norm(x, w, b, 1e-5, shape_nd)

    return fast, core, reference


def _rms():
    return (
        lambda x, w, b: cpu_rows.fast_rms_norm(x, x.shape[-1:], w, 1e-6),
        lambda x, w, b: F.rms_norm(x, x.shape[-1:], w, 1e-6),
        lambda x, w, b: ref.rms_norm(x, w, 1e-6),
    )


def _gn(groups: int):
    return (
        lambda x, w, b: cpu_channels.fast_group_norm(x, groups, w, b, 1e-5),
        lambda x, w, b: F.group_norm(x, groups, w, b, 1e-5),
        lambda x, w, b: ref.group_norm(x, w, b, 1e-5, groups),
    )


def _in():
    return (
        lambda x, w, b: cpu_channels.fast_instance_norm(x, None, None, w, b, True, 0.1, 1e-5),
        lambda x, w, b: F.instance_norm(x, None, None, w, b, True, 0.1, 1e-5),
        lambda x, w, b: ref.instance_norm(x, w, b, 1e-5),
    )


def _bn():
    return (
        lambda x, w, b: cpu_batch.fast_batch_norm(x, None, None, w, b, True, 0.1, 1e-5),
        lambda x, w, b: F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5),
        lambda x, w, b: ref.batch_norm(x, w, b, 1e-5),
    )


def _ln2d():
    return (
        lambda x, w, b: cpu_channels.fast_normalize(x, (1,), True, 1e-6, w, b, 1),
        lambda x, w, b: F.normalize(x, (1,), eps=1e-6, weight=w, bias=b, param_dim=1),
        lambda x, w, b: ref.layer_norm_2d(x, w, b, 1e-6),
    )


def _spatial_rms_reference(x, w, b):
    """RMS over the spatial dims per (sample, channel), the normalization inside FilterResponseNorm."""
    dims = tuple(range(2, x.dim()))
    y = x / torch.sqrt((x * x).mean(dim=dims, keepdim=True) + 1e-6)
    view = (-1, *([1] * (x.dim() - 2)))
    return y * w.view(view) + b.view(view)


def _spatial_rms():
    return (
        lambda x, w, b: cpu_channels.fast_normalize(x, tuple(range(2, x.dim())), False, 1e-6, w, b, 1),
        lambda x, w, b: F.normalize(x, tuple(range(2, x.dim())), center=False, eps=1e-6, weight=w, bias=b,
                                    param_dim=1),
        _spatial_rms_reference,
    )


CASES = [
    KernelCase("layer_norm-odd", (5, 33), *_ln(1), (33,)),
    KernelCase("layer_norm-one-row", (1, 7), *_ln(1), (7,)),
    KernelCase("layer_norm-2d-shape", (3, 4, 6), *_ln(2), (4, 6)),
    KernelCase("layer_norm-wide", (2, 8192), *_ln(1), (8192,)),
    KernelCase("rms_norm-odd", (5, 33), *_rms(), (33,), bias=False),
    KernelCase("rms_norm-one-value", (3, 1), *_rms(), (1,), bias=False),
    KernelCase("rms_norm-wide", (2, 8192), *_rms(), (8192,), bias=False),
    KernelCase("group_norm", (3, 8, 5, 7), *_gn(4), (8,)),
    KernelCase("group_norm-cl", (3, 8, 5, 7), *_gn(4), (8,), CL),
    KernelCase("group_norm-1-group-cl", (2, 6, 3, 5), *_gn(1), (6,), CL),
    KernelCase("group_norm-3d", (2, 6, 11), *_gn(3), (6,)),
    KernelCase("instance_norm", (3, 8, 5, 7), *_in(), (8,)),
    KernelCase("instance_norm-cl", (3, 8, 5, 7), *_in(), (8,), CL),
    KernelCase("instance_norm-cl3d", (2, 4, 3, 3, 3), *_in(), (4,), CL3),
    KernelCase("batch_norm", (3, 8, 5, 7), *_bn(), (8,)),
    KernelCase("batch_norm-cl", (3, 8, 5, 7), *_bn(), (8,), CL),
    KernelCase("batch_norm-2d", (16, 8), *_bn(), (8,)),
    KernelCase("batch_norm-1d-seq", (4, 3, 10), *_bn(), (3,)),
    KernelCase("layer_norm_2d", (3, 8, 5, 7), *_ln2d(), (8,)),
    KernelCase("layer_norm_2d-cl", (3, 8, 5, 7), *_ln2d(), (8,), CL),
    KernelCase("spatial_rms", (3, 8, 5, 7), *_spatial_rms(), (8,)),
    KernelCase("spatial_rms-cl", (3, 8, 5, 7), *_spatial_rms(), (8,), CL),
    # channels of 208 values (>= numba_groups.SHORT_CHANNEL): the channels-first kernels' per-channel loops
    KernelCase("group_norm-long-channels", (2, 4, 16, 13), *_gn(2), (4,)),
    KernelCase("instance_norm-long-channels", (2, 4, 16, 13), *_in(), (4,)),
    KernelCase("spatial_rms-long-channels", (2, 4, 16, 13), *_spatial_rms(), (4,)),
]


def make_inputs(case: KernelCase, dtype: torch.dtype, seed: int = 0):
    """Input (offset from zero, in the case's memory format), weight and bias (or ``None``), in ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(case.shape, generator=g) * 2 + 0.5).to(dtype).contiguous(memory_format=case.memory_format)
    w = (torch.rand(case.param_shape, generator=g) + 0.5).to(dtype)
    b = torch.randn(case.param_shape, generator=g).to(dtype) if case.bias else None
    return x, w, b
