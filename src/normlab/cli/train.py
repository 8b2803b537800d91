"""``normlab train``: train one model with a chosen normalization and store the run.

Every field of :class:`normlab.lab.config.TrainConfig` is an option (``--batch-size``, ``--no-decay-norm``, ...,
generated from the dataclass so the two never drift apart); ``--config FILE.json`` gives a base that the options
override. Rerunning the same command resumes an interrupted run from its last completed epoch and returns at once
for a finished one. Under ``torchrun --nproc_per_node N -m normlab.cli train ...`` it trains with
DistributedDataParallel (``--world-size`` is taken from torchrun).

Examples::

    normlab train --model resnet20 --norm group_norm --data-dir ~/data/cifar10 --epochs 2
    normlab train --model char_transformer --dataset shakespeare --norm rms_norm --norm-placement post \\
        --optimizer adamw --lr 1e-3 --weight-decay 0.1 --batch-size 64 --data-dir ~/data
    normlab train --dataset synthetic --train-subset 512 --epochs 1 --quiet
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from typing import Any

_METAVARS = {int: "N", float: "X", str: "NAME"}
_GROUPS = {"model": "model", "data": "data", "optim": "optimisation", "speed": "numerics and speed", "run": "the run"}


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"num_groups\": 8}}': {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"num_groups\": 8}}', got {text!r}")
    return value


def _optional(kind: type):
    def parse(text: str) -> Any:
        if text.lower() in ("none", "null", ""):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__} or 'none', got {text!r}") from None
    parse.__name__ = kind.__name__
    return parse


def add_config_options(parser: argparse.ArgumentParser) -> None:
    from normlab.lab.config import TrainConfig

    groups = {key: parser.add_argument_group(title) for key, title in _GROUPS.items()}
    hints = typing.get_type_hints(TrainConfig)
    for spec in dataclasses.fields(TrainConfig):
        hint = hints[spec.name]
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        base = next(t for t in allowed if t is not type(None))
        optional = type(None) in allowed
        flag = "--" + spec.name.replace("_", "-")
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        text = f"{spec.metadata['help']} (default: {json.dumps(default)})"
        options: dict[str, Any] = {"dest": spec.name, "default": argparse.SUPPRESS, "help": text}
        if base is bool and spec.name.startswith("no_"):  # --no-decay-norm switches it on, --decay-norm off
            groups[spec.metadata["group"]].add_argument("--" + spec.name[3:].replace("_", "-"), dest=spec.name,
                                                        action="store_false", default=argparse.SUPPRESS,
                                                        help=argparse.SUPPRESS)
            options.update(action="store_true")
        elif base is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif base is dict:
            options.update(type=_json_dict, metavar="JSON")
        elif base is list:
            item = float if spec.name in ("betas", "milestones") else str
            options.update(type=item, nargs="*", metavar="X" if item is float else "NAME")
        else:
            options["type"] = _optional(base) if optional else base
            choices = spec.metadata.get("choices")
            options["metavar"] = "{" + ",".join(choices) + "}" if choices else _METAVARS[base]
        groups[spec.metadata["group"]].add_argument(flag, **options)


def add_parser(subparsers: Any, name: str, help_text: str) -> None:
    """Add ``normlab train`` to the command's subparsers."""
    parser = subparsers.add_parser(
        name, help=help_text, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one model with a chosen normalization; every epoch is checkpointed and logged to the "
                    "results store, so rerunning the same command resumes (or, once finished, just reports).",
        epilog="Data: --data-dir or $NORMLAB_DATA names a folder holding cifar-10-batches-py (or the files "
               "themselves), cifar-100-python, or tinyshakespeare/input.txt; --download fetches the official "
               "files. Results: --home or $NORMLAB_HOME (default ./normlab-runs). 'normlab norms' lists the norms.\n"
               "Example: normlab train --model resnet20 --norm group_norm --data-dir ~/data/cifar10 --epochs 2")
    where = parser.add_argument_group("where")
    where.add_argument("--data-dir", default=None, help="data folder (default: $NORMLAB_DATA)")
    where.add_argument("--download", action="store_true", help="download the data set if it is missing")
    where.add_argument("--home", default=None, help="lab folder for results.db and runs/ (default: $NORMLAB_HOME "
                                                    "or ./normlab-runs)")
    where.add_argument("--config", default=None, metavar="FILE",
                       help="a JSON file of TrainConfig fields; options given on the command line override it")
    where.add_argument("--quiet", action="store_true", help="no progress bars (for logs); the per-epoch table "
                                                            "lines and the summary are still printed")
    where.add_argument("--print-config", action="store_true",
                       help="print the full configuration and its run id, then exit without training")
    add_config_options(parser)
    parser.set_defaults(func=run)


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given: the ``--config`` JSON file, overridden by the TrainConfig options on the command line
    (shared by ``normlab train`` and ``normlab sweep``)."""
    from normlab.lab.config import TrainConfig

    values: dict[str, Any] = {}
    if args.config:
        with open(args.config, encoding="utf-8") as handle:
            values = json.load(handle)
        if not isinstance(values, dict):
            raise ValueError(f"{args.config} must hold a JSON object of TrainConfig fields")
    values.update({name: getattr(args, name) for name in TrainConfig.field_names() if hasattr(args, name)})
    return values


def _config_from(args: argparse.Namespace):
    from normlab.lab.config import TrainConfig

    values = config_values(args)
    if "world_size" not in values:
        values["world_size"] = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return TrainConfig.from_dict(values)


def _fail(message: str) -> int:
    print(f"normlab train: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run ``normlab train`` with parsed arguments; returns the exit code."""
    try:
        config = _config_from(args)
    except (ValueError, TypeError, OSError) as error:
        return _fail(str(error))
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2, sort_keys=True))
        print(f"run id: {config.run_id}")
        return 0
    from normlab.lab.data import DataNotFoundError
    from normlab.lab.trainer import train

    try:
        result = train(config, home=args.home, progress=not args.quiet, data_dir=args.data_dir,
                       download=args.download)
    except DataNotFoundError as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        print(f"\ninterrupted: rerun the same command to resume run {config.run_id} from its last completed epoch",
              file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0") or 0) == 0:
        metrics = "  ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
        print(f"run {result.run_id} {'(already finished) ' if result.skipped else ''}stored in {result.run_dir}")
        print(f"final: {metrics}")
    return 0
