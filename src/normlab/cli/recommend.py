"""``normlab recommend``: the decision guide as a command.

Prints a recommended normalization for the architecture and per-device batch size described, the alternatives
and what to avoid — each with its reason and papers (:mod:`normlab.recommend`) — the model audit's warnings that
the situation already triggers, and the verdicts of the user's own studies (``<home>/studies/*/result.json``,
written by ``normlab study``) that bear on it. ``--json`` prints the same as JSON.

Examples:
    >>> from normlab.cli import main
    >>> main(["recommend", "--arch", "style-transfer", "--batch-size", "1", "--home", "/none"])  # doctest: +ELLIPSIS
    normlab recommend — style-transfer, 1 sample per device, gpu
    <BLANKLINE>
    Recommended: InstanceNorm [instance_norm]
    ...
    0
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

__all__ = ["add_parser", "run", "load_study_verdicts", "format_recommendation"]

_WIDTH = 100


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Add the ``recommend`` subcommand."""
    from normlab.recommend import ARCHES, HARDWARE, TASKS

    parser = subparsers.add_parser(
        name, help=help_text,
        description="Recommend a normalization for your model: a first choice, alternatives and what to avoid, each "
                    "with its reason and the papers behind it, the audit's warnings for your set-up, and the "
                    "verdicts of your own studies (normlab study) when you have run them.",
        epilog="Examples: 'normlab recommend --arch cnn --batch-size 4', 'normlab recommend --arch cnn --batch-size "
               "8 --hardware multi-gpu --devices 4', 'normlab recommend --arch transformer --batch-size 32 --json'.")
    parser.add_argument("--arch", required=True, choices=ARCHES, help="the kind of network")
    parser.add_argument("--batch-size", required=True, type=int, metavar="N",
                        help="samples per device per step — what one BatchNorm layer sees (under "
                             "DistributedDataParallel, the global batch divided by the number of processes)")
    parser.add_argument("--task", choices=TASKS, help="what the network is trained for (optional)")
    parser.add_argument("--hardware", choices=HARDWARE, default="gpu", help="where it trains (default: gpu)")
    parser.add_argument("--devices", type=int, metavar="N",
                        help="with --hardware multi-gpu: the number of devices (decides whether SyncBatchNorm "
                             "sees enough samples)")
    parser.add_argument("--home", metavar="DIR",
                        help="the lab folder whose study results are cited (default: $NORMLAB_HOME or ./normlab-runs)")
    parser.add_argument("--json", action="store_true", help="print the recommendation as JSON")
    parser.set_defaults(func=run)


def load_study_verdicts(home: str | os.PathLike | None = None) -> tuple[list, list[str]]:
    """The verdicts of every study result in ``<home>/studies``, and notes about files that could not be read.

    Returns:
        ``(verdicts, notes)``: :class:`normlab.recommend.StudyVerdict` objects in study order, and one line per
        unreadable or incompatible ``result.json`` (it is skipped).
    """
    from normlab.lab.paths import studies_dir
    from normlab.lab.studies.framework import STUDY_MODULES, read_result
    from normlab.recommend import StudyVerdict

    folder = studies_dir(home)
    found = sorted(folder.glob("*/result.json")) if folder.is_dir() else []
    order = list(STUDY_MODULES)
    found.sort(key=lambda p: (order.index(p.parent.name) if p.parent.name in order else len(order), p.parent.name))
    verdicts, notes = [], []
    for path in found:
        try:
            result = read_result(path)
        except (OSError, ValueError) as error:
            notes.append(f"skipped {path}: {error}")
            continue
        study = str(result.get("study", path.parent.name))
        for verdict in result.get("verdicts") or []:
            if isinstance(verdict, dict) and verdict.get("claim"):
                verdicts.append(StudyVerdict(study, str(verdict["claim"]), str(verdict.get("status", "?")),
                                             str(result.get("profile", "?")), _effect_text(verdict.get("effect")),
                                             str(path)))
    return verdicts, notes


def _effect_text(effect: object) -> str:
    if not isinstance(effect, dict) or not isinstance(effect.get("estimate"), (int, float)):
        return ""
    units = f" {effect['units']}" if effect.get("units") else ""
    text = f"{effect.get('name', 'effect')} = {effect['estimate']:.3g}{units}"
    low, high = effect.get("low"), effect.get("high")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        text += f", {round(100 * float(effect.get('confidence') or 0.95))}% interval [{low:.3g}, {high:.3g}]"
    return text


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, _WIDTH, initial_indent=indent, subsequent_indent=indent + "  ")


def _option_lines(option, heading: str, indent: str) -> list[str]:
    from normlab.recommend import REFERENCES

    lines = [f"{heading}{option.label} [{' + '.join(option.norms)}]"]
    lines += _wrap(f"why: {option.reason}", indent)
    lines += _wrap("papers: " + "; ".join(REFERENCES[key] for key in option.references), indent)
    for line in option.evidence:
        lines += _wrap(f"your study: {line}", indent)
    return lines


def format_recommendation(rec, notes: list[str] = (), home: Path | None = None) -> str:
    """The recommendation as text for a person (what ``normlab recommend`` prints)."""
    s = rec.situation
    samples = "sample" if s.batch_size == 1 else "samples"
    setup = s.hardware + (f" × {s.devices}" if s.devices else "") + (f", task {s.task}" if s.task else "")
    lines = [f"normlab recommend — {s.arch}, {s.batch_size} {samples} per device, {setup}", ""]
    lines += _option_lines(rec.primary, "Recommended: ", "  ")
    if rec.alternatives:
        lines += ["", "Alternatives:"]
        for number, option in enumerate(rec.alternatives, 1):
            lines += _option_lines(option, f"  {number}. ", "     ")
    if rec.avoid:
        lines += ["", "Avoid:"]
        for option in rec.avoid:
            lines += _option_lines(option, "  - ", "    ")
    if rec.findings:
        lines += ["", "Warnings:"]
        for finding in rec.findings:
            lines += _wrap(f"{finding.level} ({finding.source}): {finding.message}", "  ")
    lines += ["", "Your study results:"]
    if rec.studies:
        for line in rec.studies:
            lines += _wrap(line, "  ")
    else:
        where = f" in {home}" if home is not None else ""
        lines += _wrap(f"no local study results for this situation yet{where}; run 'normlab study all --profile "
                       "quick' to test these claims on your own machine and data", "  ")
    lines += [f"  note: {note}" for note in notes]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the recommendation; exit code 2 for invalid options."""
    from normlab.lab.paths import lab_home
    from normlab.recommend import recommend

    home = lab_home(args.home)
    verdicts, notes = load_study_verdicts(home)
    try:
        rec = recommend(args.arch, args.batch_size, task=args.task, hardware=args.hardware, devices=args.devices,
                        verdicts=verdicts)
    except ValueError as error:
        print(f"normlab recommend: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**rec.as_dict(), "home": str(home), "notes": notes}, indent=2, ensure_ascii=False))
    else:
        print(format_recommendation(rec, notes, home))
    return 0
