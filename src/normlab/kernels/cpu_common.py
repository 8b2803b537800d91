"""What every CPU fast path shares: when to decline a call, how many threads to use, and the double-backward
fallback.

A fast path handles a call only when it can reproduce the core exactly up to rounding: a plain strided CPU
tensor of float32, bfloat16 or float16 with the layout the kernel reads, parameters of a supported dtype and
size, and no tensor subclass or functorch transform in the way. Anything else is declined (``None``) and the
core's reference path runs; while ``torch.compile`` traces, :func:`normlab.core.dispatch.try_fast_path` does not
call the fast paths at all.

**Per-call cost.** At common sizes a fast path's Python is a real share of a call, and it runs with cold caches
(the kernel before it streamed megabytes through them), where every distinct torch or NumPy call costs several
µs. So the glue makes few of them: the kernels get addresses, not NumPy views (:func:`param_tensor`,
:mod:`~normlab.kernels.numba_memory`), :func:`params_ok` checks an ``nn.Parameter`` with fewer calls,
:func:`threads` tells Numba only about a change, and :func:`apply` skips ``Function.apply``'s Python layer.

**One thread team, usually.** Numba's ``omp`` threading layer calls libgomp's ``GOMP_parallel``. torch's wheel ships
its own libgomp under the same soname and loads it first (normlab imports torch before Numba), so the dynamic
linker binds Numba's calls to torch's copy: the kernels run on torch's thread team, under the wait policy torch's
libgomp read at import (``benchmarks/parallel_region.py`` shows both). Where Numba gets an OpenMP runtime of its
own (a torch built against another one), the two teams' workers would spin after each parallel region and steal
cores from each other right after a switch; for that case Numba's pool is started with
``OMP_WAIT_POLICY=PASSIVE`` — its workers sleep between kernels — unless the user set a policy; the variable is
restored at once, so torch and child processes see the environment unchanged.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence

import numba
import numpy as np
import torch
from torch import Tensor
from torch.nn import Parameter
from torch.overrides import has_torch_function

from normlab.core.dispatch import reference_only
from normlab.core.stats import count_batch_, update_running_stats_
from normlab.kernels import numba_batch
from normlab.kernels.storage import KERNEL_SCALAR, KERNEL_VIEW

SUPPORTED_DTYPES = tuple(KERNEL_VIEW)


def _start_numba_threads() -> None:
    """Start Numba's threading layer; an OpenMP runtime of its own starts with passive (sleeping) workers (torch's,
    which Numba usually shares, read its policy when torch was imported); see the module doc."""
    previous = os.environ.get("OMP_WAIT_POLICY")
    if previous is None:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        numba.get_num_threads()  # loads the threading layer; a runtime loaded now reads the policy
    finally:
        if previous is None:
            os.environ.pop("OMP_WAIT_POLICY", None)


_start_numba_threads()
_is_wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)


def plain_cpu_tensor(x: object) -> bool:
    """Whether ``x`` is an ordinary strided CPU tensor of a dtype the kernels store, with its values at its
    address (:func:`values_at_address`)."""
    return (
        isinstance(x, Tensor)
        and x.is_cpu
        and x.layout == torch.strided
        and x.dtype in SUPPORTED_DTYPES
        and values_at_address(x)
        and not has_torch_function((x,))
        and not (_is_wrapped is not None and _is_wrapped(x))
    )


def values_at_address(t: Tensor) -> bool:
    """Whether ``t``'s memory at ``t.data_ptr()`` holds its values, as a kernel entry reads them: not a lazy
    negation (the negative bit of ``torch._neg_view`` or of ``.conj().imag``) and not a ZeroTensor (no memory)."""
    return not (t.is_neg() or t._is_zerotensor())


def backward_inputs_ok(x: Tensor, memory_format: torch.memory_format, *grads: Tensor | None) -> bool:
    """Whether a backward kernel can take the saved input ``x`` and the incoming gradients: ``x`` still has the
    layout the forward's kernel read (``memory_format``) and the gradients' dtype, and all have their values at
    their address. A saved-tensor hook may hand ``x`` back converted (``save_on_cpu``, casts), and autograd may pass
    a ZeroTensor; then the reference path computes the gradients."""
    if not (x.is_contiguous(memory_format=memory_format) and values_at_address(x)):
        return False
    for grad in grads:
        if grad is not None and (grad.dtype != x.dtype or not values_at_address(grad)):
            return False
    return True


def params_ok(size: int, *params: Tensor | None) -> bool:
    """Whether each given parameter is a plain CPU tensor with ``size`` elements (``None`` is fine). An
    ``nn.Parameter`` (never functorch-wrapped, no ``__torch_function__`` of its own) needs fewer checks."""
    for p in params:  # a loop, not all(...): this runs on every call, and a generator costs more
        if p is None:
            continue
        if type(p) is Parameter:
            if not (p.is_cpu and p.dtype in SUPPORTED_DTYPES and p.layout == torch.strided and p.numel() == size):
                return False
        elif not (plain_cpu_tensor(p) and p.numel() == size):
            return False
    return True


def param_tensor(p: Tensor | None, size: int, fill: float) -> Tensor:
    """``p`` as a contiguous float32 tensor, whose address a kernel entry reads (``p`` itself when it is one: no
    copy), or a shared tensor of ``size`` copies of ``fill`` when ``p`` is ``None``."""
    if p is None:
        return _constant_tensor(size, fill)
    if p.dtype == torch.float32 and p.is_contiguous() and not p.is_neg():
        return p
    return p.detach().resolve_neg().to(torch.float32).contiguous()


@functools.lru_cache(maxsize=64)
def _constant_tensor(size: int, fill: float) -> Tensor:
    return torch.full((size,), fill, dtype=torch.float32)


def param_array(p: Tensor | None, size: int, fill: float) -> np.ndarray:
    """:func:`param_tensor` as a float32 NumPy vector of ``size`` values (no copy when ``p`` is already one), for
    the few per-channel values the glue computes with NumPy. Only read it: the constants are shared."""
    return param_tensor(p, size, fill).detach().numpy().reshape(-1)


def needs_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd will record this call: grad mode is on and a given tensor requires a gradient."""
    if torch.is_grad_enabled():
        for t in tensors:
            if t is not None and t.requires_grad:
                return True
    return False


_LAST_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}


def channel_kind(x: Tensor) -> str | None:
    """How a per-channel kernel reads an ``(N, C, *)`` input: ``"first"`` when it is contiguous, ``"last"`` when
    it is channels-last (4-D or 5-D); ``None`` for any other layout or an input the kernels do not take (the
    reference path runs).

    Examples:
        >>> channel_kind(torch.zeros(2, 3, 4, 5)), channel_kind(torch.zeros(2, 3, 4, 5).transpose(2, 3))
        ('first', None)
        >>> channel_kind(torch.zeros(2, 3, 4, 5).contiguous(memory_format=torch.channels_last))
        'last'
    """
    if not plain_cpu_tensor(x) or x.dim() < 2 or x.numel() == 0:
        return None
    if x.is_contiguous():
        return "first"
    fmt = _LAST_FORMATS.get(x.dim())
    return "last" if fmt is not None and x.is_contiguous(memory_format=fmt) else None


def dense_format(x: Tensor) -> torch.memory_format:
    """The memory format of an input :func:`channel_kind` accepted."""
    return torch.contiguous_format if x.is_contiguous() else _LAST_FORMATS[x.dim()]


def param_grad(grad: np.ndarray, like: Tensor | None) -> Tensor | None:
    """A float32 per-channel gradient (NumPy) as a tensor shaped and typed like its parameter ``like``."""
    if like is None:
        return None
    out = torch.from_numpy(grad)
    if like.dtype != torch.float32:
        out = out.to(like.dtype)
    return out if out.shape == like.shape else out.view(like.shape)


def fold_running_stats(running_mean, running_var, stats: np.ndarray, count: int, momentum, num_batches_tracked):
    """:func:`~normlab.core.stats.update_running_stats_` with the batch's float32 ``stats`` ``(2, C)`` (mean,
    biased variance), done in place by :func:`~normlab.kernels.numba_batch.fold_running_stats` when the buffers
    are plain contiguous CPU tensors of one dtype (else by the core's torch ops)."""
    in_place = (
        running_mean is not None and running_var is not None
        and (momentum is not None or num_batches_tracked is not None)
        and params_ok(stats.shape[1], running_mean, running_var)
        and running_mean.is_contiguous() and running_var.is_contiguous()
        and running_mean.dtype == running_var.dtype
        and not (running_mean.requires_grad or running_var.requires_grad)
    )
    if not in_place:
        mean, var = torch.from_numpy(stats[0]), torch.from_numpy(stats[1])
        update_running_stats_(running_mean, running_var, mean, var, count, momentum, num_batches_tracked)
        return
    factor = float(count_batch_(momentum, num_batches_tracked))  # momentum may be a 0-d tensor or array
    numba_batch.fold_running_stats_at(
        running_mean.data_ptr(), running_var.data_ptr(), KERNEL_SCALAR[running_mean.dtype], stats, factor,
        count / max(count - 1, 1),
    )


SMALL_WORK = 1 << 16
"""Below this many elements a kernel runs on the calling thread alone: waking the other threads costs more."""


_numba_threads = threading.local()  # the count this thread last gave Numba (Numba's setting is per thread)


def threads(work: int | None = None) -> int:
    """Use as many threads as torch does (``torch.set_num_threads``), up to Numba's pool, or one thread for
    fewer than :data:`SMALL_WORK` elements of ``work``; returns the count. Numba is told only when the count
    changes, so a count set with ``numba.set_num_threads`` in between is not noticed: the kernels follow torch."""
    count = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if work is not None and work < SMALL_WORK:
        count = 1
    if getattr(_numba_threads, "count", None) != count:
        numba.set_num_threads(count)
        _numba_threads.count = count
    return count


def apply(function: type[torch.autograd.Function], *args):
    """``function.apply(*args)`` without the Python layer of ``Function.apply``, which only matters under
    functorch transforms (then it is used). Calls from a fast path never carry functorch-wrapped tensors
    (:func:`plain_cpu_tensor`), and skipping that layer saves a few µs a call."""
    if torch._C._are_functorch_transforms_active():
        return function.apply(*args)
    return _raw_apply(function)(*args)


@functools.cache
def _raw_apply(function: type[torch.autograd.Function]):
    return super(torch.autograd.Function, function).apply


def reference_grads(
    reference: Callable[..., Tensor | tuple[Tensor, ...]],
    inputs: Sequence[Tensor | None],
    needs: Sequence[bool],
    grads: Sequence[Tensor | None],
) -> tuple[Tensor | None, ...]:
    """Gradients recomputed through the core's reference path, keeping their graph when grad mode is on.

    Used by a kernel's backward when grad mode is on during backward, i.e. for double backward (gradient
    penalties: the kernels' own backward is not differentiable, the reference path is), and when
    :func:`backward_inputs_ok` turns the saved tensors down.
    """
    create_graph = torch.is_grad_enabled()
    if not create_graph:  # only the values matter: differentiate fresh leaves
        inputs = [t.detach().requires_grad_() if need and isinstance(t, Tensor) else t for t, need in zip(inputs, needs)]
    with reference_only(), torch.enable_grad():
        outputs = reference(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None]
    wanted = [t for t, need in zip(inputs, needs) if need and isinstance(t, Tensor)]
    found = torch.autograd.grad(
        [o for o, _ in pairs], wanted, [g for _, g in pairs], create_graph=create_graph, allow_unused=True
    )
    it = iter(found)
    return tuple(next(it) if need and isinstance(t, Tensor) else None for t, need in zip(inputs, needs))
