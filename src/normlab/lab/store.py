"""The results database: every run, its per-epoch metrics and final results, in one SQLite file.

A run is identified by its configuration: ``run_id = sha256(canonical JSON of the config)[:16]`` (keys sorted,
no whitespace), so the same settings always land on the same row and a sweep can skip what is already finished.
Put everything that changes the result in the config (model, norm, data, seed, ...) and nothing that does not
(log verbosity, output paths). ``1`` and ``1.0`` are different JSON and so different configs.

Tables: ``runs`` (one row per run: status ``pending``/``running``/``finished``/``failed``, timestamps in UTC ISO
8601, the config, final metrics, the environment, the last error, the attempt count), ``epoch_metrics`` (one row
per run, epoch and metric name; logging an epoch again overwrites it, so a resumed run never duplicates rows) and
``artifacts`` (named JSON values per run, e.g. a weight-norm trace).

Several processes may write at once (sweep workers): the file uses write-ahead logging (WAL), every write is
one short ``BEGIN IMMEDIATE`` transaction, SQLite waits up to ``timeout`` seconds for a lock, and a write
that still meets "database is locked" is retried with backoff. WAL needs a local file system (not NFS).
Under ``torchrun``, let rank 0 alone write.

Default location: ``$NORMLAB_HOME/results.db``, else ``./normlab-runs/results.db``.

Examples:
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> store = ResultsStore(os.path.join(folder, "results.db"))
    >>> run = store.start_run({"model": "resnet20", "norm": "batch_norm", "seed": 0}, environment={})
    >>> run.run_id == config_hash({"seed": 0, "norm": "batch_norm", "model": "resnet20"}), run.status
    (True, 'running')
    >>> store.log_epoch(run.run_id, 0, {"train_loss": 1.5, "test_acc": 0.41})
    >>> store.finish_run(run.run_id, {"test_acc": 0.41})
    >>> store.history(run.run_id)
    [{'epoch': 0, 'test_acc': 0.41, 'train_loss': 1.5}]
    >>> again = store.start_run({"model": "resnet20", "norm": "batch_norm", "seed": 0})
    >>> again.already_finished, [r.status for r in store.runs(where={"norm": "batch_norm"})]
    (True, ['finished'])
    >>> store.close()
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import math
import os
import platform
import random
import socket
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

__all__ = ["ResultsStore", "RunRecord", "UnknownRunError", "config_hash", "canonical_json", "collect_environment",
           "default_store_path", "STATUSES"]

STATUSES = ("pending", "running", "finished", "failed")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, status TEXT NOT NULL, config TEXT NOT NULL, metrics TEXT, environment TEXT,
    error TEXT, attempts INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, started_at TEXT,
    updated_at TEXT NOT NULL, finished_at TEXT);
CREATE TABLE IF NOT EXISTS epoch_metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE, epoch INTEGER NOT NULL, name TEXT NOT NULL,
    value REAL, PRIMARY KEY (run_id, epoch, name));
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE, name TEXT NOT NULL, value TEXT NOT NULL,
    updated_at TEXT NOT NULL, PRIMARY KEY (run_id, name));
CREATE INDEX IF NOT EXISTS runs_by_status ON runs(status);
"""
_RUN_COLUMNS = ("run_id", "status", "config", "metrics", "environment", "error", "attempts", "created_at",
                "started_at", "updated_at", "finished_at")


class UnknownRunError(ValueError):
    """No run with that id (or id prefix) is in the store."""


def default_store_path() -> Path:
    """``$NORMLAB_HOME/results.db`` if ``NORMLAB_HOME`` is set, else ``./normlab-runs/results.db``."""
    from normlab.lab.paths import store_path  # the lab's one rule for its home folder

    return store_path()


def canonical_json(config: Mapping[str, Any]) -> str:
    """The config as JSON with sorted keys and no whitespace — the text that is hashed.

    Args:
        config: a dict of JSON values (str, int, float, bool, None, lists/tuples, dicts with str keys).

    Examples:
        >>> canonical_json({"b": [1, 2.5], "a": None})
        '{"a":null,"b":[1,2.5]}'
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"a run config must be a dict, got {type(config).__name__}")

    def refuse(value: Any) -> Any:
        raise TypeError(f"config values must be JSON values (str, int, float, bool, None, list, dict); got "
                        f"{type(value).__name__} {value!r}: convert it (e.g. str(device)) before storing")
    try:
        return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                          default=refuse)
    except ValueError as error:
        raise ValueError(f"config has a NaN or infinite float, which has no canonical JSON: {error}") from None


def config_hash(config: Mapping[str, Any]) -> str:
    """The run id of a config: the first 16 hex digits of the sha256 of :func:`canonical_json`.

    Examples:
        >>> config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1}), len(config_hash({}))
        (True, 16)
    """
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()[:16]


def _to_json(value: Any) -> Any:
    """``json.dumps`` fallback for metrics and artifacts: tensors and numpy values become numbers or lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} {value!r} as JSON; convert it to numbers first")


@functools.lru_cache(maxsize=1)
def _code_environment() -> dict[str, str]:
    try:
        from importlib.metadata import version
        package = version("normlab")
    except Exception:  # not installed as a distribution
        package = "unknown"
    try:
        result = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=5)
        git = result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        git = "unknown"
    return {"normlab_version": package, "git": git, "code_version": package + ("" if git == "unknown" else f"+{git}")}


def collect_environment(device: Any = None) -> dict[str, Any]:
    """What produced a result: versions, machine and code.

    Args:
        device: the training device (e.g. ``"cuda:0"``); None records ``cuda`` if available else ``cpu``.

    Returns:
        A JSON-ready dict: ``python``, ``platform``, ``hostname``, ``torch``, ``numpy``, ``cuda``, ``device``,
        ``device_name``, ``normlab_version``, ``git`` (``git describe --always --dirty`` or ``"unknown"``) and
        ``code_version`` (the package version, plus ``+<git>`` when known).
    """
    import numpy
    import torch

    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {"python": platform.python_version(), "platform": platform.platform(), "hostname": socket.gethostname(),
            "torch": torch.__version__, "numpy": numpy.__version__, "cuda": torch.version.cuda,
            "device": str(device), "device_name": name, **_code_environment()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class RunRecord:
    """One row of the ``runs`` table (``config``, ``metrics`` and ``environment`` decoded from JSON).

    ``already_finished`` and ``resumed`` are set only by :meth:`ResultsStore.start_run`: the run was finished
    before the call (and was left untouched — skip it), or existed unfinished and is being started again.
    """

    run_id: str
    status: str
    config: dict
    metrics: dict | None
    environment: dict | None
    error: str | None
    attempts: int
    created_at: str
    started_at: str | None
    updated_at: str
    finished_at: str | None
    already_finished: bool = False
    resumed: bool = False

    @classmethod
    def _from_row(cls, row: tuple, **flags: bool) -> "RunRecord":
        values = dict(zip(_RUN_COLUMNS, row))
        for key in ("config", "metrics", "environment"):
            values[key] = json.loads(values[key]) if values[key] is not None else None
        return cls(**values, **flags)

    def as_dict(self) -> dict[str, Any]:
        """All fields as a plain dict."""
        return dataclasses.asdict(self)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts to dotted keys (``config.optim.lr``); lists become JSON text."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return out


_MISSING = object()  # a config lacks the key: matches no filter value, not even None


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


class ResultsStore:
    """A results database in one SQLite file, safe for several writer processes.

    Args:
        path: the database file (created with its folder); None uses :func:`default_store_path`.
        timeout: seconds SQLite waits for a lock before a write is retried.
        retries: how many times a locked write is retried (with randomized exponential backoff).

    The store can be pickled (only the path travels) and each process opens its own connection.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, timeout: float = 30.0, retries: int = 20):
        self.path = Path(path) if path is not None else default_store_path()
        self.timeout, self.retries = timeout, retries
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write(self._create_schema)

    # -- connection and transactions -------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # a forked child opens its own
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _retry(self, operation: Callable[[], Any]) -> Any:
        delay = 0.02
        for attempt in range(self.retries + 1):
            try:
                return operation()
            except sqlite3.OperationalError as error:
                if not ("locked" in str(error) or "busy" in str(error)) or attempt == self.retries:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)

    def _write(self, body: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``body`` in one short ``BEGIN IMMEDIATE`` transaction, retried while the database is locked."""
        def attempt() -> Any:
            with self._lock:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")  # take the write lock now: no deadlock upgrading a read lock
                try:
                    result = body(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result
        return self._retry(attempt)

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        def attempt() -> list[tuple]:
            with self._lock:
                return self._connection().execute(sql, tuple(params)).fetchall()
        return self._retry(attempt)

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        for statement in filter(str.strip, _SCHEMA.split(";")):  # not executescript: it would commit early
            conn.execute(statement)

    def close(self) -> None:
        """Close this process's connection (a later call reopens it)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "timeout": self.timeout, "retries": self.retries}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], timeout=state["timeout"], retries=state["retries"])

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    # -- writing ---------------------------------------------------------------------------------------------
    def _select_run(self, conn: sqlite3.Connection, run_id: str) -> tuple | None:
        return conn.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE run_id = ?", (run_id,)).fetchone()

    def register(self, config: Mapping[str, Any]) -> RunRecord:
        """Add a config as a ``pending`` run if it is not stored yet (e.g. a sweep listing its grid up front).

        Returns:
            The stored record (the existing one, untouched, if the config was already there).
        """
        text, run_id = canonical_json(config), config_hash(config)

        def body(conn: sqlite3.Connection) -> RunRecord:
            now = _now()
            conn.execute("INSERT OR IGNORE INTO runs (run_id, status, config, created_at, updated_at) "
                         "VALUES (?, 'pending', ?, ?, ?)", (run_id, text, now, now))
            return RunRecord._from_row(self._select_run(conn, run_id))
        return self._write(body)

    def start_run(self, config: Mapping[str, Any], *, environment: Mapping[str, Any] | None = None) -> RunRecord:
        """Mark the run of ``config`` as ``running`` (creating it if new) — unless it already finished.

        Args:
            config: the full run configuration (JSON values only).
            environment: what to record as the environment; None calls :func:`collect_environment`.

        Returns:
            The record. ``already_finished=True``: the run was finished before and is returned untouched (a
            sweep skips it). ``resumed=True``: it existed (pending, failed or interrupted) and ``attempts`` went
            up by one. Starting the same config from two processes at once is safe (one row, two attempts).
        """
        text, run_id = canonical_json(config), config_hash(config)
        env_text = json.dumps(dict(environment) if environment is not None else collect_environment())

        def body(conn: sqlite3.Connection) -> RunRecord:
            row, now = self._select_run(conn, run_id), _now()
            if row is not None and row[1] == "finished":
                return RunRecord._from_row(row, already_finished=True)
            if row is None:
                conn.execute("INSERT INTO runs (run_id, status, config, environment, attempts, created_at, "
                             "started_at, updated_at) VALUES (?, 'running', ?, ?, 1, ?, ?, ?)",
                             (run_id, text, env_text, now, now, now))
            else:
                conn.execute("UPDATE runs SET status = 'running', environment = ?, attempts = attempts + 1, "
                             "started_at = ?, updated_at = ? WHERE run_id = ?", (env_text, now, now, run_id))
            resumed = row is not None and row[1] != "pending"
            return RunRecord._from_row(self._select_run(conn, run_id), resumed=resumed)
        return self._write(body)

    def _touch(self, conn: sqlite3.Connection, run_id: str, sql: str = "", params: tuple = ()) -> None:
        cursor = conn.execute(f"UPDATE runs SET updated_at = ?{sql} WHERE run_id = ?", (_now(), *params, run_id))
        if cursor.rowcount == 0:
            raise UnknownRunError(f"no run {run_id!r} in {self.path}; create it with start_run(config) first")

    def log_epoch(self, run_id: str, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Store one epoch's metrics (overwriting that epoch's earlier values, as a resumed run re-logs them).

        Args:
            run_id: the run.
            epoch: the epoch number (int >= 0).
            metrics: name → number (float, int, bool, or anything ``float()`` accepts such as a 0-d tensor).
                NaN is stored as NULL and read back as NaN.
        """
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        rows = []
        for name, value in metrics.items():
            try:
                rows.append((run_id, epoch, str(name), float(value)))
            except (TypeError, ValueError):
                raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__} {value!r}") from None

        def body(conn: sqlite3.Connection) -> None:
            self._touch(conn, run_id)
            conn.executemany("INSERT OR REPLACE INTO epoch_metrics (run_id, epoch, name, value) VALUES (?, ?, ?, ?)",
                             rows)
        self._write(body)

    def log_artifact(self, run_id: str, name: str, value: Any) -> None:
        """Store a named JSON value for a run (replacing an earlier one of that name), e.g. a weight-norm trace."""
        text = json.dumps(value, default=_to_json)

        def body(conn: sqlite3.Connection) -> None:
            self._touch(conn, run_id)
            conn.execute("INSERT OR REPLACE INTO artifacts (run_id, name, value, updated_at) VALUES (?, ?, ?, ?)",
                         (run_id, name, text, _now()))
        self._write(body)

    def finish_run(self, run_id: str, metrics: Mapping[str, Any] | None = None) -> None:
        """Mark a run ``finished`` with its final metrics (a JSON dict) and clear any earlier error."""
        text = json.dumps(dict(metrics or {}), default=_to_json)
        self._write(lambda conn: self._touch(conn, run_id, ", status = 'finished', metrics = ?, error = NULL, "
                                             "finished_at = ?", (text, _now())))

    def fail_run(self, run_id: str, error: str | BaseException) -> None:
        """Mark a run ``failed`` and keep the error text (its last 20,000 characters)."""
        text = (f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error))[-20000:]
        self._write(lambda conn: self._touch(conn, run_id, ", status = 'failed', error = ?", (text,)))

    def delete(self, run_id: str) -> None:
        """Remove a run with its metrics and artifacts (e.g. to force a rerun)."""
        run_id = self.get(run_id).run_id
        self._write(lambda conn: conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)))

    # -- reading ---------------------------------------------------------------------------------------------
    def get(self, run_id: str) -> RunRecord:
        """The run with this id, or with this unique id prefix (at least 4 characters).

        Raises:
            UnknownRunError: no such run, or the prefix is ambiguous.
        """
        columns = ", ".join(_RUN_COLUMNS)
        rows = self._read(f"SELECT {columns} FROM runs WHERE run_id = ?", (run_id,))
        if not rows and len(run_id) >= 4:
            rows = self._read(f"SELECT {columns} FROM runs WHERE substr(run_id, 1, ?) = ? LIMIT 2",
                              (len(run_id), run_id))
        if len(rows) != 1:
            problem = "matches several runs; give more characters" if rows else "is not in the store"
            raise UnknownRunError(f"run id {run_id!r} {problem} ({self.path})")
        return RunRecord._from_row(rows[0])

    def find(self, config: Mapping[str, Any]) -> RunRecord | None:
        """The run of exactly this config, or None."""
        try:
            return self.get(config_hash(config))
        except UnknownRunError:
            return None

    def runs(self, status: str | Iterable[str] | None = None,
             where: Mapping[str, Any] | None = None) -> list[RunRecord]:
        """Runs in creation order, optionally filtered.

        Args:
            status: one status or several (see :data:`STATUSES`).
            where: config field → required value; dotted names reach nested dicts (``{"optim.lr": 0.1}``).
                A list or tuple of values means "any of these".
        """
        statuses = [status] if isinstance(status, str) else list(status or [])
        for value in statuses:
            if value not in STATUSES:
                raise ValueError(f"unknown status {value!r}; choose from {STATUSES}")
        sql = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"
        if statuses:
            sql += f" WHERE status IN ({', '.join('?' * len(statuses))})"
        records = [RunRecord._from_row(row) for row in self._read(sql + " ORDER BY rowid", statuses)]
        for key, wanted in (where or {}).items():
            allowed = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
            records = [r for r in records if any(_lookup(r.config, key) == a for a in allowed)]
        return records

    def history(self, run_id: str, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Per-epoch metrics: ``[{"epoch": 0, "name": value, ...}, ...]`` sorted by epoch (NULL reads as NaN)."""
        wanted = set(names) if names is not None else None
        rows = self._read("SELECT epoch, name, value FROM epoch_metrics WHERE run_id = ? ORDER BY epoch, name",
                          (run_id,))
        table: dict[int, dict[str, Any]] = {}
        for epoch, name, value in rows:
            if wanted is None or name in wanted:
                table.setdefault(epoch, {"epoch": epoch})[name] = math.nan if value is None else value
        return list(table.values())

    def artifacts(self, run_id: str) -> dict[str, Any]:
        """All artifacts of a run, name → JSON value."""
        return {name: json.loads(value)
                for name, value in self._read("SELECT name, value FROM artifacts WHERE run_id = ? ORDER BY name",
                                              (run_id,))}

    def export_csv(self, path: str | os.PathLike, table: str = "runs", *, status: str | None = None) -> int:
        """Write a CSV file and return its number of data rows.

        Args:
            path: the CSV file to write.
            table: ``"runs"`` — one row per run: id, status, times, attempts, code version, device, then
                ``config.*`` (nested keys dotted, lists as JSON) and ``metrics.*`` columns; or ``"epochs"`` — one
                row per (run, epoch) with a column per metric name.
            status: only runs with this status.
        """
        records = self.runs(status=status)
        if table == "runs":
            fixed = ["run_id", "status", "created_at", "finished_at", "attempts", "code_version", "device", "error"]
            rows = [_flatten("metrics", r.metrics or {}, _flatten("config", r.config, {
                "run_id": r.run_id, "status": r.status, "created_at": r.created_at, "finished_at": r.finished_at,
                "attempts": r.attempts, "code_version": (r.environment or {}).get("code_version"),
                "device": (r.environment or {}).get("device"), "error": r.error})) for r in records]
        elif table == "epochs":
            fixed = ["run_id", "epoch"]
            rows = [{"run_id": r.run_id, **entry} for r in records for entry in self.history(r.run_id)]
        else:
            raise ValueError(f"table must be 'runs' or 'epochs', got {table!r}")
        columns = fixed + sorted({key for row in rows for key in row} - set(fixed))
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        return len(rows)
