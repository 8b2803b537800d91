"""The study framework: a protocol for studies, their registry, and running one into ``studies/<name>/result.json``.

A **study** tests published claims about normalization. It is a class with a ``name``, a ``version`` (bump it
when the protocol changes), the ``claims`` it tests, per-profile ``settings``, and two methods:

* ``plan(ctx) -> list[PlannedRun]`` — the training runs (a :class:`~normlab.lab.config.TrainConfig` dict plus
  labels such as ``{"norm": "batch_norm", "seed": 0}``). They are trained with
  :func:`normlab.lab.sweep.run_sweep`, so they run in parallel worker processes, finished runs are skipped and
  interrupted ones resume from their checkpoint.
* ``analyze(ctx, runs) -> StudyOutput`` — tables, figures, anchors and verdicts from the stored runs.
  Post-training analyses (robust accuracy, pruning + fine-tuning) go through :meth:`StudyContext.cached`, which
  keeps each result as JSON in ``studies/<name>/cache/`` so a rerun after a kill resumes instead of restarting.

:func:`run_study` does plan → sweep → analyze → verdicts (forced to "inconclusive: smoke profile" for ``smoke``)
→ writes the result atomically.

``result.json`` schema (``"schema": "normlab.study-result"``, ``"schema_version": 1``) — the report renders it
and ``normlab recommend`` may cite it; readers should ignore keys they do not know::

    {
      "schema": "normlab.study-result", "schema_version": 1,
      "study": "batch_size",              # registry name
      "study_version": 1,                 # the protocol's version
      "title": "...", "summary": "...",   # one line; a paragraph
      "claims": ["BatchNorm's error rises at small batches while GroupNorm's does not", ...],
      "profile": "quick",                 # smoke | quick | paper
      "conclusive": true,                 # false for smoke: every verdict is "inconclusive"
      "settings": {...},                  # the study's settings for this profile (models, epochs, grids)
      "data": {"images": "cifar10: ... partial copy ...", "text": "..."},   # provenance summaries
      "code_version": "0.1.0+f186023",    # package version + git describe, from the results store
      "environment": {...},               # python, torch, device, host (normlab.lab.store.collect_environment)
      "started_at": "...", "finished_at": "...",          # UTC ISO 8601
      "timing": {"train_s": 812.4, "analysis_s": 40.2, "total_s": 853.0,   # this invocation (resumes are shorter)
                 "runs_epoch_s": 1510.3},         # all epochs of all its runs, whenever they were trained
      "runs": [{"run_id": "3f2a...", "labels": {"norm": "batch_norm", "batch_size": 8, "seed": 0},
                "status": "finished", "config": {...TrainConfig.to_dict()...},
                "final": {"test_acc": 0.61, ...}, "error": null}, ...],
      "tables":  [{"id", "title", "columns": [...], "rows": [[...], ...], "caption", "run_ids": [...]}],
      "figures": [{"id", "title", "caption", "run_ids": [...],
                   "panels": [{"title", "x_label", "y_label", "x_log", "y_log", "x_ticks", "x_tick_labels",
                               "series": [{"label", "x": [...], "y": [...], "err": [...] | null,
                                           "published": false, "marker": "o", "line": true}]}]}],
      "anchors": [{"id", "source", "citation", "url", "setting", "columns", "rows", "note"}],  # published numbers
      "verdicts": [{"claim", "status": "supported" | "not supported" | "inconclusive",
                    "effect": {"name", "estimate", "low", "high", "confidence": 0.95,
                               "method": "welch-t" | "paired-t" | "bootstrap-percentile",
                               "n": [3, 3], "units": "pt"} | null,
                    "rule": "supported if ...", "reason": "the 95% interval [...] lies above 0", "details": {}}],
      "notes": ["..."]                    # caveats (partial data, failed runs, missing optional tools)
    }

Numbers that JSON cannot hold (``nan``, ``inf``) are written as ``null``.

Examples:
    >>> sorted(STUDY_MODULES)[:3]
    ['adversarial', 'batch_size', 'convergence']
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ClassVar

from .profiles import Profile, get_profile
from .results import Anchor, Figure, RunData, RunSet, Table
from .verdicts import Verdict, apply_profile

__all__ = ["Study", "PlannedRun", "StudyOutput", "StudyContext", "STUDY_MODULES", "STUDY_NAMES", "SCHEMA",
           "SCHEMA_VERSION", "get_study", "run_study", "read_result", "result_path"]

SCHEMA = "normlab.study-result"
SCHEMA_VERSION = 1

# name -> module; the order is the order of `normlab study all` and of the report.
STUDY_MODULES: dict[str, str] = {
    "convergence": "normlab.lab.studies.convergence",
    "batch_size": "normlab.lab.studies.batch_size",
    "weight_norm": "normlab.lab.studies.weight_norm",
    "adversarial": "normlab.lab.studies.adversarial",
    "pruning": "normlab.lab.studies.pruning",
    "transformer": "normlab.lab.studies.transformer",
    "speed": "normlab.lab.studies.speed",
}
STUDY_NAMES = tuple(STUDY_MODULES)


@dataclass(frozen=True)
class PlannedRun:
    """One training run of a study: its TrainConfig fields and the labels the analysis selects it by."""

    labels: dict[str, Any]
    config: dict[str, Any]


@dataclass
class StudyOutput:
    """What ``analyze`` returns."""

    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    anchors: list[Anchor] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class StudyContext:
    """Everything a study needs while it plans and analyzes.

    Attributes:
        study: the study's name; profile: the :class:`Profile`; settings: the study's settings for that profile.
        home: the lab home folder; folder: ``studies/<name>/`` (created); workers: sweep worker processes.
        data_dir: where local data was found (None: synthetic only, or found through ``NORMLAB_DATA``).
    """

    study: str
    profile: Profile
    settings: dict[str, Any]
    home: Path
    folder: Path
    workers: int = 2
    progress: bool = True
    data_dir: Path | None = None
    data: dict[str, str] = field(default_factory=dict)
    train_kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for the trainer
    log: Callable[[str], None] = field(default=lambda message: print(message, file=sys.stderr, flush=True))

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.profile.seeds

    def cached(self, kind: str, key: dict[str, Any], compute: Callable[[], Any]) -> Any:
        """Return the cached JSON result of ``compute()`` for ``(kind, key)``, computing and storing it if absent.

        ``key`` must hold everything the result depends on (run id, attack settings, ...); it is hashed into the
        file name ``cache/<kind>-<hash>.json``, written atomically, so a killed analysis resumes where it stopped.
        """
        text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(f"{kind}:{text}".encode()).hexdigest()[:16]
        path = self.folder / "cache" / f"{kind}-{digest}.json"
        if path.exists():
            try:
                stored = json.loads(path.read_text())
                if stored.get("key") == json.loads(text):
                    return stored["value"]
            except (json.JSONDecodeError, KeyError):
                pass  # a torn or foreign file: recompute
        value = compute()
        _write_json(path, {"kind": kind, "key": json.loads(text), "value": value}, allow_nan=True)  # private file
        return value

    def train(self, planned: list[PlannedRun], *, train_fn: Callable[..., Any] | None = None) -> RunSet:
        """Train ``planned`` through :func:`normlab.lab.sweep.run_sweep` (parallel, resumable) and read the runs back.

        Studies call it from ``analyze`` for a second stage that depends on the first (e.g. pruned architectures
        trained from scratch). ``train_fn`` replaces the trainer (a module-level function, so worker processes can
        import it — that is how a study registers its own callback in the workers).
        """
        from normlab.lab.config import TrainConfig
        from normlab.lab.paths import store_path
        from normlab.lab.store import ResultsStore

        configs = [TrainConfig.from_dict(p.config) for p in planned]
        if configs:
            from normlab.lab.sweep import run_sweep

            kwargs: dict[str, Any] = {"verbose": False}  # the sweep's bar and per-run lines say enough
            if self.data_dir is not None:
                kwargs["data_dir"] = str(self.data_dir)
            run_sweep(configs, home=self.home, workers=self.workers, progress=self.progress, quiet=not self.progress,
                      train_fn=train_fn, train_kwargs={**kwargs, **self.train_kwargs})
        with ResultsStore(store_path(self.home)) as store:
            runs = []
            for plan, config in zip(planned, configs):
                record = store.find(config.to_dict())
                if record is None:
                    runs.append(RunData(config.run_id, dict(plan.labels), config.to_dict(), "missing", {}, [],
                                        "the sweep did not record this run"))
                    continue
                finished = record.status == "finished"
                runs.append(RunData(record.run_id, dict(plan.labels), record.config, record.status,
                                    record.metrics or {}, store.history(record.run_id) if finished else [],
                                    record.error, store.artifacts(record.run_id) if finished else {}))
        return RunSet(runs)


class Study:
    """Base class of a study (see the module docstring). Subclasses set the class attributes and two methods."""

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    title: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    claims: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[tuple[str, ...]] = ()  # "images" and/or "text": the real data a non-smoke profile reads
    settings: ClassVar[dict[str, dict[str, Any]]] = {}  # profile name -> settings
    train_fn: ClassVar[Callable[..., Any] | None] = None  # replaces the trainer in the sweep workers (see ctx.train)

    def plan(self, ctx: StudyContext) -> list[PlannedRun]:
        return []

    def analyze(self, ctx: StudyContext, runs: RunSet) -> StudyOutput:
        raise NotImplementedError


def get_study(name: str) -> Study:
    """An instance of the study called ``name``.

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if name not in STUDY_MODULES:
        raise ValueError(f"unknown study {name!r}: choose one of {', '.join(STUDY_NAMES)} (or 'all')")
    module = importlib.import_module(STUDY_MODULES[name])
    return module.STUDY()


def result_path(name: str, home: str | os.PathLike | None = None) -> Path:
    """``<home>/studies/<name>/result.json``."""
    from normlab.lab.paths import study_dir

    return study_dir(name, home) / "result.json"


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check one ``result.json``.

    Raises:
        ValueError: not a normlab study result, or a newer schema version than this normlab reads.
    """
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a normlab study result (no \"schema\": \"{SCHEMA}\")")
    if int(data.get("schema_version", 0)) > SCHEMA_VERSION:
        raise ValueError(f"{path} has schema version {data['schema_version']}, newer than this normlab reads "
                         f"({SCHEMA_VERSION}): upgrade normlab")
    return data


def _write_json(path: Path, value: Any, *, allow_nan: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1, allow_nan=allow_nan, default=_json_default))
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _clean_json(value: Any) -> Any:
    """Replace nan/inf by None everywhere (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_json(v) for v in value]
    return value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_study(name: str, profile: str | Profile = "smoke", *, home: str | os.PathLike | None = None,
              workers: int = 2, progress: bool = True, data_dir: str | os.PathLike | None = None,
              data: dict[str, str] | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one study end to end and write ``studies/<name>/result.json``; return the result dict.

    Args:
        name: a study name (see :data:`STUDY_NAMES`).
        profile: ``smoke``, ``quick`` or ``paper``.
        home: the lab home folder (``--home`` / ``NORMLAB_HOME`` / ``./normlab-runs``).
        workers: sweep worker processes.
        progress: show progress bars and stage lines.
        data_dir: the local data folder the caller resolved (recorded; workers read ``NORMLAB_DATA``).
        data: provenance summaries of the data used, recorded in the result.
        log: where stage lines go (default: stderr).

    Returns:
        The result as written (see the schema in the module docstring).
    """
    from normlab.lab.paths import ensure_dir, lab_home, study_dir
    from normlab.lab.store import collect_environment

    study = get_study(name)
    profile = get_profile(profile)
    settings = dict(study.settings.get(profile.name, {}))
    home_path = lab_home(home)
    ctx = StudyContext(name, profile, settings, home_path, ensure_dir(study_dir(name, home_path)), workers, progress,
                       Path(data_dir) if data_dir else None, dict(data or {}))
    if log is not None:
        ctx.log = log
    started, t0 = _now(), time.perf_counter()
    planned = study.plan(ctx)
    _write_json(ctx.folder / "plan.json", {"study": name, "study_version": study.version, "profile": profile.name,
                                           "runs": [{"labels": p.labels, "config": p.config} for p in planned]})
    ctx.log(f"[{name}] {len(planned)} training run(s), profile {profile.name}")
    runs = ctx.train(planned, train_fn=type(study).train_fn)
    t1 = time.perf_counter()
    failed = runs.failed()
    ctx.log(f"[{name}] training done ({len(runs) - len(failed)} finished, {len(failed)} not) in {t1 - t0:.0f}s; "
            f"analyzing")
    output = study.analyze(ctx, runs)
    t2 = time.perf_counter()
    notes = list(output.notes)
    if failed:
        notes.append(f"{len(failed)} of {len(runs)} run(s) did not finish and are left out of every statistic: "
                     + "; ".join(f"{r.run_id} {r.labels}: {(r.error or r.status).splitlines()[-1][:200]}"
                                 for r in failed[:5]))
    verdicts = [apply_profile(v, profile.name, profile.conclusive) for v in output.verdicts]
    environment = collect_environment(device="cpu" if profile.device == "cpu" else None)
    result = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "study": name, "study_version": study.version,
        "title": study.title, "summary": study.summary, "claims": list(study.claims), "profile": profile.name,
        "conclusive": profile.conclusive, "settings": settings, "data": ctx.data,
        "code_version": environment.get("code_version", "unknown"), "environment": environment,
        "started_at": started, "finished_at": _now(),
        "timing": {"train_s": round(t1 - t0, 1), "analysis_s": round(t2 - t1, 1), "total_s": round(t2 - t0, 1),
                   "runs_epoch_s": round(sum(row.get("epoch_time_s", 0.0) or 0.0 for r in runs for row in r.history),
                                         1)},
        "runs": [{"run_id": r.run_id, "labels": r.labels, "status": r.status, "config": r.config,
                  "final": r.final, "error": r.error} for r in runs],
        "tables": [t.to_dict() for t in output.tables], "figures": [f.to_dict() for f in output.figures],
        "anchors": [a.to_dict() for a in output.anchors], "verdicts": [v.to_dict() for v in verdicts],
        "notes": notes,
    }
    result = _clean_json(result)
    _write_json(ctx.folder / "result.json", result)
    ctx.log(f"[{name}] wrote {ctx.folder / 'result.json'} ({result['timing']['total_s']:.0f}s): "
            + ", ".join(v["status"] for v in result["verdicts"]))
    return result
