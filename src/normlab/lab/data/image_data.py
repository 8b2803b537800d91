"""The in-memory image data set every lab loader returns, and the record of where it came from.

A result is only as good as the data behind it, so every :class:`ImageData` carries a :class:`Provenance`: the
files read, their md5s against the published ones, the image counts, and one of four kinds:

* ``official`` — every file matches the md5 published with the data set: the full set;
* ``partial`` — fewer images than the official set (e.g. a subset copied for offline work);
* ``unofficial`` — as many images as the official set, but some file differs from the published md5s;
* ``synthetic`` — generated (see :mod:`normlab.lab.data.synthetic`).

Only ``official`` counts as ``complete``; reports should print :attr:`Provenance.summary` beside every figure.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["FileCheck", "Provenance", "ImageData"]

KINDS = ("official", "partial", "unofficial", "synthetic")


@dataclass(frozen=True)
class FileCheck:
    """One data file checked against its published md5.

    Args:
        name: the file name inside the data folder.
        md5: its md5, or None when the file is missing.
        official_md5: the md5 published with the data set.
        images: how many images it held (0 for metadata or a missing file).
    """

    name: str
    md5: str | None
    official_md5: str
    images: int = 0

    @property
    def matches(self) -> bool:
        """True when the file is present and byte-identical to the published one."""
        return self.md5 == self.official_md5


@dataclass(frozen=True)
class Provenance:
    """Where a data set came from and whether it is the full official set.

    Args:
        dataset: display name, e.g. ``"CIFAR-10"``.
        kind: ``"official"``, ``"partial"``, ``"unofficial"`` or ``"synthetic"``.
        source: the folder read, or a description of how the data was generated.
        train_images / test_images: image counts actually loaded.
        official_train / official_test: the counts of the official set (None for synthetic data).
        files: per-file md5 checks (empty for synthetic data).

    Examples:
        >>> p = Provenance("CIFAR-10", "partial", "/data/c10", 8068, 1017, 50000, 10000)
        >>> p.complete
        False
        >>> p.summary
        'partial copy of CIFAR-10: 8,068 train / 1,017 test images of 50,000 / 10,000'
    """

    dataset: str
    kind: str
    source: str
    train_images: int
    test_images: int
    official_train: int | None = None
    official_test: int | None = None
    files: tuple[FileCheck, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Provenance kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def complete(self) -> bool:
        """True only for the full official set (every file matches its published md5)."""
        return self.kind == "official"

    @property
    def summary(self) -> str:
        """One line for logs and reports, e.g. ``partial copy of CIFAR-10: 8,068 train / 1,017 test images ...``."""
        counts = f"{self.train_images:,} train / {self.test_images:,} test images"
        if self.kind == "synthetic":
            return f"synthetic {self.dataset}: {counts} ({self.source})"
        if self.kind == "official":
            return f"official {self.dataset}: {counts}, all {len(self.files)} files match the published md5s"
        text = f"{self.kind} copy of {self.dataset}: {counts} of {self.official_train:,} / {self.official_test:,}"
        differing = sum(not check.matches for check in self.files)
        if self.files:
            text += f"; {differing} of {len(self.files)} files differ from the published md5s"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the results store), with ``complete`` and ``summary`` included."""
        record = dataclasses.asdict(self)
        record["files"] = [dict(dataclasses.asdict(check), matches=check.matches) for check in self.files]
        record.update(complete=self.complete, summary=self.summary)
        return record


@dataclass(frozen=True, eq=False)
class ImageData:
    """An image-classification data set held in memory as tensors.

    Args:
        name: a short id, e.g. ``"cifar10"`` or ``"synthetic"``.
        train_images: uint8 images.
        train_labels: int64 class indices.
        test_images / test_labels: the same for the test split.
        classes: class names, indexed by label.
        mean / std: per-channel statistics (on the 0–1 scale) used by
            :func:`normlab.lab.data.augment.normalize`.
        provenance: where the data came from (see :class:`Provenance`).

    Shape:
        - train_images: :math:`(N, C, H, W)`, uint8; train_labels: :math:`(N,)`, int64; likewise for test.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    provenance: Provenance

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images.dtype != torch.uint8 or images.dim() != 4:
                raise ValueError(f"{split}_images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
            if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
                raise ValueError(
                    f"{split}_labels must be int64 of shape ({images.shape[0]},), got {labels.dtype} "
                    f"{tuple(labels.shape)}"
                )
            if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < len(self.classes)):
                raise ValueError(f"{split}_labels must lie in [0, {len(self.classes)}) (one per class name)")
        channels = self.train_images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean and std need one value per channel ({channels})")

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.train_images.shape[1:])
