"""Sweeps: a grid of training runs, run in parallel worker processes, resumable.

:func:`expand_grid` turns a base config and a grid ``{option: [values]}`` into one :class:`TrainConfig` per
combination (the cartesian product). :func:`run_sweep` trains them in ``workers`` processes and returns one
:class:`SweepResult` per run:

* **finished runs are skipped** — the results store knows every run by the hash of its config, so a rerun of
  the same sweep only trains what is missing;
* **interrupted runs resume** — a run left ``running`` by a killed sweep (or ``failed``) is trained again, and
  the trainer continues from the checkpoint it wrote at the end of the last completed epoch;
* **a failed run does not stop the others** — its error (the traceback, or the exit code of a worker process
  that died) is recorded in the store and in its result;
* one progress bar counts runs done out of the total, with the rate and the estimated time left.

Workers are started with the ``spawn`` method (safe with threads and CUDA) and each limits torch's threads to
``cores // workers`` so that the processes do not oversubscribe the CPU. ``workers=0`` trains in this process,
one run after another (handy for debugging). Two sweeps must not share a home folder at the same time.

Examples:
    >>> configs = expand_grid({"model": "resnet20", "dataset": "synthetic", "epochs": 1},
    ...                       {"norm": ["batch_norm", "group_norm"], "seed": [0, 1]})
    >>> [(c.norm, c.seed) for c in configs]
    [('batch_norm', 0), ('batch_norm', 1), ('group_norm', 0), ('group_norm', 1)]
    >>> expand_grid({}, {"batch_szie": [8]})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: unknown option 'batch_szie' in the grid; did you mean 'batch_size'? ...
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import multiprocessing
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing import connection
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from normlab.lab.config import TrainConfig
from normlab.lab.paths import lab_home, store_path

__all__ = ["SweepResult", "expand_grid", "field_name", "run_sweep", "worker_threads"]

TrainFn = Callable[..., Any]


@dataclass(frozen=True)
class SweepResult:
    """The outcome of one run of a sweep.

    ``status`` is ``"finished"`` (trained in this sweep), ``"skipped"`` (already finished before it) or
    ``"failed"`` (``error`` says why). ``metrics`` are the run's final metrics, ``seconds`` the wall time it took
    in this sweep, and ``resumed`` tells that the run had been started before and was continued.
    """

    run_id: str
    config: TrainConfig
    status: str
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    resumed: bool = False

    @property
    def ok(self) -> bool:
        """True when the run is finished (in this sweep or before)."""
        return self.status in ("finished", "skipped")


# -- the grid ---------------------------------------------------------------------------------------------------
def field_name(name: str, where: str = "the options") -> str:
    """``name`` as a TrainConfig field (``batch-size`` → ``batch_size``), or a ValueError naming the closest one.

    Examples:
        >>> field_name("batch-size")
        'batch_size'
    """
    fields = TrainConfig.field_names()
    canonical = str(name).strip().replace("-", "_")
    if canonical in fields:
        return canonical
    close = difflib.get_close_matches(canonical, fields, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid options: {', '.join(fields)}"
    raise ValueError(f"unknown option {name!r} in {where}; {hint} (normlab train --help lists the options)")


def expand_grid(base: Mapping[str, Any] | TrainConfig, grid: Mapping[str, Iterable[Any]]) -> list[TrainConfig]:
    """One config per combination of the grid's values, on top of ``base``.

    Args:
        base: the settings shared by every run (TrainConfig field names; ``-`` may stand for ``_``), or a
            :class:`TrainConfig`.
        grid: option → list of values; the runs are the cartesian product, the last option varying fastest.
            A grid option overrides the same option in ``base``.

    Returns:
        The configs in grid order, each combination once (repeated values give one run).

    Raises:
        ValueError: an unknown option (with the closest valid name), an empty or non-list value list, or a
            combination that is not a valid config (the message names it).
    """
    base_values = base.to_dict() if isinstance(base, TrainConfig) else \
        {field_name(k, "the base config"): v for k, v in dict(base).items()}
    names, value_lists = [], []
    for key, values in grid.items():
        name = field_name(key, "the grid")
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
            raise ValueError(f"grid option {key!r} needs a list of values, got {values!r}; e.g. {{{name!r}: [..]}}")
        values = list(values)
        if not values:
            raise ValueError(f"grid option {key!r} has no values; give at least one")
        if name in names:
            raise ValueError(f"grid option {name!r} is given twice")
        names.append(name)
        value_lists.append(values)
    configs, seen = [], set()
    for combination in itertools.product(*value_lists):
        changes = dict(zip(names, combination))
        try:
            config = TrainConfig.from_dict({**base_values, **changes})
        except (TypeError, ValueError) as error:
            raise ValueError(f"grid combination {changes} is not a valid config: {error}") from None
        if config.run_id not in seen:
            seen.add(config.run_id)
            configs.append(config)
    return configs


# -- running ----------------------------------------------------------------------------------------------------
def worker_threads(workers: int) -> int:
    """Torch threads per worker: the usable cores divided among the workers (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def size_numba_pool(threads: int) -> None:
    """Ask for a Numba thread pool of ``threads`` (``NUMBA_NUM_THREADS``), unless the user chose a size or Numba is
    already loaded in this process: its pool size is then fixed, and a changed variable would make Numba's next
    compilation fail ("Cannot set NUMBA_NUM_THREADS ... once the threads have been launched")."""
    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))


def _default_train() -> TrainFn:
    from normlab.lab.trainer import train

    return train


def _metrics_of(result: Any) -> dict:
    for name in ("metrics", "final", "final_metrics"):
        value = getattr(result, name, None)
        if isinstance(value, Mapping):
            return dict(value)
    return dict(result) if isinstance(result, Mapping) else {}


def _record_failure(home: Path, run_id: str, error: str) -> None:
    """Mark a run failed in the store unless it is finished (the trainer may have recorded it already)."""
    from normlab.lab.store import ResultsStore, UnknownRunError

    with ResultsStore(store_path(home)) as store:
        try:
            if store.get(run_id).status != "finished":
                store.fail_run(run_id, error)
        except UnknownRunError:
            pass


def _train_one(config_dict: dict, home: Path, train_fn: TrainFn | None, train_kwargs: dict) -> dict:
    """Train one run; return ``{"status", "metrics" | "error", "seconds"}`` and never raise an Exception."""
    start = time.perf_counter()
    try:
        config = TrainConfig.from_dict(config_dict)
        kwargs = dict(train_kwargs) if train_fn is not None else {"verbose": False, **train_kwargs}
        result = (train_fn or _default_train())(config, home=home, progress=False, **kwargs)
        return {"status": "finished", "metrics": _metrics_of(result), "seconds": time.perf_counter() - start}
    except Exception:
        error = traceback.format_exc()
        _record_failure(home, TrainConfig.from_dict(config_dict).run_id, error)
        return {"status": "failed", "error": error, "seconds": time.perf_counter() - start}


def _worker_main(tasks: Any, results: Any, threads: int, home: Path, train_fn: TrainFn | None,
                 train_kwargs: dict) -> None:
    """A worker process: receive ``(index, config dict)`` tasks until ``None``, send back ``(index, outcome)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the workers
    # Size Numba's thread pool like torch's before anything imports Numba: a larger pool oversubscribes the cores
    # that the other workers use.
    size_numba_pool(threads)
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    try:
        while (task := tasks.recv()) is not None:
            index, config_dict = task
            results.send((index, _train_one(config_dict, home, train_fn, train_kwargs)))
    except (EOFError, BrokenPipeError):  # the parent is gone (killed): nothing more to do
        pass


class _Pool:
    """Worker processes, each with its own pipes and fed one task at a time: the parent always knows which run a
    worker holds, and a worker that dies (even while sending) fails only its own run — a new worker takes its
    place. (A shared multiprocessing.Queue could stay locked forever by a worker killed mid-write.)"""

    def __init__(self, size: int, home: Path, train_fn: TrainFn | None, train_kwargs: dict):
        self.context = multiprocessing.get_context("spawn")
        self.args = (worker_threads(size), home, train_fn, train_kwargs)
        self.workers: list[dict] = [self._start() for _ in range(size)]

    def _start(self) -> dict:
        task_reader, task_writer = self.context.Pipe(duplex=False)
        result_reader, result_writer = self.context.Pipe(duplex=False)
        process = self.context.Process(target=_worker_main, args=(task_reader, result_writer, *self.args),
                                       daemon=True)
        process.start()
        task_reader.close()
        result_writer.close()
        return {"process": process, "tasks": task_writer, "results": result_reader, "task": None, "since": 0.0}

    def idle(self) -> list[dict]:
        return [w for w in self.workers if w["task"] is None]

    def busy(self) -> bool:
        return any(w["task"] is not None for w in self.workers)

    def submit(self, worker: dict, index: int, config_dict: dict) -> bool:
        """Give a task to an idle worker; False (and a new worker in its place) if it had died meanwhile."""
        try:
            worker["tasks"].send((index, config_dict))
        except OSError:
            worker["process"].join(timeout=10)
            self.workers[self.workers.index(worker)] = self._start()
            return False
        worker["task"], worker["since"] = index, time.perf_counter()
        return True

    def results(self, timeout: float, *, replace: bool) -> list[tuple[int, dict]]:
        """Outcomes that arrived within ``timeout``, including those of workers that died (replaced by new workers
        when ``replace``, else dropped)."""
        busy = [w for w in self.workers if w["task"] is not None]
        connection.wait([w["results"] for w in busy] + [w["process"].sentinel for w in busy], timeout)
        arrived = []
        for worker in busy:
            try:
                if worker["results"].poll():
                    arrived.append(worker["results"].recv())
                    worker["task"] = None
                    continue
            except (EOFError, OSError):  # died while sending
                pass
            if worker["process"].is_alive():
                continue
            worker["process"].join()
            code = worker["process"].exitcode
            why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            error = (f"the worker process training this run died ({why}) — out of memory, a crash in native code, "
                     "or killed from outside; rerun the sweep to resume it")
            arrived.append((worker["task"], {"status": "failed", "error": error,
                                             "seconds": time.perf_counter() - worker["since"]}))
            self.workers.remove(worker)
            if replace:
                self.workers.append(self._start())
        return arrived

    def close(self, *, kill: bool = False) -> None:
        for worker in self.workers:
            if kill:
                worker["process"].terminate()
            else:
                try:
                    worker["tasks"].send(None)
                except OSError:  # already gone
                    pass
        for worker in self.workers:
            worker["process"].join(timeout=10 if kill else 60)
            if worker["process"].is_alive():
                worker["process"].kill()
            worker["tasks"].close()
            worker["results"].close()


def run_sweep(configs: Iterable[TrainConfig | Mapping[str, Any]], *, home: str | os.PathLike | None = None,
              workers: int = 2, progress: bool = True, quiet: bool = False, train_fn: TrainFn | None = None,
              train_kwargs: Mapping[str, Any] | None = None) -> list[SweepResult]:
    """Train every config not finished yet, in parallel worker processes.

    Args:
        configs: TrainConfigs (or dicts of their fields); a config given twice is trained once.
        home: the lab's home folder (see :func:`normlab.lab.paths.lab_home`).
        workers: worker processes (each with ``cores // workers`` torch threads); 0 trains in this process.
        progress: show the overall progress bar (runs done / total, rate, time left).
        quiet: print nothing (no bar, no per-run lines) — for logs.
        train_fn: what trains one run, called as ``train_fn(config, home=..., progress=False, **train_kwargs)``;
            default :func:`normlab.lab.trainer.train`. It must be a module-level function (workers import it).
        train_kwargs: extra keyword arguments for ``train_fn`` (e.g. ``{"data_dir": ...}``).

    Returns:
        One :class:`SweepResult` per distinct config, in the order given.

    Raises:
        KeyboardInterrupt: after stopping the workers; runs in flight stay resumable.
    """
    from tqdm.auto import tqdm

    from normlab.lab.store import ResultsStore

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an int >= 0 (0 trains in this process), got {workers!r}")
    home = lab_home(home)
    extra = dict(train_kwargs or {})
    unique: dict[str, TrainConfig] = {}
    for config in configs:
        config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        unique.setdefault(config.run_id, config)
    ordered = list(unique.values())
    results: dict[int, SweepResult] = {}
    todo: list[int] = []
    with ResultsStore(store_path(home)) as store:
        for index, config in enumerate(ordered):
            record = store.register(config.to_dict())
            if record.status == "finished":
                results[index] = SweepResult(record.run_id, config, "skipped", dict(record.metrics or {}))
            else:
                todo.append(index)
                results[index] = SweepResult(record.run_id, config, "pending", resumed=record.status != "pending")
    bar = tqdm(total=len(ordered), initial=len(ordered) - len(todo), desc="sweep", unit="run",
               disable=quiet or not progress, dynamic_ncols=True)
    failed = 0

    def settle(index: int, outcome: dict) -> None:
        nonlocal failed
        previous = results[index]
        results[index] = dataclasses.replace(previous, status=outcome["status"], metrics=outcome.get("metrics", {}),
                                             error=outcome.get("error"), seconds=outcome["seconds"])
        failed += outcome["status"] == "failed"
        if not quiet:
            bar.write(_summary_line(results[index]))
        bar.set_postfix(failed=failed, refresh=False)
        bar.update(1)

    pool = None
    try:
        if workers == 0:
            for index in todo:
                settle(index, _train_one(ordered[index].to_dict(), home, train_fn, extra))
        elif todo:
            pool = _Pool(min(workers, len(todo)), home, train_fn, extra)
            waiting = list(todo)
            while waiting or pool.busy():
                for worker in pool.idle():
                    if waiting and pool.submit(worker, waiting[0], ordered[waiting[0]].to_dict()):
                        waiting.pop(0)
                for index, outcome in pool.results(timeout=0.5, replace=bool(waiting)):
                    settle(index, outcome)
                    if outcome["status"] == "failed" and "worker process" in outcome.get("error", ""):
                        _record_failure(home, ordered[index].run_id, outcome["error"])
            pool.close()
            pool = None
    except KeyboardInterrupt:
        if not quiet:
            bar.write("sweep interrupted: finished runs are stored; run the same sweep again to resume the rest")
        raise
    finally:
        if pool is not None:
            pool.close(kill=True)
        bar.close()
    return [results[index] for index in range(len(ordered))]


def _summary_line(result: SweepResult) -> str:
    config = result.config
    head = f"{result.status:<8} {result.run_id}  {config.model} {config.norm} bs={config.batch_size} seed={config.seed}"
    if result.status == "failed":
        last = (result.error or "").strip().splitlines()
        return f"{head}  ({result.seconds:.1f}s) error: {last[-1] if last else 'unknown'}"
    shown = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and k in _SHOWN_METRICS)
    resumed = " resumed" if result.resumed else ""
    return f"{head}  {shown} ({result.seconds:.1f}s{resumed})"


_SHOWN_METRICS = ("test_acc", "test_loss", "val_loss", "train_loss")
