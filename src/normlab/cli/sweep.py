"""``normlab sweep``: a grid of training runs in parallel worker processes; rerunning it resumes.

The base options are ``normlab train``'s (every :class:`~normlab.lab.config.TrainConfig` field, plus
``--config FILE.json``); each ``--grid KEY=V1,V2,...`` adds an axis, and the sweep trains the cartesian product
(:func:`normlab.lab.sweep.expand_grid`) with :func:`normlab.lab.sweep.run_sweep`. Finished runs are skipped, runs
interrupted by a kill resume from their last completed epoch, and a failed run is recorded and does not stop the
others. ``--dry-run`` prints the runs without training.

Examples::

    normlab sweep --model resnet20 --epochs 10 --data-dir ~/data --grid norm=batch_norm,group_norm \\
        --grid batch-size=8,32,128 --grid seed=0,1,2 --workers 2
    normlab sweep --dataset synthetic --epochs 1 --grid norm=batch_norm,layer_norm,none --dry-run
"""
from __future__ import annotations

import argparse
import json
import sys
import typing
from typing import Any

__all__ = ["add_parser", "run", "base_values", "format_plan", "parse_grid_option", "parse_option_value"]


def _train_options():
    """``normlab train``'s option builder (one definition for both commands)."""
    from normlab.cli.train import add_config_options

    return add_config_options


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Add ``normlab sweep`` to the command's subparsers."""
    parser = subparsers.add_parser(
        name, help=help_text, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train every combination of the --grid values (on top of the base options, the same as "
                    "'normlab train') in parallel worker processes. Every run is stored under the hash of its "
                    "config, so rerunning the same sweep skips finished runs and resumes interrupted ones; a run "
                    "that fails is recorded ('normlab runs show ID') and the others go on.",
        epilog="Example: normlab sweep --model resnet20 --epochs 10 --data-dir ~/data --grid norm=batch_norm,"
               "group_norm --grid batch-size=8,32 --grid seed=0,1,2 --workers 2\nGrid values are typed like the "
               "option (numbers, true/false, none); JSON lists or objects are separated by ';' "
               "(--grid 'betas=[0.9,0.99];[0.9,0.999]').")
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="an option and the values to sweep over (repeatable; the runs are the product)")
    sweep.add_argument("--workers", type=int, default=2, metavar="N",
                       help="worker processes training at once, each with cores/N threads; 0 trains in this "
                            "process (default: 2)")
    sweep.add_argument("--dry-run", action="store_true", help="print the runs (and which are done) without training")
    sweep.add_argument("--data-dir", default=None, help="data folder (default: $NORMLAB_DATA)")
    sweep.add_argument("--download", action="store_true",
                       help="download the data set if it is missing (once, before the workers start)")
    sweep.add_argument("--home", default=None, help="lab folder for results.db and runs/ (default: $NORMLAB_HOME "
                                                    "or ./normlab-runs)")
    sweep.add_argument("--config", default=None, metavar="FILE",
                       help="a JSON file of TrainConfig fields as the base; the options override it, the grid "
                            "overrides both")
    sweep.add_argument("--quiet", action="store_true", help="print nothing but errors (no progress bar, no lines)")
    _train_options()(parser)
    parser.set_defaults(func=run)


def base_values(args: argparse.Namespace) -> dict[str, Any]:
    """The base settings: the ``--config`` file, overridden by the TrainConfig options given."""
    from normlab.cli.train import config_values

    return config_values(args)


def format_plan(configs: list, grid_keys: list[str], statuses: dict[str, str]) -> str:
    """The ``--dry-run`` listing: the settings shared by every run (those not at their default), then one line
    per run with its id, its stored status and its grid values."""
    from normlab.lab.config import TrainConfig

    defaults = TrainConfig().to_dict()
    shared = {k: v for k, v in configs[0].to_dict().items() if k not in grid_keys and v != defaults.get(k)}
    lines = ["shared: " + (" ".join(f"{k}={json.dumps(v)}" for k, v in shared.items()) or "all defaults")]
    header = ["#", "run id", "stored"] + grid_keys
    rows = [[str(i), c.run_id, statuses.get(c.run_id, "new")]
            + [v if isinstance(v, str) else json.dumps(v) for v in (getattr(c, k) for k in grid_keys)]
            for i, c in enumerate(configs, 1)]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in [header] + rows]
    done = sum(statuses.get(c.run_id) == "finished" for c in configs)
    lines.append(f"{len(configs)} runs, {done} already finished")
    return "\n".join(lines)


def parse_option_value(name: str, text: str) -> Any:
    """Convert the text of a command-line value to the type of the TrainConfig field ``name``.

    Booleans accept true/false/yes/no/1/0, optional fields accept ``none``, lists and dicts are JSON
    (``[0.9,0.99]``, ``{"num_groups":8}``), numbers are numbers and strings stay strings.

    Examples:
        >>> parse_option_value("lr", "0.1"), parse_option_value("nesterov", "yes")
        (0.1, True)
        >>> parse_option_value("grad_clip", "none") is None
        True
    """
    from normlab.lab.config import TrainConfig
    from normlab.lab.sweep import field_name

    name = field_name(name)
    hint = typing.get_type_hints(TrainConfig)[name]
    allowed = [t for t in typing.get_args(hint) or (hint,) if t is not type(None)]
    optional = type(None) in typing.get_args(hint)
    kind, raw = allowed[0], text.strip()
    if optional and raw.lower() in ("none", "null"):
        return None
    try:
        if kind is bool:
            lowered = raw.lower()
            if lowered not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                raise ValueError
            return lowered in ("true", "yes", "1", "on")
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind in (list, dict):
            value = json.loads(raw)
            if not isinstance(value, kind):
                raise ValueError
            return value
    except ValueError:
        expected = {bool: "true or false", int: "an integer", float: "a number", list: "a JSON list such as [1,2]",
                    dict: 'a JSON object such as {"num_groups":8}'}[kind]
        raise ValueError(f"option {name!r} needs {expected}, got {text!r}") from None
    return raw


def parse_grid_option(text: str) -> tuple[str, list[Any]]:
    """Parse a ``--grid`` option ``key=v1,v2,...`` into ``(field name, typed values)``.

    List and dict values are JSON and may contain commas: separate such values with ``;`` instead
    (``betas=[0.9,0.99];[0.9,0.999]``).

    Examples:
        >>> parse_grid_option("norm=batch_norm,group_norm")
        ('norm', ['batch_norm', 'group_norm'])
        >>> parse_grid_option("batch-size=8,32")
        ('batch_size', [8, 32])
    """
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise ValueError(f"a grid option looks like key=v1,v2,... (e.g. norm=batch_norm,group_norm), got {text!r}")
    from normlab.lab.sweep import field_name

    name = field_name(key, "the grid")
    separator = ";" if ";" in values or values.lstrip().startswith(("[", "{")) else ","
    return name, [parse_option_value(name, part) for part in values.split(separator) if part.strip()]


def _check_data(configs: list, data_dir: Any, download: bool) -> None:
    """Load each real data set the runs need once, before any worker starts: a missing folder stops the sweep
    with the loader's message on how to get the data (instead of every run failing), and a download happens once."""
    from normlab.lab.data import load_cifar, load_shakespeare

    for dataset in sorted({c.dataset for c in configs} - {"synthetic"}):
        if dataset == "shakespeare":
            load_shakespeare(data_dir, download=download, progress=False)
        else:
            load_cifar(dataset, data_dir, download=download, progress=False)


def _fail(message: str) -> int:
    print(f"normlab sweep: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run ``normlab sweep``: 0 when every run is finished, 1 when some failed, 2 for bad options, 130 when
    interrupted."""
    from normlab.lab.sweep import expand_grid, run_sweep

    try:
        grid = dict(parse_grid_option(text) for text in args.grid)
        if len(grid) != len(args.grid):
            raise ValueError("an option is given twice in --grid; put all its values in one --grid KEY=V1,V2")
        configs = expand_grid(base_values(args), grid)
    except (ValueError, TypeError, OSError) as error:
        return _fail(str(error))
    if args.workers < 0:
        return _fail(f"--workers must be 0 or more, got {args.workers}")
    if args.dry_run:
        from normlab.lab.paths import store_path
        from normlab.lab.store import ResultsStore

        path = store_path(args.home)
        statuses = {}
        if path.exists():
            with ResultsStore(path) as store:
                statuses = {c.run_id: r.status for c in configs if (r := store.find(c.to_dict())) is not None}
        print(format_plan(configs, list(grid), statuses))
        return 0
    from normlab.lab.data import DataNotFoundError

    try:
        _check_data(configs, args.data_dir, args.download)
    except DataNotFoundError as error:
        return _fail(str(error))
    try:
        results = run_sweep(configs, home=args.home, workers=args.workers, progress=not args.quiet,
                            quiet=args.quiet, train_kwargs={"data_dir": args.data_dir, "download": args.download})
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume (finished runs are kept)", file=sys.stderr)
        return 130
    failed = [r for r in results if r.status == "failed"]
    if not args.quiet:
        counts = {s: sum(r.status == s for r in results) for s in ("finished", "skipped", "failed")}
        print(f"sweep: {len(results)} runs — {counts['finished']} trained, {counts['skipped']} already finished, "
              f"{counts['failed']} failed")
        _print_table(args.home, [r.run_id for r in results])
    for result in failed:
        last = (result.error or "").strip().splitlines()
        print(f"failed {result.run_id}: {last[-1] if last else 'unknown error'} (normlab runs show {result.run_id})",
              file=sys.stderr)
    return 1 if failed else 0


def _print_table(home: Any, run_ids: list[str]) -> None:
    from normlab.cli.runs import format_runs_table
    from normlab.lab.paths import store_path
    from normlab.lab.store import ResultsStore

    with ResultsStore(store_path(home)) as store:
        records = [store.get(run_id) for run_id in run_ids]
        print(format_runs_table(records, {r.run_id: store.history(r.run_id) for r in records}))
