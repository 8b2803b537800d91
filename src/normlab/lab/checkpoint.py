"""Atomic checkpoints and random-number-generator state, so a killed run resumes exactly.

**Atomic write.** :func:`atomic_save` writes to a temporary file in the same folder, flushes it to disk
(``fsync``), then renames it over the target with :func:`os.replace` (atomic on POSIX and Windows) and syncs the
folder. A reader therefore sees either the previous complete checkpoint or the new complete one — never a
half-written file, whenever the process is killed.

**Safe read.** :func:`load_checkpoint` uses ``torch.load(weights_only=True)``: only tensors and plain Python
containers and numbers are rebuilt, no arbitrary objects, so a checkpoint cannot run code. Everything stored is
kept to those types (the numpy RNG state is stored as a tensor).

**RNG state.** :func:`capture_rng_state` / :func:`restore_rng_state` cover Python's ``random``, numpy's global
generator, torch's CPU generator and every CUDA device's generator.

Examples:
    >>> import tempfile, os, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "checkpoint.pt")
    >>> atomic_save({"epoch": 3, "weights": torch.ones(2), "rng": capture_rng_state()}, path)
    >>> state = load_checkpoint(path)
    >>> state["epoch"], state["weights"].tolist(), sorted(os.listdir(os.path.dirname(path)))
    (3, [1.0, 1.0], ['checkpoint.pt'])
    >>> restore_rng_state(state["rng"])
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["atomic_save", "load_checkpoint", "capture_rng_state", "restore_rng_state"]


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """Save ``obj`` with :func:`torch.save` so that ``path`` is always either the old or the new complete file.

    Args:
        obj: tensors, numbers, strings and containers of them.
        path: the target file; its folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    _fsync_folder(path.parent)


def load_checkpoint(path: str | os.PathLike, map_location: torch.device | str | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`atomic_save` (tensors and plain containers only).

    Args:
        path: the file.
        map_location: where tensors are loaded (default: the CPU).

    Returns:
        The saved dict.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a checkpoint that can be loaded safely.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # corrupt file or a disallowed type: say which file
        raise ValueError(f"cannot load checkpoint {path} safely: {type(error).__name__}: {error}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a checkpoint dict (found {type(state).__name__})")
    return state


def capture_rng_state() -> dict[str, Any]:
    """The state of Python's, numpy's, torch's CPU and all CUDA random generators, in loadable types."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore generators from :func:`capture_rng_state` (CUDA ones only when present on both sides)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    np.random.set_state((saved["kind"], saved["keys"].numpy().astype(np.uint32), saved["position"],
                         saved["has_gauss"], saved["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        generators = state["cuda"][:torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([g.cpu() for g in generators])
