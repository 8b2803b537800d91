"""What stands behind a figure or table: the exact configs of its runs, split into shared and varying settings.

Listing a full config for each of a hundred runs hides what matters; :func:`config_summary` gives the settings
every run shares (each with its one value) and, per run, only the settings that vary — together they are the
exact configs, with nothing left out.

Examples:
    >>> runs = [{"run_id": "a", "labels": {"seed": 0}, "config": {"lr": 0.1, "seed": 0}},
    ...         {"run_id": "b", "labels": {"seed": 1}, "config": {"lr": 0.1, "seed": 1}}]
    >>> s = config_summary(runs)
    >>> s.shared, s.varying, s.rows
    ({'lr': 0.1}, ['seed'], [('a', {'seed': 0}, {'seed': 0}), ('b', {'seed': 1}, {'seed': 1})])
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = ["ConfigSummary", "config_summary", "runs_for", "format_value"]


@dataclass(frozen=True)
class ConfigSummary:
    """``shared``: setting → value common to all runs; ``varying``: the other settings; ``rows``: per run
    ``(run_id, labels, {varying setting: value})``."""

    shared: dict[str, Any]
    varying: list[str]
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]]


_MISSING = "<absent>"


def format_value(value: Any) -> str:
    """A config value as compact JSON text (``0.1``, ``"batch_norm"`` → ``batch_norm``, ``[1, 2]``)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def config_summary(runs: Iterable[dict[str, Any]]) -> ConfigSummary:
    """Split the configs of ``runs`` (dicts with ``run_id``, ``labels``, ``config``) into shared and varying ones."""
    runs = list(runs)
    keys: list[str] = []
    for run in runs:
        for key in run.get("config") or {}:
            if key not in keys:
                keys.append(key)
    shared: dict[str, Any] = {}
    varying: list[str] = []
    for key in keys:
        values = {format_value((run.get("config") or {}).get(key, _MISSING)) for run in runs}
        if len(values) == 1 and runs and key in (runs[0].get("config") or {}):
            shared[key] = runs[0]["config"][key]
        else:
            varying.append(key)
    rows = [(str(run.get("run_id", "")), dict(run.get("labels") or {}),
             {key: (run.get("config") or {}).get(key, _MISSING) for key in varying}) for run in runs]
    return ConfigSummary(shared, varying, rows)


def runs_for(result: dict[str, Any], run_ids: Iterable[str]) -> list[dict[str, Any]]:
    """The run entries of ``result`` named by ``run_ids`` (all runs when ``run_ids`` is empty)."""
    wanted = list(run_ids)
    runs = result.get("runs") or []
    if not wanted:
        return list(runs)
    index = {run.get("run_id"): run for run in runs}
    return [index[r] for r in wanted if r in index]
