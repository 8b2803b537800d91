"""Fast paths for the core's normalization ops: Numba kernels on the CPU, Triton kernels on CUDA GPUs.

Importing this package registers every fast path that can run here with :mod:`normlab.core.dispatch` (the
dispatcher imports it lazily on the first op call). A missing compiler only means fewer fast paths: without
Numba no CPU kernel is registered, without Triton (or without a CUDA device) no GPU kernel. Each kernel still
declines calls it does not handle (see :mod:`normlab.kernels.cpu_common`) and the core's reference path runs.

Set ``NORMLAB_KERNELS=0`` to register nothing; use :func:`normlab.core.dispatch.reference_only` to switch the
fast paths off inside a ``with`` block. :data:`REGISTERED` lists what was registered, as ``(op, backend)``.

Numba keeps compiled kernels on disk, but it only notices edits to the file that defines a kernel, not to the
helpers it inlines from other files. So the cache lives in a folder named after a hash of every ``numba_*.py``
source here (under ``$XDG_CACHE_HOME/normlab``, by default ``~/.cache/normlab``): any edit starts a fresh
cache. ``NUMBA_CACHE_DIR``, when set, is used as it is.

Examples:
    >>> import normlab.kernels as kernels
    >>> all(backend in ("numba", "triton") for _, backend in kernels.REGISTERED)
    True
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from normlab.core.dispatch import register_fast_path

REGISTERED: list[tuple[str, str]] = []
"""``(op, backend)`` for every fast path registered in this process."""

UNAVAILABLE: dict[str, str] = {}
"""Why a backend is missing (backend name → the import error), for ``normlab bench`` and the docs."""


def _versioned_numba_cache() -> None:
    """Point Numba's cache at a folder named after the kernels' sources (see the module doc)."""
    import numba

    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    here = Path(__file__).parent
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(here.glob("numba_*.py")))).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "normlab"
    numba.config.CACHE_DIR = str(base / f"numba-{digest}")


def _register_numba() -> None:
    try:
        _versioned_numba_cache()
        from normlab.kernels import cpu_batch, cpu_channels, cpu_rows
    except ImportError as error:  # Numba (or llvmlite) missing: the reference path runs everywhere
        UNAVAILABLE["numba"] = str(error)
        return
    for op, kernel in (
        ("layer_norm", cpu_rows.fast_layer_norm),
        ("rms_norm", cpu_rows.fast_rms_norm),
        ("add_layer_norm", cpu_rows.fast_add_layer_norm),
        ("add_rms_norm", cpu_rows.fast_add_rms_norm),
        ("group_norm", cpu_channels.fast_group_norm),
        ("instance_norm", cpu_channels.fast_instance_norm),
        ("batch_norm", cpu_batch.fast_batch_norm),
        ("normalize", cpu_channels.fast_normalize),
    ):
        register_fast_path(op, kernel)
        REGISTERED.append((op, "numba"))


def _register_triton() -> None:
    try:
        import torch

        if not torch.cuda.is_available():
            UNAVAILABLE["triton"] = "no CUDA device"
            return
        from normlab.kernels import triton_glue
    except ImportError as error:
        UNAVAILABLE["triton"] = str(error)
        return
    for op, kernel in triton_glue.FAST_PATHS.items():
        register_fast_path(op, kernel)
        REGISTERED.append((op, "triton"))


if os.environ.get("NORMLAB_KERNELS", "1") != "0":
    _register_triton()
    _register_numba()
else:
    UNAVAILABLE["numba"] = UNAVAILABLE["triton"] = "disabled by NORMLAB_KERNELS=0"
