"""A restricted unpickler for the CIFAR python-format files.

The official CIFAR batches are Python 2 pickles of a dict holding strings, a list of ints and one uint8 numpy
array. ``pickle.load`` would happily run any callable a tampered file names (``os.system``, ``builtins.eval``,
...), so these files are read with an unpickler whose ``find_class`` answers only the handful of globals that
format needs and refuses everything else before it is ever called.

Allowed globals (each wrapped so that it can only build what a CIFAR file holds):

* ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct`` and ``numpy.ndarray``:
  rebuild an array (only the ``ndarray`` type itself may be passed);
* ``numpy.dtype``: plain numeric, bool and byte-string dtypes; object dtypes are refused, so an array cannot
  smuggle in arbitrary objects;
* ``numpy._core.numeric._frombuffer`` (numpy's protocol-5 array form), numeric dtypes only;
* ``_codecs.encode`` with the ``latin1`` codec: how Python 3 pickles ``bytes`` at protocol 2.

Strings are decoded with ``encoding="latin1"``, which numpy documents as the one needed to read arrays pickled by
Python 2: the image bytes reach ``ndarray.__setstate__`` unchanged.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["UnsafePickleError", "restricted_loads", "restricted_load"]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something the CIFAR format never contains; nothing it named was called."""


def _numpy_attr(modules: tuple[str, ...], name: str) -> Callable:
    for module in modules:
        try:
            mod = __import__(module, fromlist=[name])
            return getattr(mod, name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy provides none of {[m + '.' + name for m in modules]}")


def _safe_dtype(spec: Any, *args: Any) -> np.dtype:
    if not isinstance(spec, (str, bytes)):
        raise UnsafePickleError(f"refusing numpy.dtype({type(spec).__name__}); CIFAR files name dtypes by code")
    dtype = np.dtype(spec.decode("latin1") if isinstance(spec, bytes) else spec)
    if dtype.kind not in "biufcSU" or dtype.hasobject or dtype.fields is not None:
        raise UnsafePickleError(f"refusing numpy dtype {dtype!r}: only plain numeric/byte dtypes are allowed")
    return dtype


def _safe_reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refusing to rebuild an array of type {subtype!r}; only numpy.ndarray is allowed")
    return _RECONSTRUCT(np.ndarray, shape, _safe_dtype(dtype_code))


def _safe_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, np.dtype):
        dtype = _safe_dtype(dtype)
    elif dtype.hasobject or dtype.kind not in "biufcSU":
        raise UnsafePickleError(f"refusing numpy dtype {dtype!r}")
    return _FROMBUFFER(buffer, dtype, shape, order)


def _safe_codecs_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    if not isinstance(text, str) or str(encoding).lower().replace("-", "") != "latin1":
        raise UnsafePickleError("refusing _codecs.encode other than Python 3's latin1 encoding of bytes")
    return text.encode("latin1")


_RECONSTRUCT = _numpy_attr(("numpy._core.multiarray", "numpy.core.multiarray"), "_reconstruct")
try:
    _FROMBUFFER = _numpy_attr(("numpy._core.numeric", "numpy.core.numeric"), "_frombuffer")
except ImportError:  # pragma: no cover - every numpy >= 1.16 has it
    _FROMBUFFER = None

_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _safe_codecs_encode,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _safe_reconstruct
if _FROMBUFFER is not None:
    for _module in ("numpy.core.numeric", "numpy._core.numeric"):
        _ALLOWED[(_module, "_frombuffer")] = _safe_frombuffer


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str):
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name} from {self._source}: CIFAR files hold only dicts, lists, "
                f"strings and numpy arrays, so this file was tampered with or is not a CIFAR batch. "
                f"Download the data again (download=True) or check where the file came from."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing a persistent reference in {self._source}; CIFAR files have none")


def restricted_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle CIFAR-format bytes, allowing only the globals that format needs.

    Args:
        data: the pickle's bytes.
        source: a name for error messages (usually the file path).

    Returns:
        The unpickled object (for a CIFAR batch, a dict).

    Raises:
        UnsafePickleError: the pickle names any other global (its code is never run).

    Examples:
        >>> import pickle, numpy as np
        >>> blob = pickle.dumps({"labels": [1, 2], "data": np.zeros((2, 3), np.uint8)}, protocol=2)
        >>> restricted_loads(blob)["data"].shape
        (2, 3)
        >>> try:
        ...     restricted_loads(pickle.dumps(print))
        ... except UnsafePickleError as error:
        ...     print(str(error)[:40])
        refusing to load builtins.print from <by
    """
    return _RestrictedUnpickler(io.BytesIO(data), source).load()


def restricted_load(path: str | os.PathLike) -> Any:
    """Unpickle one CIFAR-format file with :func:`restricted_loads`.

    Args:
        path: the file to read.

    Returns:
        The unpickled object.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        return _RestrictedUnpickler(handle, str(path)).load()
