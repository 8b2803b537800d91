r"""Output buffers for the CPU kernels: a small caching pool, so a repeated call does not pay for fresh pages.

A normalization moves few bytes per element, so on the CPU the cost of *getting* a large output tensor can
exceed the kernel: torch's CPU allocator hands every block over 32 MiB (and, after a free, many smaller ones)
back to the operating system, and the next call pays one page fault per 4 KiB page when it first writes the
block. Measured on the 2-core machine of ``docs/benchmarks.md``: allocating and filling a 32 MiB tensor took
about 9 ms against 0.6 ms to fill one already in hand — five times the LayerNorm kernel itself.

This module keeps output blocks and hands them out again, as PyTorch's CUDA caching allocator does:

- a block is a NumPy array with the output's shape, strides and (kernel) dtype, on memory of its own; the tensor
  handed out is :func:`torch.from_numpy` of it, and the kernel writes to its address;
- on Linux a block of 2 MiB or more is a private anonymous mapping of its own, 2 MiB-aligned, for which the
  kernel is asked for transparent huge pages (``madvise(MADV_HUGEPAGE)``, :func:`mapped_buffer`). A kernel streams
  through its output, and on 4 KiB pages it pays a TLB miss every 4 KiB and its hardware prefetch stops at each
  page boundary. Measured here (``benchmarks/huge_pages.py``): GroupNorm NCHW fp32 forward+backward kernels
  took 4–9 % less time with their outputs on 2 MiB pages than on 4 KiB pages, and 8–12 % less with their inputs
  there too. ``np.empty`` alone does not promise that: once glibc has raised its mapping threshold it carves a
  large block out of its heap, whose pages are already 4 KiB ones;
- a tensor made by :func:`torch.from_numpy` holds a reference to its array until the last tensor or view on
  that storage is gone, and a NumPy view of the array holds its memory buffer; so a block whose array and
  buffer have no references but the pool's own is free. The pool checks that (``sys.getrefcount``) when it
  looks for a block: nothing runs when a tensor is freed, and a block is never handed out while anything can
  still read it;
- at most ``NORMLAB_KERNEL_POOL_MB`` MiB (default 1024) of blocks are held, in use or idle; past that, idle
  blocks are let go, or the output is an ordinary torch allocation. :func:`empty_cache` frees the
  idle blocks, and ``NORMLAB_KERNEL_POOL_MB=0`` turns the pool off (every output is then a fresh block).

Blocks under 1 MiB come from torch's own allocator, whose heap reuses them. Larger ones are not reliably
reused there: glibc maps blocks over its threshold (at most 32 MiB) on their own, and gives the top of its heap
back to the system once more than twice that threshold is free — which a forward+backward pass over a few 8 MiB
tensors already does, so each call faults its outputs in again. Handing out a pooled block costs about 2 µs.

**Scratch arrays** (:func:`float32_array`: the per-row or per-position statistics a forward keeps for its backward)
come from the pool from 64 KiB up, as NumPy arrays. glibc checks whether to trim its heap only when a chunk of
64 KiB or more is freed (``FASTBIN_CONSOLIDATION_THRESHOLD``), and the trim is paid by whoever frees that chunk:
the system call that gives back every free page at the top of the heap — megabytes when another library has just
freed a large tensor there. Measured in a replay of ``normlab bench``'s rounds with each part of the call timed
(``docs/benchmarks.md``, "What changed at ``2f23306``"): a channels-last LayerNorm2d forward at 32×64×32×32 freed
its 256 KiB statistics right after torch.nn's permuted LayerNorm had freed its 8 MiB output, and that ``free`` took
1.3–1.6 ms — three times the kernel — in half the rounds (``benchmarks/heap_trim.py`` times the comparison with and
without pooling). A pooled array is never freed, so no call of normlab's pays for a trim another allocation set up.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading

import numpy as np
import torch
from torch import Tensor

from normlab.kernels.storage import KERNEL_NUMPY_DTYPE

_MIN_POOLED_BYTES = 1 << 20
_MIN_POOLED_ARRAY_BYTES = 64 << 10
"""Scratch arrays from this size up come from the pool: glibc considers trimming its heap when it frees a chunk of
64 KiB or more (its ``FASTBIN_CONSOLIDATION_THRESHOLD``), so smaller ones never pay for a trim."""
HUGE_PAGE = 2 << 20
"""Blocks of at least this many bytes get a mapping of their own, aligned to it, with huge pages asked for."""
_HUGE_ADVICE = getattr(mmap, "MADV_HUGEPAGE", None)  # Linux only; elsewhere every block is ``np.empty``
_PRIVATE_ANONYMOUS = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)


def mapped_buffer(nbytes: int, advice: int) -> np.ndarray:
    """``nbytes`` as a uint8 array on a private anonymous mapping of its own (Linux), seen from its first 2 MiB
    boundary (the mapping is ``nbytes + HUGE_PAGE`` long) and advised ``madvise(advice)`` before its first touch; a
    kernel that refuses the advice (no transparent huge pages) leaves it on small pages. The mapping is unmapped when
    the last array on it is freed."""
    mapping = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=_PRIVATE_ANONYMOUS)
    try:
        mapping.madvise(advice)
    except OSError:
        pass
    whole = np.frombuffer(mapping, np.uint8)
    start = -whole.ctypes.data % HUGE_PAGE
    return whole[start:start + nbytes]


def _new_buffer(nbytes: int, huge: bool) -> np.ndarray:
    """Fresh memory for a block: with ``huge`` (and Linux), a :func:`mapped_buffer` advised ``MADV_HUGEPAGE``;
    else ``np.empty``."""
    if huge and _HUGE_ADVICE is not None:
        return mapped_buffer(nbytes, _HUGE_ADVICE)
    return np.empty(nbytes, np.uint8)


def _new_array(shape, np_dtype, strides, nbytes: int, huge: bool | None = None) -> np.ndarray:
    """A block: an array of ``shape`` and ``strides`` on a fresh buffer of ``nbytes`` (its ``base``, or the base
    of a huge-page buffer, which NumPy gives its views too). ``huge``: whether to map it on its own with huge pages
    (default: from :data:`HUGE_PAGE` bytes up)."""
    huge = nbytes >= HUGE_PAGE if huge is None else huge
    return np.ndarray(shape, np_dtype, buffer=_new_buffer(nbytes, huge), strides=strides)


def _idle_refs() -> tuple[int, int]:
    """``sys.getrefcount`` of a block's array and of its ``base`` when only the pool's list holds the array
    (measured, as the counts differ between Python builds), for a buffer from ``np.empty`` and a mapped one."""
    counts = set()
    for huge in (False, True):
        held = [_new_array((1,), np.float32, (4,), 4, huge)]
        counts.add((sys.getrefcount(held[0]), sys.getrefcount(held[0].base)))
    if len(counts) != 1:
        raise RuntimeError(f"output pool: idle reference counts differ between kinds of block: {counts}")
    return counts.pop()


_IDLE_REFS = _idle_refs()


def _is_idle(arrays: list[np.ndarray], i: int) -> bool:
    """Whether nothing but the pool refers to block ``i``: no tensor (which holds the array) and no NumPy view
    (which holds the buffer)."""
    return (sys.getrefcount(arrays[i]), sys.getrefcount(arrays[i].base)) == _IDLE_REFS


def _cap_from_env() -> int:
    raw = os.environ.get("NORMLAB_KERNEL_POOL_MB", "1024")
    try:
        return max(0, int(float(raw) * (1 << 20)))
    except ValueError as error:
        raise ValueError(f"NORMLAB_KERNEL_POOL_MB must be a number of MiB, got {raw!r}") from error


def _nbytes(shape: tuple[int, ...], itemsize: int) -> int:
    nbytes = itemsize
    for size in shape:
        nbytes *= size
    return nbytes


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


class OutputPool:
    """A cache of output blocks, keyed by shape, strides and dtype; thread-safe.

    Args:
        max_bytes: the most bytes of blocks held, in use or idle (``0`` disables reuse).
        min_pooled_bytes: smaller outputs come from ``torch.empty``.
        min_pooled_array_bytes: smaller scratch arrays (:meth:`float32_array`) come from ``np.empty``.

    Examples:
        >>> pool = OutputPool(max_bytes=64 << 20, min_pooled_bytes=1 << 20)
        >>> a = pool.empty((512, 1024), torch.float32)
        >>> address = a.data_ptr()
        >>> del a                                   # the block is free again ...
        >>> pool.empty((512, 1024), torch.float32).data_ptr() == address   # ... and is handed out again
        True
    """

    def __init__(
        self, max_bytes: int, min_pooled_bytes: int = _MIN_POOLED_BYTES,
        min_pooled_array_bytes: int = _MIN_POOLED_ARRAY_BYTES,
    ) -> None:
        self.max_bytes = max_bytes
        self.min_pooled_bytes = min_pooled_bytes
        self.min_pooled_array_bytes = min_pooled_array_bytes
        self._arrays: dict[tuple, list[np.ndarray]] = {}  # (shape, strides, dtype) → blocks, oldest first
        self._held_bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """An uninitialised contiguous CPU tensor of ``shape`` and ``dtype``, from the pool when large."""
        shape = tuple(shape)
        return self._take(shape, _contiguous_strides(shape), dtype, _nbytes(shape, dtype.itemsize))

    def empty_like_dense(self, like: Tensor) -> Tensor:
        """An uninitialised tensor with ``like``'s shape, dtype and strides (``like`` must be dense: contiguous or
        channels-last); from the pool when large."""
        return self._take(like.shape, like.stride(), like.dtype, like.nbytes)

    def float32_array(self, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialised contiguous float32 NumPy array of ``shape`` (a kernel's scratch or statistics), from the
        pool when it has ``min_pooled_array_bytes`` or more; the block is free again once nothing refers to the
        array or a view of it."""
        shape = tuple(shape)
        nbytes = _nbytes(shape, 4)
        if nbytes >= self.min_pooled_array_bytes and self.max_bytes != 0:
            array = self._block((shape, _contiguous_strides(shape), torch.float32), nbytes)
            if array is not None:
                return array
        return np.empty(shape, np.float32)

    def _take(self, shape, strides, dtype: torch.dtype, nbytes: int) -> Tensor:
        if nbytes >= self.min_pooled_bytes and self.max_bytes != 0:
            array = self._block((shape, strides, dtype), nbytes)  # torch.Size hashes and compares as a tuple
            if array is not None:
                out = torch.from_numpy(array)  # holds ``array`` while any tensor on it lives
                return out if out.dtype == dtype else out.view(dtype)
        return torch.empty_strided(shape, strides, dtype=dtype)

    def _block(self, key: tuple, nbytes: int) -> np.ndarray | None:
        """An idle block for ``key`` or a new one; ``None`` when a new one would go over the cap with every block in
        use (the caller then makes an ordinary allocation). The caller's reference keeps it from looking idle."""
        with self._lock:
            array = self._idle_block(key)
            if array is not None:
                self.hits += 1
                return array
            self.misses += 1
            return self._new_block(key, nbytes)

    def _idle_block(self, key: tuple) -> np.ndarray | None:
        arrays = self._arrays.get(key, ())
        for i in range(len(arrays)):
            if _is_idle(arrays, i):
                return arrays[i]
        return None

    def _new_block(self, key: tuple, nbytes: int) -> np.ndarray | None:
        """A new block for ``key``, held by the pool if it fits under the cap (idle blocks are let go to make
        room); ``None`` when it does not fit."""
        if self._held_bytes + nbytes > self.max_bytes:
            self._release_idle(until_free=nbytes)
            if self._held_bytes + nbytes > self.max_bytes:
                return None
        shape, strides, dtype = key
        itemsize = dtype.itemsize
        array = _new_array(shape, KERNEL_NUMPY_DTYPE[dtype], tuple(s * itemsize for s in strides), nbytes)
        self._arrays.setdefault(key, []).append(array)
        self._held_bytes += nbytes
        return array

    def _release_idle(self, until_free: int | None = None) -> None:
        """Let idle blocks go until ``until_free`` more bytes fit under the cap (all of them if ``None``)."""
        for key in list(self._arrays):
            arrays = self._arrays[key]
            for i in reversed(range(len(arrays))):
                if until_free is not None and self._held_bytes + until_free <= self.max_bytes:
                    return
                if _is_idle(arrays, i):
                    self._held_bytes -= arrays.pop(i).nbytes
            if not arrays:
                del self._arrays[key]

    def clear(self) -> None:
        """Free every idle block (blocks in use stay held and are reused once free)."""
        with self._lock:
            self._release_idle()

    def forget(self) -> None:
        """Drop every block, idle or in use (a block in use is freed by its last tensor)."""
        with self._lock:
            self._arrays.clear()
            self._held_bytes = 0

    def idle_bytes(self) -> int:
        """Bytes held in idle blocks."""
        with self._lock:
            return sum(arrays[i].nbytes for arrays in self._arrays.values() for i in range(len(arrays))
                       if _is_idle(arrays, i))

    def held_bytes(self) -> int:
        """Bytes held in blocks, in use or idle."""
        return self._held_bytes


_pool = OutputPool(_cap_from_env())


def empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An uninitialised contiguous CPU tensor for a kernel output, reusing a free block when one fits."""
    return _pool.empty(shape, dtype)


def float32_array(*shape: int) -> np.ndarray:
    """An uninitialised float32 NumPy array for a kernel's statistics or scratch, reusing a free block from 64 KiB
    up (see the module doc: freeing it would make its call pay for trimming the heap).

    Examples:
        >>> stats = float32_array(2, 32768)         # 256 KiB: pooled
        >>> address = stats.ctypes.data
        >>> del stats
        >>> float32_array(2, 32768).ctypes.data == address
        True
    """
    return _pool.float32_array(shape)


def empty_like_dense(like: Tensor) -> Tensor:
    """A kernel output shaped, typed and laid out like ``like`` (contiguous or channels-last), reusing a freed
    block when one fits.

    Examples:
        >>> x = torch.zeros(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
        >>> y = empty_like_dense(x)
        >>> y.is_contiguous(memory_format=torch.channels_last), y.stride() == x.stride(), y.dtype
        (True, True, torch.float32)
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
    """The pool's held and idle bytes, its cap, and how many large outputs were reused (hits) or freshly made
    (misses)."""
    return {
        "held_bytes": _pool.held_bytes(),
        "idle_bytes": _pool.idle_bytes(),
        "max_bytes": _pool.max_bytes,
        "hits": _pool.hits,
        "misses": _pool.misses,
    }


def set_pool_limit(max_bytes: int) -> int:
    """Set the most bytes of blocks held (``0`` turns reuse off and drops every block); returns the previous
    limit.

    Examples:
        >>> previous = set_pool_limit(0); set_pool_limit(previous)
        0
    """
    if max_bytes < 0:
        raise ValueError(f"the pool limit must be >= 0 bytes, got {max_bytes}")
    previous = _pool.max_bytes
    _pool.max_bytes = int(max_bytes)
    if max_bytes == 0:
        _pool.forget()
    else:
        _pool.clear()
    return previous
