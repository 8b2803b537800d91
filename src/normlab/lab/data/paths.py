"""Where the lab looks for data.

The rule, for every loader: an explicit folder argument (the CLI's ``--data-dir``) wins; otherwise the
``NORMLAB_DATA`` environment variable; otherwise there is no local data, and a loader raises
:class:`DataNotFoundError` saying how to get it — unless ``download=True`` was asked, in which case files go to
:func:`default_download_root` (``$NORMLAB_HOME/data``, else ``~/.cache/normlab/data``).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataNotFoundError", "DATA_ENV", "data_root", "default_download_root"]

DATA_ENV = "NORMLAB_DATA"


class DataNotFoundError(FileNotFoundError):
    """No data where the lab looked; the message says where it looked and how to get the data."""


def data_root(data_dir: str | os.PathLike | None) -> Path | None:
    """The folder named by ``data_dir``, else by ``$NORMLAB_DATA``, else None.

    Args:
        data_dir: an explicit folder, or None.

    Returns:
        The folder (``~`` expanded), or None when neither is set. Existence is not checked here.

    Examples:
        >>> str(data_root("/tmp/cifar"))
        '/tmp/cifar'
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV, "")
    return Path(env).expanduser() if env else None


def default_download_root() -> Path:
    """Where ``download=True`` puts data when no folder was given: ``$NORMLAB_HOME/data`` or ``~/.cache/normlab/data``.

    Returns:
        The folder (not created here).
    """
    home = os.environ.get("NORMLAB_HOME", "")
    return Path(home).expanduser() / "data" if home else Path.home() / ".cache" / "normlab" / "data"
