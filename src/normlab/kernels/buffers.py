r"""Output buffers for the CPU kernels: a small caching pool, so a repeated call does not pay for fresh pages.

A normalization moves few bytes per element, so on the CPU the cost of *getting* a large output tensor can
exceed the kernel: torch's CPU allocator hands every block over 32 MiB (and, after a free, many smaller ones)
back to the operating system, and the next call pays one page fault per 4 KiB page when it first writes the
block. Measured on the 2-core machine of ``docs/benchmarks.md``: allocating and filling a 32 MiB tensor took
about 9 ms against 0.6 ms to fill one already in hand — five times the LayerNorm kernel itself.

This module keeps freed output blocks and hands them out again, as PyTorch's CUDA caching allocator does:

- a block is a NumPy byte array (NumPy asks the kernel for transparent huge pages on large blocks, so even a
  fresh block faults 2 MiB at a time); the tensor handed out is a view of it made by :func:`torch.from_numpy`;
- a block comes back to the pool only when the last tensor (or view) on its storage is gone — the storage holds
  the NumPy view, and a ``weakref.finalize`` on that view returns the block — so a block is never reused while
  anything can still read it;
- at most ``NORMLAB_KERNEL_POOL_MB`` MiB (default 1024) of idle blocks are kept; :func:`empty_cache` frees them,
  and ``NORMLAB_KERNEL_POOL_MB=0`` turns the pool off (every output is then a fresh block).

Blocks under 1 MiB come from torch's own allocator, whose heap reuses them. Larger ones are not reliably
reused there: glibc maps blocks over its threshold (at most 32 MiB) on their own, and gives the top of its heap
back to the system once more than twice that threshold is free — which a forward+backward pass over a few 8 MiB
tensors already does, so each call faults its outputs in again. Handing out a pooled block costs about 6 µs.
"""

from __future__ import annotations

import collections
import math
import os
import threading
import weakref

import numpy as np
import torch
from torch import Tensor

from normlab.kernels.storage import KERNEL_NUMPY_DTYPE, as_kernel_array

_MIN_POOLED_BYTES = 1 << 20
_ALIGN = 4096


def _cap_from_env() -> int:
    raw = os.environ.get("NORMLAB_KERNEL_POOL_MB", "1024")
    try:
        return max(0, int(float(raw) * (1 << 20)))
    except ValueError as error:
        raise ValueError(f"NORMLAB_KERNEL_POOL_MB must be a number of MiB, got {raw!r}") from error


class OutputPool:
    """A cache of freed output blocks, keyed by size; thread-safe.

    Args:
        max_idle_bytes: the most bytes of idle blocks kept for reuse (``0`` disables reuse).
        min_pooled_bytes: smaller outputs come from ``torch.empty``.

    Examples:
        >>> pool = OutputPool(max_idle_bytes=64 << 20, min_pooled_bytes=1 << 20)
        >>> a = pool.empty((512, 1024), torch.float32)
        >>> address = a.data_ptr()
        >>> del a                                   # the block goes back to the pool ...
        >>> pool.empty((1024, 512), torch.float32).data_ptr() == address   # ... and is handed out again
        True
    """

    def __init__(self, max_idle_bytes: int, min_pooled_bytes: int = _MIN_POOLED_BYTES) -> None:
        self.max_idle_bytes = max_idle_bytes
        self.min_pooled_bytes = min_pooled_bytes
        self._idle: dict[int, list[np.ndarray]] = collections.defaultdict(list)
        self._idle_bytes = 0
        # Finalizers may run at any moment (even inside ``empty``), so they only append here; deque.append is
        # atomic and takes no lock.
        self._returned: collections.deque[np.ndarray] = collections.deque()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """An uninitialised contiguous CPU tensor of ``shape`` and ``dtype``, from the pool when large."""
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.min_pooled_bytes or self.max_idle_bytes == 0:
            return torch.empty(shape, dtype=dtype)
        view = self._block(nbytes)[:nbytes]
        weakref.finalize(view, self._returned.append, view.base).atexit = False
        return torch.from_numpy(view).view(dtype).view(shape)

    def empty_like_dense(self, like: Tensor) -> tuple[Tensor, np.ndarray]:
        """An uninitialised tensor with ``like``'s shape, dtype and strides (``like`` must be dense: contiguous or
        channels-last), and the kernel array on the same memory (:func:`~normlab.kernels.storage.
        as_kernel_array`'s type, same shape and strides); from the pool when large."""
        nbytes = like.numel() * like.element_size()
        if nbytes < self.min_pooled_bytes or self.max_idle_bytes == 0:
            out = torch.empty_strided(like.shape, like.stride(), dtype=like.dtype)
            return out, as_kernel_array(out)
        np_dtype = KERNEL_NUMPY_DTYPE[like.dtype]
        strides = tuple(s * like.element_size() for s in like.stride())
        array = np.ndarray(like.shape, np_dtype, buffer=self._block(nbytes), strides=strides)
        # the tensor holds ``array``: the block comes back when the last tensor on it is gone
        weakref.finalize(array, self._returned.append, array.base).atexit = False
        out = torch.from_numpy(array)
        return (out if out.dtype == like.dtype else out.view(like.dtype)), array

    def _block(self, nbytes: int) -> np.ndarray:
        """A free block of at least ``nbytes`` (rounded up to the page): an idle one of that size, or a new one."""
        size = -(-nbytes // _ALIGN) * _ALIGN
        with self._lock:
            self._take_returned()
            blocks = self._idle.get(size)
            if blocks:
                block = blocks.pop()
                self._idle_bytes -= size
                self.hits += 1
            else:
                block = None
                self.misses += 1
        if block is None:
            block = np.empty(size, dtype=np.uint8)
        return block

    def _take_returned(self) -> None:
        while self._returned:
            block = self._returned.popleft()
            if self._idle_bytes + block.size > self.max_idle_bytes:
                continue  # over the cap: let this block go back to the system
            self._idle[block.size].append(block)
            self._idle_bytes += block.size

    def clear(self) -> None:
        """Free every idle block."""
        with self._lock:
            self._returned.clear()
            self._idle.clear()
            self._idle_bytes = 0

    def idle_bytes(self) -> int:
        """Bytes held in idle blocks (after taking back the blocks freed since the last call)."""
        with self._lock:
            self._take_returned()
            return self._idle_bytes


_pool = OutputPool(_cap_from_env())


def empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An uninitialised contiguous CPU tensor for a kernel output, reusing a freed block when one fits."""
    return _pool.empty(tuple(int(s) for s in shape), dtype)


def empty_like_dense(like: Tensor) -> tuple[Tensor, np.ndarray]:
    """A kernel output shaped, typed and laid out like ``like`` (contiguous or channels-last), and the kernel
    array on its memory, reusing a freed block when one fits.

    Examples:
        >>> x = torch.zeros(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
        >>> y, array = empty_like_dense(x)
        >>> y.is_contiguous(memory_format=torch.channels_last), array.shape, array.strides == tuple(
        ...     4 * s for s in x.stride())
        (True, (2, 3, 4, 5), True)
    """
    return _pool.empty_like_dense(like)


def empty_cache() -> None:
    """Free every idle output block held by the kernels' pool.

    Examples:
        >>> empty_cache(); pool_stats()["idle_bytes"]
        0
    """
    _pool.clear()


def pool_stats() -> dict[str, int]:
    """The pool's idle bytes, its cap, and how many large outputs were reused (hits) or freshly made (misses)."""
    return {
        "idle_bytes": _pool.idle_bytes(),
        "max_idle_bytes": _pool.max_idle_bytes,
        "hits": _pool.hits,
        "misses": _pool.misses,
    }


def set_pool_limit(max_idle_bytes: int) -> int:
    """Set the most idle bytes kept (``0`` turns reuse off); returns the previous limit.

    Examples:
        >>> previous = set_pool_limit(0); set_pool_limit(previous)
        0
    """
    if max_idle_bytes < 0:
        raise ValueError(f"the pool limit must be >= 0 bytes, got {max_idle_bytes}")
    previous = _pool.max_idle_bytes
    _pool.max_idle_bytes = int(max_idle_bytes)
    if max_idle_bytes == 0:
        _pool.clear()
    return previous
