"""Where fast kernels plug into the core.

Every functional op of :mod:`normlab.core.functional` first asks :func:`try_fast_path` whether a registered
kernel handles this call (right device, dtype, shape and memory format). A kernel returns its result, or
``None`` to decline, and the op falls back to the pure-torch reference path. Kernels register themselves with
:func:`register_fast_path`; :mod:`normlab.kernels` is imported lazily on the first call, so importing the core
stays cheap and a missing compiler simply means no fast path.

:func:`reference_only` turns the fast paths off inside a ``with`` block; tests use it to compare both paths.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.autograd import forward_ad

FastPath = Callable[..., Any]

_registry: dict[str, list[FastPath]] = {}
_state = threading.local()
_kernels_loaded = False


def register_fast_path(op: str, kernel: FastPath) -> None:
    """Register ``kernel`` for the core op named ``op``; it is called with the op's arguments and returns
    the op's result, or ``None`` when it does not handle this call."""
    _registry.setdefault(op, []).append(kernel)


def _load_kernels() -> None:
    global _kernels_loaded
    _kernels_loaded = True
    try:
        import normlab.kernels  # noqa: F401  (registers the available fast paths)
    except ImportError:
        pass


def fast_paths_enabled() -> bool:
    """Whether fast paths are consulted in this thread (``False`` inside :func:`reference_only`)."""
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def reference_only() -> Iterator[None]:
    """Run the pure-torch reference path only, in this thread, inside the ``with`` block."""
    previous = fast_paths_enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = previous


def try_fast_path(op: str, *args: Any, **kwargs: Any) -> Any:
    """The first registered kernel's result for ``op``, or ``None`` when none applies.

    Inside ``torch.compile`` tracing the reference path runs, so the compiler sees plain torch ops it can fuse
    instead of an opaque kernel call that would break its graph. So it does under forward-mode AD (a
    ``forward_ad.dual_level``), whose tangents only the reference path's torch ops carry.
    """
    if not fast_paths_enabled() or torch.compiler.is_compiling() or forward_ad._current_level >= 0:
        return None
    if not _kernels_loaded:
        _load_kernels()
    for kernel in _registry.get(op, ()):
        result = kernel(*args, **kwargs)
        if result is not None:
            return result
    return None
