"""``normlab norms``: the normalizations normlab provides, as a table.

One row per registry entry (:func:`normlab.list_norms`): its name (what ``--norm`` and
:func:`normlab.create_norm` take), its family (an activation layer, a weight reparametrization, or none), the
input layout it normalizes (features on dim 1, ``(N, C, *)``, or last, ``(*, C)``; weight normalizations act
on the weights of conv/linear layers) and a one-line description
with its paper. ``--family`` keeps one family; ``--json`` prints the same rows for scripts.

Examples:
    >>> from normlab.cli import main
    >>> main(["norms", "--family", "none"])  # doctest: +NORMALIZE_WHITESPACE
    name  family  layout     description
    none  none    any     no normalization (identity), the baseline
    0
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

__all__ = ["add_parser", "run", "norm_rows"]

FAMILIES = ("activation", "weight", "none")  # the families the registry documents
_LAYOUTS = {1: "(N, C, *)", -1: "(*, C)"}
# Modules that register more entries (weight normalizations) when imported; absent ones are skipped.
_REGISTERING_MODULES = ("normlab.weight",)


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Add the ``norms`` subcommand."""
    parser = subparsers.add_parser(
        name, help=help_text,
        description="List every normalization normlab provides: the name to pass as --norm or to "
                    "normlab.create_norm, its family, the input layout it expects, and what it does.",
        epilog="Examples: 'normlab norms', 'normlab norms --family activation', 'normlab norms --json'.")
    parser.add_argument("--family", metavar="FAMILY",
                        help="only this family: 'activation' (layers), 'weight' (weight reparametrizations) "
                             "or 'none' (the identity baseline)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.set_defaults(func=run)


def norm_rows(family: str | None = None) -> list[dict[str, str]]:
    """The registry as rows ``{"name", "family", "layout", "description"}``, in registration order.

    Args:
        family: keep only this family; None keeps all.

    Raises:
        ValueError: ``family`` is not one of the registered families (the message lists them).

    Examples:
        >>> [row["name"] for row in norm_rows("none")]
        ['none']
    """
    from normlab.registry import get_norm_spec, list_norms

    for module in _REGISTERING_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
    specs = [get_norm_spec(name) for name in list_norms()]
    families = sorted(set(FAMILIES) | {spec.family for spec in specs})
    if family is not None and family not in families:
        raise ValueError(f"unknown family {family!r}; choose one of: {', '.join(families)}")
    return [{"name": spec.name, "family": spec.family, "layout": _layout(spec), "description": spec.description}
            for spec in specs if family is None or spec.family == family]


def _layout(spec) -> str:
    if spec.family == "none":
        return "any"
    if spec.family == "weight":
        return "conv/linear weights"
    return _LAYOUTS.get(spec.channel_dim, f"features on dim {spec.channel_dim}")


def _table(rows: list[dict[str, str]], columns: tuple[str, ...]) -> str:
    widths = {c: max([len(c)] + [len(row[c]) for row in rows]) for c in columns}
    lines = ["  ".join(f"{c:<{widths[c]}}" for c in columns).rstrip()]
    lines += ["  ".join(f"{row[c]:<{widths[c]}}" for c in columns).rstrip() for row in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON); exit code 2 for an unknown family."""
    try:
        rows = norm_rows(args.family)
    except ValueError as error:
        print(f"normlab norms: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no normalizations of family {args.family!r} are registered")
    else:
        print(_table(rows, ("name", "family", "layout", "description")))
    return 0
