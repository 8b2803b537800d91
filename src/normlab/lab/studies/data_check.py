"""Finding the data a profile needs before any training starts, or stopping with a message saying how to get it.

The ``smoke`` profile makes synthetic data and needs nothing. ``quick`` and ``paper`` read CIFAR-10 (image
studies) and Tiny Shakespeare (the Transformer study): from ``--data-dir`` if given, else ``$NORMLAB_DATA``, else
they are downloaded (unless downloads are turned off). Without a local copy and without network access,
:func:`prepare_data` raises :class:`~normlab.lab.data.DataNotFoundError` whose message explains both ways to get
the data. The folder found is exported as ``NORMLAB_DATA`` so the sweep's worker processes read the same copy.

Examples:
    >>> from normlab.lab.studies.profiles import get_profile
    >>> prepare_data(get_profile("smoke"), {"images", "text"})
    (None, {})
"""
from __future__ import annotations

import os
from pathlib import Path

from .profiles import Profile

__all__ = ["prepare_data", "how_to_get_data"]


def how_to_get_data(profile: Profile, needs: set[str]) -> str:
    """The instructions printed when the data a profile needs is missing."""
    from normlab.lab.data import CIFAR_SPECS, SHAKESPEARE_URL

    parts, layout = [], []
    if "images" in needs:
        spec = CIFAR_SPECS[profile.image_data]
        parts.append(f"{spec.title} ({spec.url})")
        layout.append(f"DIR/{spec.folders[0]}/ (the unpacked official archive)")
    if "text" in needs:
        parts.append(f"Tiny Shakespeare ({SHAKESPEARE_URL})")
        layout.append("DIR/tinyshakespeare/input.txt")
    return (f"The '{profile.name}' profile trains on {' and '.join(parts)}. Either run it with network access (the "
            f"data is downloaded once, checked against the published md5s, into $NORMLAB_HOME/data or "
            f"~/.cache/normlab/data), or download the files yourself, place them as {' and '.join(layout)}, and pass "
            f"--data-dir DIR or set NORMLAB_DATA=DIR. The 'smoke' profile needs no data: "
            f"normlab study all --profile smoke")


def prepare_data(profile: Profile, needs: set[str], data_dir: str | os.PathLike | None = None, *,
                 download: bool = True, progress: bool = True) -> tuple[Path | None, dict[str, str]]:
    """Find (or download) the data ``profile`` needs for ``needs`` (``"images"``, ``"text"``).

    Args:
        profile: the study profile.
        needs: which kinds of real data the chosen studies read.
        data_dir: ``--data-dir``; None falls back to ``$NORMLAB_DATA``.
        download: try to download what is missing.
        progress: show download progress.

    Returns:
        ``(root, summaries)``: the data root folder to export as ``NORMLAB_DATA`` (None when nothing is needed)
        and one provenance line per kind (``{"images": "partial copy of CIFAR-10: ...", "text": "..."}``).

    Raises:
        DataNotFoundError: the data is not found and could not be downloaded; the message says how to get it.
    """
    from normlab.lab.data import DataNotFoundError, DownloadError, data_root, default_download_root, load_cifar, \
        load_shakespeare

    wanted = set(needs)
    if profile.image_data == "synthetic":
        wanted.discard("images")
    if profile.text_data == "synthetic":
        wanted.discard("text")
    if not wanted:
        return None, {}
    root = data_root(data_dir)
    summaries: dict[str, str] = {}
    downloaded = False
    for kind in sorted(wanted):
        def load(allow_download: bool, where: Path | None):
            if kind == "images":
                data = load_cifar(profile.image_data, where, download=allow_download, progress=progress)
                return data.provenance.summary
            corpus = load_shakespeare(where, download=allow_download, progress=progress)
            return corpus.summary
        try:
            summaries[kind] = load(False, root)
            continue
        except DataNotFoundError as error:
            if not download:
                raise DataNotFoundError(f"{error}\n\n{how_to_get_data(profile, wanted)}") from None
            missing = error
        target = root if root is not None else default_download_root()
        try:
            summaries[kind] = load(True, target)
            downloaded = True
        except (DownloadError, OSError) as error:
            raise DataNotFoundError(f"{missing}\nThe download failed too ({error}).\n\n"
                                    f"{how_to_get_data(profile, wanted)}") from None
    if root is None and downloaded:
        root = default_download_root()
    return root, summaries
