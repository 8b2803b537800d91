"""The ``normlab`` command: one subcommand per module of this package.

Each subcommand module defines ``add_parser(subparsers)``, which adds its parser and sets ``func`` (called with the
parsed arguments, returning an exit code). Modules are imported only when their command runs, except for
building ``--help``, so the command starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (command, module, one-line help) — the order is the order of ``normlab --help``.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("train", "normlab.cli.train", "train one model with a chosen normalization and store the run"),
    ("sweep", "normlab.cli.sweep", "run a grid of training runs in parallel worker processes (resumable)"),
    ("runs", "normlab.cli.runs", "list, show or export the stored runs"),
    ("bench", "normlab.cli.bench", "time every normalization layer against torch.nn"),
    ("study", "normlab.cli.study", "run the studies that test the published claims"),
    ("report", "normlab.cli.report", "write the HTML and Markdown report of the studies"),
    ("recommend", "normlab.cli.recommend", "recommend a normalization for your architecture and batch size"),
    ("norms", "normlab.cli.norms", "list the normalizations normlab provides"),
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full argument parser; with ``only``, just that subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog="normlab",
        description="normlab: normalization layers on one core, tools that measure them, and a lab that tests "
        "the published claims. Run 'normlab COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"normlab {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        if only is not None and name != only:
            subparsers.add_parser(name, help=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # a command not built yet
        module.add_parser(subparsers, name, help_text)
    return parser


def _version() -> str:
    from normlab import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``normlab`` command."""
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    known = {name for name, _, _ in COMMANDS}
    parser = build_parser(only=command if command in known else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `normlab runs | head`: the reader left, which is not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
