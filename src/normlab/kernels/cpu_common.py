"""What every CPU fast path shares: when to decline a call, how many threads to use, and the double-backward
fallback.

A fast path handles a call only when it can reproduce the core exactly up to rounding: a plain strided CPU
tensor of float32, bfloat16 or float16 with the layout the kernel reads, parameters of a supported dtype and
size, and no tracing (``torch.compile``), tensor subclass or functorch transform in the way. Anything else is
declined (``None``) and the core's reference path runs.

**Two thread pools.** torch runs its own OpenMP runtime; Numba's ``omp`` threading layer loads the system's.
An OpenMP worker spins for a while after each parallel region, so with both pools active each steals cores
from the other right after a switch (measured here: an 8192×1024 copy took 8–12 ms instead of 2 ms when
interleaved with the kernels). Numba's pool is therefore started with ``OMP_WAIT_POLICY=PASSIVE`` — its
workers sleep between kernels — unless the user set a policy; the variable is restored at once, so torch and
child processes see the environment unchanged.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import numba
import numpy as np
import torch
from torch import Tensor
from torch.overrides import has_torch_function

from normlab.core.dispatch import reference_only
from normlab.kernels.numba_dtypes import KERNEL_VIEW

SUPPORTED_DTYPES = tuple(KERNEL_VIEW)


def _start_numba_threads() -> None:
    """Start Numba's thread pool with passive (sleeping) workers; see the module doc."""
    previous = os.environ.get("OMP_WAIT_POLICY")
    if previous is None:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        numba.get_num_threads()  # loads the threading layer, whose OpenMP runtime reads the policy now
    finally:
        if previous is None:
            os.environ.pop("OMP_WAIT_POLICY", None)


_start_numba_threads()
_is_wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)


def plain_cpu_tensor(x: object) -> bool:
    """Whether ``x`` is an ordinary strided CPU tensor of a dtype the kernels store."""
    return (
        isinstance(x, Tensor)
        and x.device.type == "cpu"
        and x.layout == torch.strided
        and x.dtype in SUPPORTED_DTYPES
        and not has_torch_function((x,))
        and not (_is_wrapped is not None and _is_wrapped(x))
    )


def tracing() -> bool:
    """Whether torch.compile / FX is tracing: the reference path traces, a Numba call would break the graph."""
    return torch.compiler.is_compiling()


def params_ok(size: int, *params: Tensor | None) -> bool:
    """Whether each given parameter is a plain CPU tensor with ``size`` elements (``None`` is fine)."""
    return all(p is None or (plain_cpu_tensor(p) and p.numel() == size) for p in params)


def as_float32(p: Tensor | None, size: int, fill: float) -> Tensor:
    """``p`` flattened to a contiguous float32 vector, or ``size`` copies of ``fill`` when ``p`` is ``None``."""
    if p is None:
        return torch.from_numpy(_constant(size, fill))
    if p.dtype == torch.float32 and p.is_contiguous():
        return p.detach().view(-1)
    return p.detach().reshape(-1).to(torch.float32).contiguous()


def param_array(p: Tensor | None, size: int, fill: float) -> np.ndarray:
    """:func:`as_float32` as the NumPy array a kernel takes (kernels only read it: the constants are shared)."""
    if p is None:
        return _constant(size, fill)
    return as_float32(p, size, fill).numpy()


@functools.lru_cache(maxsize=64)
def _constant(size: int, fill: float) -> np.ndarray:
    return np.full(size, fill, dtype=np.float32)


def needs_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd will record this call: grad mode is on and a given tensor requires a gradient."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


SMALL_WORK = 1 << 16
"""Below this many elements a kernel runs on the calling thread alone: waking the other threads costs more."""


def threads(work: int | None = None) -> int:
    """Use as many threads as torch does (``torch.set_num_threads``), up to Numba's pool, or one thread for
    fewer than :data:`SMALL_WORK` elements of ``work``; returns the count."""
    count = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if work is not None and work < SMALL_WORK:
        count = 1
    if numba.get_num_threads() != count:
        numba.set_num_threads(count)
    return count


def reduce_partials(partials: Tensor, like: Tensor | None) -> Tensor | None:
    """Sum per-chunk float32 partials ``(chunks, n)`` into a gradient shaped and typed like ``like``."""
    if like is None:
        return None
    return partials.sum(0).reshape(like.shape).to(like.dtype)


def differentiable_grads(
    reference: Callable[..., Tensor | tuple[Tensor, ...]],
    inputs: Sequence[Tensor | None],
    needs: Sequence[bool],
    grads: Sequence[Tensor | None],
) -> tuple[Tensor | None, ...]:
    """Gradients recomputed through the core's reference path, keeping the graph (``create_graph=True``).

    Used by a kernel's backward when grad mode is on during backward, i.e. for double backward (gradient
    penalties): the kernels' own backward is not differentiable, the reference path is.
    """
    with reference_only(), torch.enable_grad():
        outputs = reference(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None]
    wanted = [t for t, need in zip(inputs, needs) if need and isinstance(t, Tensor)]
    found = torch.autograd.grad(
        [o for o, _ in pairs], wanted, [g for _, g in pairs], create_graph=True, allow_unused=True
    )
    it = iter(found)
    return tuple(next(it) if need and isinstance(t, Tensor) else None for t, need in zip(inputs, needs))
