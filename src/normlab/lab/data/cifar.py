"""CIFAR-10 and CIFAR-100 from the official python-format files (Krizhevsky, 2009).

Reference: A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009;
https://www.cs.toronto.edu/~kriz/cifar.html

Each batch file is a pickled dict with ``data``, an :math:`N \\times 3072` uint8 array whose rows hold the R, G and
B planes of a 32×32 image, and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100). Files are read with the
restricted unpickler of :mod:`normlab.lab.data.safe_pickle`, never with plain ``pickle.load``.

Which folder is read (``root`` = the ``data_dir`` argument, else ``$NORMLAB_DATA``): ``root`` itself when it
holds the batch files, else the first of ``root/<name>`` for the names in :attr:`CifarSpec.folders`
(``cifar-10-batches-py``, ``cifar10``, ``cifar-10``, ``cifar10-subset`` for CIFAR-10; the ``cifar-100-python``
family for CIFAR-100). ``download=True`` fetches the official archive only when no such folder exists.

Every file's md5 is compared with the published one; a copy that does not match is loaded but reported as
``partial`` (fewer images) or ``unofficial`` in :attr:`ImageData.provenance`, with a one-time
:class:`PartialDatasetWarning` — a subset is never passed off as the full set.
"""
from __future__ import annotations

import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .download import download_and_extract, file_md5
from .image_data import FileCheck, ImageData, Provenance
from .paths import DATA_ENV, DataNotFoundError, data_root, default_download_root
from .safe_pickle import restricted_load

__all__ = ["CifarSpec", "CIFAR_SPECS", "PartialDatasetWarning", "load_cifar", "read_cifar_folder",
           "find_cifar_folder", "write_cifar_folder"]


class PartialDatasetWarning(UserWarning):
    """The data loaded is not the full official set (see ``ImageData.provenance``)."""


@dataclass(frozen=True)
class CifarSpec:
    """The published facts about one CIFAR variant: URL, md5s, file names and keys."""

    name: str
    title: str
    url: str
    archive_md5: str
    folders: tuple[str, ...]  # accepted sub-folder names of a data root; the first is the archive's own
    train_files: tuple[tuple[str, str], ...]  # (file name, published md5)
    test_files: tuple[tuple[str, str], ...]
    meta_file: tuple[str, str]
    label_key: str
    names_key: str
    mean: tuple[float, float, float]  # per-channel mean / std of the 50,000 training images, 0–1 scale
    std: tuple[float, float, float]
    official_train: int = 50_000
    official_test: int = 10_000


# Checksums as published with the data set (and listed by the common loaders, e.g. torchvision's).
CIFAR_SPECS: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        name="cifar10", title="CIFAR-10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive_md5="c58f30108f718f92721af3b95e74349a",
        folders=("cifar-10-batches-py", "cifar10", "cifar-10", "cifar10-subset"),
        train_files=(("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                     ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                     ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                     ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                     ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb")),
        test_files=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
        meta_file=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        label_key="labels", names_key="label_names",
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarSpec(
        name="cifar100", title="CIFAR-100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
        folders=("cifar-100-python", "cifar100", "cifar-100", "cifar100-subset"),
        train_files=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
        test_files=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        meta_file=("meta", "7973b15100ade9c7d40fb424638fde48"),
        label_key="fine_labels", names_key="fine_label_names",
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
    ),
}

_WARNED: set[str] = set()


def _spec(name: str) -> CifarSpec:
    try:
        return CIFAR_SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown CIFAR variant {name!r}; choose one of {sorted(CIFAR_SPECS)}") from None


def _is_cifar_folder(spec: CifarSpec, folder: Path) -> bool:
    names = [spec.meta_file[0], spec.test_files[0][0]]
    return all((folder / n).is_file() for n in names) and any((folder / n).is_file() for n, _ in spec.train_files)


def find_cifar_folder(root: str | os.PathLike, name: str = "cifar10") -> Path | None:
    """The CIFAR folder under ``root`` by the rule in the module docstring, or None.

    Args:
        root: a CIFAR folder or a parent of one.
        name: ``"cifar10"`` or ``"cifar100"``.

    Returns:
        The folder holding the batch files, or None when there is none.
    """
    spec, root = _spec(name), Path(root)
    for folder in (root, *(root / sub for sub in spec.folders)):
        if _is_cifar_folder(spec, folder):
            return folder
    return None


def _how_to_get(spec: CifarSpec) -> str:
    return (f"Get the data by passing --data-dir (data_dir=) a folder holding the official {spec.folders[0]} "
            f"files or a parent of it, by setting {DATA_ENV}, or with download=True (--download) and network "
            f"access ({spec.url}).")


def load_cifar(name: str = "cifar10", data_dir: str | os.PathLike | None = None, download: bool = False,
               *, progress: bool = True) -> ImageData:
    """Load CIFAR-10 or CIFAR-100 into memory, checking every file against the published md5s.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        data_dir: the CIFAR folder or a parent of it; None reads ``$NORMLAB_DATA``.
        download: fetch the official archive (md5-checked) when no folder is found. Without a folder it goes to
            :func:`normlab.lab.data.paths.default_download_root`.
        progress: show a progress bar while downloading.

    Returns:
        :class:`ImageData` with uint8 images :math:`(N, 3, 32, 32)`, int64 labels, class names, the published
        mean/std and a :class:`Provenance` saying whether this is the full official set.

    Raises:
        DataNotFoundError: no data found and ``download`` is False (the message says how to get it).
        ValueError: unknown ``name`` or a malformed file.

    Examples:
        >>> import tempfile, torch, warnings
        >>> with tempfile.TemporaryDirectory() as root, warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", PartialDatasetWarning)  # 20 images: a partial copy, as reported
        ...     images = torch.zeros(20, 3, 32, 32, dtype=torch.uint8)
        ...     labels = torch.arange(20) % 10
        ...     _ = write_cifar_folder(f"{root}/cifar-10-batches-py", images, labels, images[:10], labels[:10])
        ...     data = load_cifar("cifar10", data_dir=root)
        >>> data.train_images.shape, data.provenance.kind
        (torch.Size([20, 3, 32, 32]), 'partial')
    """
    spec = _spec(name)
    root = data_root(data_dir)
    if root is None:
        if not download:
            raise DataNotFoundError(f"no {spec.title} data folder given. " + _how_to_get(spec))
        root = default_download_root()
    folder = find_cifar_folder(root, name) if root.exists() else None
    if folder is None:
        if not download:
            where = "data_dir" if data_dir is not None and str(data_dir) != "" else DATA_ENV
            looked = ", ".join(str(p) for p in (root, *(root / s for s in spec.folders)))
            raise DataNotFoundError(f"no {spec.title} files found from {where}={root} (looked in: {looked}). "
                                    + _how_to_get(spec))
        folder = download_and_extract(spec.url, spec.archive_md5, root, spec.folders[0], progress=progress)
    return read_cifar_folder(folder, name)


def _normalize_keys(entry: object, path: Path) -> dict:
    if not isinstance(entry, dict):
        raise ValueError(f"{path} is not a CIFAR file: expected a pickled dict, got {type(entry).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _read_batch(path: Path, spec: CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    entry = _normalize_keys(restricted_load(path), path)
    data, labels = entry.get("data"), entry.get(spec.label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path} is not a {spec.title} batch: 'data' must be a uint8 array of shape (N, 3072)")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path} is not a {spec.title} batch: need one '{spec.label_key}' entry per image")
    return data, labels


def _read_split(folder: Path, spec: CifarSpec, files: Sequence[tuple[str, str]], checks: list[FileCheck]):
    data, labels = [], []
    for file_name, official in files:
        path = folder / file_name
        if not path.is_file():
            checks.append(FileCheck(file_name, None, official, 0))
            continue
        images, targets = _read_batch(path, spec)
        checks.append(FileCheck(file_name, file_md5(path), official, len(targets)))
        data.append(images)
        labels.append(targets)
    if not data:
        raise DataNotFoundError(f"{folder} holds none of {[f for f, _ in files]}. " + _how_to_get(spec))
    images = torch.from_numpy(np.concatenate(data)).view(-1, 3, 32, 32)  # rows are R, G, B planes of 32×32
    return images, torch.from_numpy(np.concatenate(labels))


def read_cifar_folder(folder: str | os.PathLike, name: str = "cifar10") -> ImageData:
    """Read one CIFAR folder (the batch files themselves, no searching) and check it against the published md5s.

    Args:
        folder: the folder holding the batch files.
        name: ``"cifar10"`` or ``"cifar100"``.

    Returns:
        The :class:`ImageData`; warns :class:`PartialDatasetWarning` once per folder if it is not the official set.
    """
    spec, folder = _spec(name), Path(folder)
    meta_path = folder / spec.meta_file[0]
    if not meta_path.is_file():
        raise DataNotFoundError(f"{folder} has no {spec.meta_file[0]}. " + _how_to_get(spec))
    meta = _normalize_keys(restricted_load(meta_path), meta_path)
    classes = tuple(c.decode("latin1") if isinstance(c, bytes) else str(c) for c in meta.get(spec.names_key, ()))
    if not classes:
        raise ValueError(f"{meta_path} has no '{spec.names_key}' list of class names")
    checks = [FileCheck(spec.meta_file[0], file_md5(meta_path), spec.meta_file[1])]
    train_images, train_labels = _read_split(folder, spec, spec.train_files, checks)
    test_images, test_labels = _read_split(folder, spec, spec.test_files, checks)
    n_train, n_test = len(train_labels), len(test_labels)
    if all(check.matches for check in checks):
        kind = "official"
    elif n_train < spec.official_train or n_test < spec.official_test:
        kind = "partial"
    else:
        kind = "unofficial"
    provenance = Provenance(spec.title, kind, str(folder.resolve()), n_train, n_test,
                            spec.official_train, spec.official_test, tuple(checks))
    if kind != "official" and provenance.source not in _WARNED:
        _WARNED.add(provenance.source)
        warnings.warn(f"{provenance.summary} ({provenance.source}). Figures from it are not comparable with "
                      f"published full-set results.", PartialDatasetWarning, stacklevel=2)
    return ImageData(spec.name, train_images, train_labels, test_images, test_labels, classes,
                     spec.mean, spec.std, provenance)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_cifar_folder(folder: str | os.PathLike, train_images: torch.Tensor, train_labels: torch.Tensor,
                       test_images: torch.Tensor, test_labels: torch.Tensor, classes: Sequence[str] | None = None,
                       name: str = "cifar10") -> Path:
    """Write images in the official CIFAR python layout (for tests, subsets and fixtures).

    Batch dicts are written with protocol 2 and ``bytes`` keys, as close to the Python 2 originals as Python 3
    gets. CIFAR-10 training images are split evenly over ``data_batch_1`` … ``data_batch_5``.

    Args:
        folder: the folder to create.
        train_images / test_images: uint8 :math:`(N, 3, 32, 32)`.
        train_labels / test_labels: integer labels :math:`(N,)`.
        classes: class names; default ``class0`` … for as many classes as the spec has.
        name: ``"cifar10"`` or ``"cifar100"``.

    Returns:
        ``folder`` as a Path.
    """
    spec, folder = _spec(name), Path(folder)
    for images, labels in ((train_images, train_labels), (test_images, test_labels)):
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (3, 32, 32) or len(labels) != len(images):
            raise ValueError("CIFAR files hold uint8 (N, 3, 32, 32) images with one label each")
    n_classes = 10 if name == "cifar10" else 100
    classes = list(classes) if classes is not None else [f"class{i}" for i in range(n_classes)]
    folder.mkdir(parents=True, exist_ok=True)
    meta = {spec.names_key.encode(): [c.encode() for c in classes]}
    if name == "cifar10":
        meta.update({b"num_cases_per_batch": 10000, b"num_vis": 3072})
    _dump(folder / spec.meta_file[0], meta)
    splits = [(spec.train_files, train_images, train_labels), (spec.test_files, test_images, test_labels)]
    for files, images, labels in splits:
        flat, targets = images.reshape(len(images), 3072).numpy(), [int(t) for t in labels]
        bounds = np.linspace(0, len(targets), len(files) + 1).astype(int)
        for (file_name, _), lo, hi in zip(files, bounds[:-1], bounds[1:]):
            _dump(folder / file_name, {b"batch_label": file_name.encode(), spec.label_key.encode(): targets[lo:hi],
                                       b"data": np.ascontiguousarray(flat[lo:hi])})
    return folder
