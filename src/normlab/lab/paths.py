"""Where the lab keeps its files: one home folder for the results store, run folders, studies and the report.

The home folder is, in order: the ``home`` argument (the CLI's ``--home``), else the ``NORMLAB_HOME`` environment
variable, else ``./normlab-runs``. Inside it::

    results.db              the results store (:class:`normlab.lab.store.ResultsStore`)
    runs/<run_id>/          one folder per training run: checkpoint.pt, final.pt, log.txt
    studies/<study>/        study outputs (result.json, figures)
    report/                 the rendered HTML / Markdown report

Every part of the lab (trainer, sweep, studies, report, CLI) finds these folders through this module, so they
always agree. Nothing is created here except by :func:`ensure_dir`.

Examples:
    >>> str(lab_home("/tmp/lab")), str(run_dir("0123abcd", home="/tmp/lab"))
    ('/tmp/lab', '/tmp/lab/runs/0123abcd')
    >>> store_path("/tmp/lab").name
    'results.db'
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HOME_ENV", "DEFAULT_HOME", "lab_home", "store_path", "runs_dir", "run_dir", "studies_dir", "study_dir",
           "report_dir", "ensure_dir"]

HOME_ENV = "NORMLAB_HOME"
DEFAULT_HOME = "normlab-runs"

PathLike = str | os.PathLike


def lab_home(home: PathLike | None = None) -> Path:
    """The lab's home folder: ``home`` if given, else ``$NORMLAB_HOME``, else ``./normlab-runs``.

    Args:
        home: an explicit folder (``~`` is expanded), or None.

    Returns:
        The folder as a :class:`~pathlib.Path` (not created, not resolved).
    """
    if home is not None and str(home) != "":
        return Path(home).expanduser()
    env = os.environ.get(HOME_ENV, "")
    return Path(env).expanduser() if env else Path(DEFAULT_HOME)


def store_path(home: PathLike | None = None) -> Path:
    """The results database file, ``<home>/results.db``."""
    return lab_home(home) / "results.db"


def runs_dir(home: PathLike | None = None) -> Path:
    """The folder holding one sub-folder per run, ``<home>/runs``."""
    return lab_home(home) / "runs"


def run_dir(run_id: str, home: PathLike | None = None) -> Path:
    """The folder of one run, ``<home>/runs/<run_id>`` (checkpoints and logs)."""
    if not isinstance(run_id, str) or not run_id or "/" in run_id or run_id.startswith("."):
        raise ValueError(f"run_id must be a plain non-empty name (the run's config hash), got {run_id!r}")
    return runs_dir(home) / run_id


def studies_dir(home: PathLike | None = None) -> Path:
    """The folder of study outputs, ``<home>/studies``."""
    return lab_home(home) / "studies"


def study_dir(name: str, home: PathLike | None = None) -> Path:
    """The folder of one study, ``<home>/studies/<name>``."""
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"study name must be a plain non-empty name, got {name!r}")
    return studies_dir(home) / name


def report_dir(home: PathLike | None = None) -> Path:
    """The folder of the rendered report, ``<home>/report``."""
    return lab_home(home) / "report"


def ensure_dir(path: PathLike) -> Path:
    """Create ``path`` (and its parents) if needed and return it as a Path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path
