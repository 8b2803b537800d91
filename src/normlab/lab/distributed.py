r"""Training beyond one process: torchrun set-up, data sharding, and a SyncBatchNorm that also runs on the CPU.

**Launch.** ``torchrun --nproc_per_node 2 -m normlab.cli train ...`` starts one process per device; each reads
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment. :func:`setup_distributed` joins the process
group (``nccl`` on CUDA, ``gloo`` on the CPU), picks the device (``cuda:<LOCAL_RANK>`` on GPUs) and returns a
:class:`DistContext`; the trainer wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel`.

**Data.** Every process holds the whole (in-memory) data set and draws the *same* global batch of
``batch_size`` samples from the same seeded shuffle, then keeps its own contiguous slice of
``batch_size / world_size`` samples (:func:`shard`) — the sharding of a ``DistributedSampler``, with the
property that the union of the shards is exactly the single-process batch (augmented identically). So a
2-process run with ``--sync-bn`` computes what one process computes on the global batch, up to the order of
floating-point sums.

**SyncBatchNorm.** ``torch.nn.SyncBatchNorm`` refuses CPU tensors (its forward raises "SyncBatchNorm expected
input tensor to be on GPU" in torch 2.x), so gloo/CPU training needs its own: :class:`SyncBatchNorm` here is a
normlab BatchNorm whose training statistics are summed over the process group before normalizing,

.. math::
    N = \sum_r n_r, \quad \mu = \frac1N \sum_r \sum_{i \in r} x_i, \quad
    \sigma^2 = \frac1N \sum_r \sum_{i \in r} (x_i - \mu)^2,

in two all-reduces (the second centred, so the variance never goes negative), each differentiable (its backward
all-reduces the gradient), so gradients equal those of BatchNorm over the global batch. The running statistics
get the unbiased :math:`\frac{N}{N-1}\sigma^2`, as single-process BatchNorm over :math:`N` values. In
evaluation, or without a process group, it is plain BatchNorm. :func:`convert_sync_batchnorm` converts both
``torch.nn`` and normlab BatchNorm layers: to this class on the CPU, to ``torch.nn.SyncBatchNorm`` (via
:func:`normlab.surgery.convert_sync_bn`, fast CUDA kernels) on GPUs.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from normlab import nn as nlnn
from normlab.core import Moments, apply_stats, compute_dtype, update_running_stats_

__all__ = ["DistContext", "setup_distributed", "teardown_distributed", "resolve_device", "shard", "all_reduce_sum",
           "SyncBatchNorm", "convert_sync_batchnorm", "env_world_size"]


@dataclass
class DistContext:
    """Where this process stands: rank, world size, local rank, device, and whether it started the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        """True when training runs in several processes."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes checkpoints, the store and the console."""
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (set by torchrun), or 1."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device for a config's ``device`` string: ``"auto"`` means ``cuda:<local_rank>`` if CUDA is available,
    else ``cpu``; ``"cuda"`` means ``cuda:<local_rank>``.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for but CUDA is not available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def setup_distributed(device_name: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Join the torchrun process group (if any) and pick this process's device.

    Args:
        device_name: a config's ``device`` (see :func:`resolve_device`).
        timeout_s: how long collectives wait for a slow peer.

    Returns:
        A :class:`DistContext`; single-process when ``WORLD_SIZE`` is unset or 1 and no group exists.
    """
    world_size = env_world_size()
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        device = resolve_device(device_name, local_rank)
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, owns_group=False)
    if world_size <= 1:
        return DistContext(device=resolve_device(device_name))
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    atexit.register(_destroy_group)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, owns_group=True)


def _destroy_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def teardown_distributed(context: DistContext) -> None:
    """Wait for every process at the end of a run; the group itself stays up until the process exits.

    Destroying and re-creating the group inside one torchrun process can hang (the new group's rendezvous reuses
    the launcher's store keys), so several ``train`` calls in one process share the group joined first, and it is
    destroyed at exit.
    """
    if context.enabled and dist.is_initialized():
        dist.barrier()


def shard(batch: tuple[Tensor, ...], context: DistContext) -> tuple[Tensor, ...]:
    """This process's contiguous slice of a global batch (every tensor split along dim 0 into equal parts).

    Examples:
        >>> shard((torch.arange(6),), DistContext(rank=1, world_size=2))
        (tensor([3, 4, 5]),)
    """
    if not context.enabled:
        return batch
    size = batch[0].shape[0]
    if size % context.world_size:
        raise ValueError(f"a global batch of {size} cannot be split evenly over {context.world_size} processes; "
                         f"choose a batch size divisible by the number of processes")
    part = size // context.world_size
    return tuple(t[context.rank * part:(context.rank + 1) * part] for t in batch)


def all_reduce_sum(tensor: Tensor, context: DistContext) -> Tensor:
    """Sum ``tensor`` over all processes (a no-op in one process); returns the summed tensor."""
    if context.enabled:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class _DifferentiableAllReduce(torch.autograd.Function):
    """Sum over the process group; the backward pass sums the incoming gradients the same way."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


class SyncBatchNorm(nlnn.BatchNorm):
    r"""BatchNorm whose training statistics span every process of a group (see the module docstring).

    Args:
        num_features, eps, momentum, affine, track_running_stats, bias: as :class:`normlab.nn.BatchNorm`.
        process_group: the group to synchronise over (None: the default group).

    Shape:
        - Input: :math:`(N, C, *)`; Output: the same shape.

    Examples:
        >>> layer = SyncBatchNorm(3)  # no process group: plain BatchNorm
        >>> layer(torch.randn(4, 3, 2, 2)).shape
        torch.Size([4, 3, 2, 2])
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: Any = None, *, bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, bias=bias)
        self.process_group = process_group

    def forward(self, x: Tensor) -> Tensor:
        uses_batch_stats = self.training or not self.track_running_stats
        if not (uses_batch_stats and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        self.check_input(x)
        dims = (0, *range(2, x.dim()))
        xs = x.to(compute_dtype(x.dtype))
        local = torch.cat([xs.sum(dims), xs.new_full((1,), x.numel() / x.shape[1])])  # (C + 1,): sums, count
        total = _DifferentiableAllReduce.apply(local, self.process_group)
        count = total[-1].detach()
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = (total[:-1] / count).view(shape)  # (1, C, 1, ...)
        squares = _DifferentiableAllReduce.apply((xs - mean).square().sum(dims), self.process_group)
        var = (squares / count).view(shape)
        n = int(count.item())
        if n <= 1:
            raise ValueError(f"SyncBatchNorm in training needs more than 1 value per channel over all processes, got {n}")
        if self.training and self.track_running_stats:
            update_running_stats_(self.running_mean, self.running_var, mean, var, n, self.momentum,
                                  self.num_batches_tracked)
        return apply_stats(x, Moments(mean, var), self.eps, self.weight, self.bias, param_dim=1)

    @classmethod
    def from_batch_norm(cls, layer: nn.Module, process_group: Any = None) -> "SyncBatchNorm":
        """A SyncBatchNorm with ``layer``'s settings, parameters, buffers, mode and device."""
        has_bias = getattr(layer, "bias", None) is not None
        new = cls(layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats,
                  process_group, bias=has_bias or not layer.affine)
        reference = next(iter(layer.state_dict().values()), None)
        if reference is not None:
            new.to(reference.device)
        new.load_state_dict(layer.state_dict())
        if layer.affine:
            new.weight.requires_grad_(layer.weight.requires_grad)
            if has_bias:
                new.bias.requires_grad_(layer.bias.requires_grad)
        return new.train(layer.training)


def _is_plain_batch_norm(module: nn.Module) -> bool:
    if isinstance(module, (nn.SyncBatchNorm, SyncBatchNorm, nlnn.BatchRenorm, nlnn.GhostBatchNorm)):
        return False
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, nlnn.BatchNorm))


def convert_sync_batchnorm(model: nn.Module, device_type: str = "cpu", process_group: Any = None) -> nn.Module:
    """Turn every plain BatchNorm (torch.nn's and normlab's) into a synchronised one, in place.

    Args:
        model: the model (before wrapping it in DistributedDataParallel).
        device_type: ``"cuda"`` uses ``torch.nn.SyncBatchNorm`` (through :func:`normlab.surgery.convert_sync_bn`);
            anything else uses this module's :class:`SyncBatchNorm`.
        process_group: the group to synchronise over.

    Returns:
        The model (a new object only when ``model`` itself is a BatchNorm layer). Batch Renormalization and Ghost
        BatchNorm are left alone: their training statistics are not plain batch statistics.
    """
    if device_type == "cuda":
        from normlab.surgery import convert_sync_bn

        return convert_sync_bn(model, process_group).model
    if _is_plain_batch_norm(model):
        return SyncBatchNorm.from_batch_norm(model, process_group)
    for name, child in model.named_children():
        setattr(model, name, convert_sync_batchnorm(child, device_type, process_group))
    return model
