"""Checked downloads: stream to a temporary file, verify the md5, extract safely, rename into place.

Nothing half-written is ever left where a loader would find it: the archive streams into a temporary file beside
the destination, its md5 is checked against the published one, the tar is unpacked into a temporary folder
after every member was vetted (regular files and folders only, no absolute paths, no ``..``, all under the one
expected top-level folder), and only then is that folder renamed into place (``os.replace``, atomic on one file
system). On any failure the temporary files are removed.

``urlopen`` is looked up on this module at call time, so tests can replace it with a fake that serves local
bytes (no network needed).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path, PurePosixPath
from typing import BinaryIO

__all__ = ["DownloadError", "file_md5", "download_file", "download_and_extract", "urlopen"]

urlopen = urllib.request.urlopen  # replaced by tests; called as urlopen(url, timeout=...)

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed, was corrupt, or held something unsafe; nothing was left behind."""


def file_md5(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in 1 MiB chunks.

    Args:
        path: the file.

    Returns:
        32 lowercase hex digits.

    Examples:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "x")
        ...     _ = open(path, "wb").write(b"abc")
        ...     file_md5(path)
        '900150983cd24fb0d6963f7d28e17f72'
    """
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stream(url: str, out: BinaryIO, progress: bool) -> str:
    """Copy ``url`` into ``out``; return the md5 of what was written."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        response = urlopen(url, timeout=60)
    except OSError as error:  # URLError is an OSError
        raise DownloadError(
            f"could not download {url}: {error}. Without network access, fetch the file on another machine and "
            f"point --data-dir (or NORMLAB_DATA) at the unpacked folder."
        ) from error
    with response:
        total = getattr(response, "length", None)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False)
        try:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    return digest.hexdigest()


def download_file(url: str, destination: str | os.PathLike, md5: str | None, *, progress: bool = True) -> Path:
    """Download ``url`` to ``destination`` (atomically), checking its md5 when one is given.

    Args:
        url: where to fetch from.
        destination: the final file path; its folder is created.
        md5: the expected hex md5, or None to skip the check.
        progress: show a tqdm progress bar.

    Returns:
        ``destination`` as a Path.

    Raises:
        DownloadError: network failure or md5 mismatch (no file is left at ``destination``).
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=destination.parent, prefix=".normlab-dl-", delete=False)
    try:
        with handle:
            got = _stream(url, handle, progress)
        if md5 is not None and got != md5.lower():
            raise DownloadError(
                f"md5 mismatch for {url}: got {got}, expected {md5}. The download is corrupt or the file changed "
                f"upstream; nothing was kept. Try again, or fetch it by hand and check its md5."
            )
        os.replace(handle.name, destination)
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
    return destination


def _vet_members(archive: tarfile.TarFile, top_folder: str) -> list[tarfile.TarInfo]:
    members = archive.getmembers()
    for member in members:
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts or "\\" in member.name:
            raise DownloadError(f"archive member {member.name!r} escapes the target folder; refusing to extract")
        if not (member.isfile() or member.isdir()):
            raise DownloadError(f"archive member {member.name!r} is a link or device; refusing to extract")
        if path.parts[0] != top_folder:
            raise DownloadError(f"archive member {member.name!r} is outside the expected folder {top_folder!r}")
    return members


def download_and_extract(
    url: str, md5: str, root: str | os.PathLike, top_folder: str, *, progress: bool = True
) -> Path:
    """Download a ``.tar.gz``, check its md5 and unpack its one top-level folder into ``root``.

    Args:
        url: the archive's URL.
        md5: its published hex md5 (required: unchecked archives are never unpacked).
        root: the parent folder; the result is ``root / top_folder``.
        top_folder: the single folder every archive member must live under.
        progress: show a tqdm progress bar while downloading.

    Returns:
        The unpacked folder, ``root / top_folder``. If it already exists it is returned untouched.

    Raises:
        DownloadError: network failure, md5 mismatch, or an unsafe/unexpected archive member. No partial folder
            or temporary file is left behind.
    """
    root = Path(root)
    target = root / top_folder
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".normlab-extract-"))
    try:
        archive_path = download_file(url, staging / "archive.tar.gz", md5, progress=progress)
        unpacked = staging / "unpacked"
        try:
            with tarfile.open(archive_path, "r:gz") as archive:
                members = _vet_members(archive, top_folder)
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: a second line of defence
                    archive.extractall(unpacked, members=members, filter="data")
                else:  # pragma: no cover
                    archive.extractall(unpacked, members=members)
        except (tarfile.TarError, EOFError, OSError) as error:
            raise DownloadError(f"could not unpack the archive from {url}: {error}") from error
        if not (unpacked / top_folder).is_dir():
            raise DownloadError(f"the archive from {url} has no {top_folder!r} folder; is the URL right?")
        try:
            os.replace(unpacked / top_folder, target)
        except OSError:
            if not target.exists():  # another process may have won the race; theirs is as good as ours
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
