"""``normlab runs``: list, show and export the runs in the results store.

* ``normlab runs`` / ``normlab runs list`` — one line per run: id, status, model, norm, its key settings (batch
  size, epochs, seed and whatever else differs between the listed runs), epochs done, final accuracy and loss,
  and how long it took. Filters: ``--status``, ``--model``, ``--norm``, ``--where KEY=VALUE``, ``--last N``.
* ``normlab runs show RUN_ID`` — a run's status and error, its config (settings that differ from the defaults
  marked ``*``), environment, final metrics and the per-epoch metrics as a table. A unique prefix of the id
  (4 characters or more) is enough.
* ``normlab runs export --out FILE.csv [--table runs|epochs]`` — the store as CSV (one row per run with its
  config and final metrics, or one row per run and epoch).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime
from typing import Any

__all__ = ["add_parser", "run", "format_runs_table", "format_run"]

_ACCURACY_KEYS = ("test_acc", "val_acc", "accuracy", "acc")
_LOSS_KEYS = ("test_loss", "val_loss", "loss", "train_loss")
_ALWAYS_SHOWN = (("batch_size", "bs"), ("epochs", "ep"), ("seed", "seed"))
_NEVER_SHOWN = {"model", "norm", "device", "eval_batch_size"}  # model/norm have their own columns
# Settings that differ between the listed runs are shown in this order first (then alphabetically), cut at a width.
_FIRST = ("lr", "optimizer", "weight_decay", "norm_kwargs", "norm_placement", "weight_norm", "dataset", "schedule")
_SETTINGS_WIDTH = 60


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Add the ``runs`` subcommand with its ``list``, ``show`` and ``export`` actions."""
    parser = subparsers.add_parser(
        name, help=help_text, description="List, show or export the training runs stored in the results database "
                                          "(<home>/results.db). Without an action, lists the runs.",
        epilog="Examples: 'normlab runs', 'normlab runs list --norm group_norm --status finished', 'normlab runs "
               "show 3f2a', 'normlab runs export --out runs.csv --table epochs'.")
    parser.add_argument("--home", default=None, metavar="DIR",
                        help="the lab folder (default: $NORMLAB_HOME, else ./normlab-runs)")
    parser.set_defaults(func=run, action="list", status=None, model=None, norm=None, where=[], last=None)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    home = argparse.ArgumentParser(add_help=False)
    home.add_argument("--home", default=argparse.SUPPRESS, metavar="DIR", help="the lab folder")

    listing = actions.add_parser("list", parents=[home], help="one line per run (the default action)",
                                 description="One line per stored run, oldest first.")
    listing.add_argument("--status", choices=("pending", "running", "finished", "failed"), help="only this status")
    listing.add_argument("--model", help="only this model (e.g. resnet20)")
    listing.add_argument("--norm", help="only this normalization (a registry name, e.g. group_norm)")
    listing.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                         help="only runs whose config has KEY=VALUE (repeatable), e.g. --where batch_size=8")
    listing.add_argument("--last", type=int, metavar="N", help="only the N most recent runs")

    show = actions.add_parser("show", parents=[home], help="a run's config, environment and per-epoch metrics",
                              description="Show one run: status, config, environment, final and per-epoch metrics.")
    show.add_argument("run_id", metavar="RUN_ID", help="the run id or a unique prefix of it (4+ characters)")

    export = actions.add_parser("export", parents=[home], help="write the runs or their per-epoch metrics as CSV",
                                description="Export the results store as CSV.")
    export.add_argument("--out", required=True, metavar="FILE.csv", help="the CSV file to write")
    export.add_argument("--table", choices=("runs", "epochs"), default="runs",
                        help="'runs': one row per run (config and final metrics); 'epochs': one row per run and "
                             "epoch (default: runs)")
    export.add_argument("--status", choices=("pending", "running", "finished", "failed"), help="only this status")


# -- formatting -------------------------------------------------------------------------------------------------
def _pick(metrics: dict | None, keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = (metrics or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    return f"{value:.4g}"


def _elapsed(record) -> float | None:
    """Seconds of the run's last attempt: to its end, to its last update (failed, pending) or to now (running)."""
    if not record.started_at:
        return None
    start = datetime.fromisoformat(record.started_at)
    end = {"finished": record.finished_at, "running": None}.get(record.status, record.updated_at)
    stop = datetime.fromisoformat(end) if end else datetime.now(start.tzinfo)
    return max(0.0, (stop - start).total_seconds())


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _settings(record, varying: list[str]) -> str:
    config = record.config
    parts = [f"{label}={_short(config.get(key))}" for key, label in _ALWAYS_SHOWN if key in config]
    parts += [f"{key}={_short(config.get(key))}" for key in varying]
    text = " ".join(parts)
    return text if len(text) <= _SETTINGS_WIDTH else text[:_SETTINGS_WIDTH - 1] + "…"  # 'show' has them all


def _table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header).rstrip(), line(["-" * w for w in widths]).rstrip()]
                     + [line(r).rstrip() for r in rows])


def format_runs_table(records: list, histories: dict[str, list[dict]] | None = None) -> str:
    """The fixed-width table of ``normlab runs list``.

    Args:
        records: :class:`normlab.lab.store.RunRecord` objects.
        histories: run id → its per-epoch metrics (``ResultsStore.history``): the epochs done (shown as
            ``done/total``) and the training time (the sum of ``epoch_time_s``, so it counts every attempt of a
            resumed run; without it, the wall time of the last attempt).
    """
    histories = histories or {}
    shown = {key for key, _ in _ALWAYS_SHOWN} | _NEVER_SHOWN
    keys = sorted({k for r in records for k in r.config} - shown,
                  key=lambda k: (_FIRST.index(k) if k in _FIRST else len(_FIRST), k))
    varying = [k for k in keys if len({_short(r.config.get(k)) for r in records}) > 1]
    rows = []
    for r in records:
        history = histories.get(r.run_id)
        total = r.config.get("epochs")
        progress = "-" if history is None else f"{len(history)}/{total}" if total else str(len(history))
        times = [h["epoch_time_s"] for h in history or [] if isinstance(h.get("epoch_time_s"), (int, float))]
        seconds = sum(times) if times else _elapsed(r)
        accuracy = _pick(r.metrics, _ACCURACY_KEYS)
        rows.append([r.run_id, r.status, str(r.config.get("model", "-")), str(r.config.get("norm", "-")),
                     _settings(r, varying), progress, "-" if accuracy is None else f"{100 * accuracy:.2f}%",
                     _number(_pick(r.metrics, _LOSS_KEYS)), _duration(seconds)])
    header = ["run id", "status", "model", "norm", "settings", "epochs", "accuracy", "loss", "train time"]
    return _table(header, rows, right={5, 6, 7, 8})


def format_run(record, history: list[dict], artifacts: dict, defaults: dict | None = None) -> str:
    """The text of ``normlab runs show``: status, error, config, environment, final and per-epoch metrics."""
    defaults = defaults or {}
    lines = [f"run {record.run_id}  {record.status}  (attempts: {record.attempts})",
             f"  created {record.created_at}   started {record.started_at or '-'}   "
             f"finished {record.finished_at or '-'}   time {_duration(_elapsed(record))}"]
    if record.error:
        lines += ["", "error (last lines):"] + [f"  {line}" for line in record.error.strip().splitlines()[-15:]]
    width = max(map(len, record.config), default=0)
    lines += ["", "config (* = not the default):"]
    order = {key: position for position, key in enumerate(defaults)}  # the config's own field order
    for key, value in sorted(record.config.items(), key=lambda item: order.get(item[0], len(order))):
        mark = "*" if key in defaults and defaults[key] != value else " "
        lines.append(f" {mark}{key:<{width}}  {_short(value)}")
    env = record.environment or {}
    if env:
        width = max(map(len, env))
        lines += ["", "environment:"] + [f"  {key:<{width}}  {_short(value)}" for key, value in env.items()]
    if record.metrics:
        lines += ["", "final metrics:"] + [f"  {key}: {_number(value)}" for key, value in record.metrics.items()]
    lines += ["", "per-epoch metrics:"]
    if history:
        names = sorted({k for row in history for k in row} - {"epoch"})
        rows = [[str(row["epoch"])] + [_number(row.get(name)) for name in names] for row in history]
        lines += ["  " + line for line in _table(["epoch"] + names, rows, right=set(range(len(names) + 1)))
                  .splitlines()]
    else:
        lines.append("  none logged yet")
    if artifacts:
        lines += ["", "artifacts: " + ", ".join(sorted(artifacts))]
    return "\n".join(lines)


# -- the command ------------------------------------------------------------------------------------------------
def _parse_where(items: list[str]) -> dict[str, Any]:
    where = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--where needs KEY=VALUE (e.g. batch_size=8), got {item!r}")
        key = key.strip().replace("-", "_")
        try:
            from normlab.cli.sweep import parse_option_value

            where[key] = parse_option_value(key, text)
        except ValueError:  # not a TrainConfig field, or free-form: JSON if it parses, else the text
            try:
                where[key] = json.loads(text)
            except ValueError:
                where[key] = text
    return where


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; exit code 1 for an unknown run id, 2 for bad options."""
    from normlab.lab.paths import store_path
    from normlab.lab.store import ResultsStore, UnknownRunError

    action, path = args.action or "list", store_path(args.home)
    if not path.exists():
        print(f"no results store at {path} yet: train a run first (normlab train ...) or point --home / "
              "NORMLAB_HOME at your lab folder", file=sys.stdout if action == "list" else sys.stderr)
        return 0 if action == "list" else 1
    with ResultsStore(path) as store:
        if action == "export":
            count = store.export_csv(args.out, args.table, status=args.status)
            print(f"wrote {count} row{'s' * (count != 1)} ({args.table}) to {args.out}")
            return 0
        if action == "show":
            try:
                record = store.get(args.run_id)
            except UnknownRunError as error:
                print(f"normlab runs show: {error}; 'normlab runs list' shows the ids", file=sys.stderr)
                return 1
            print(format_run(record, store.history(record.run_id), store.artifacts(record.run_id), _defaults()))
            return 0
        try:
            where = _parse_where(args.where)
        except ValueError as error:
            print(f"normlab runs list: {error}", file=sys.stderr)
            return 2
        if args.model:
            where["model"] = args.model
        records = store.runs(status=args.status, where=where)
        if args.norm:
            try:
                records = [r for r in records if _same_norm(r.config.get("norm"), args.norm)]
            except ValueError as error:
                print(f"normlab runs list: {error}", file=sys.stderr)
                return 2
        if args.last is not None:
            records = records[-args.last:] if args.last > 0 else []
        if not records:
            print(f"no runs match in {path}")
            return 0
        print(format_runs_table(records, {r.run_id: store.history(r.run_id) for r in records}))
        print(f"{len(records)} run{'s' * (len(records) != 1)} in {path}")
    return 0


def _same_norm(stored: Any, wanted: str) -> bool:
    """Whether a stored norm is the wanted one in any spelling (``gn`` is ``group_norm``)."""
    from normlab.registry import get_norm_spec

    target = get_norm_spec(wanted).name  # an unknown name raises with the valid ones
    try:
        return isinstance(stored, str) and get_norm_spec(stored).name == target
    except ValueError:
        return stored == wanted


def _defaults() -> dict[str, Any]:
    try:
        from normlab.lab.config import TrainConfig

        return TrainConfig().to_dict()
    except Exception:  # the defaults are only used to mark changed settings
        return {}
