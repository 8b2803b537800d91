"""``normlab report``: write the HTML report and the Markdown summary of every study result.

Reads ``<home>/studies/*/result.json`` and writes ``<home>/report/report.html`` (self-contained: plots embedded
as PNG, tables, verdicts, published anchors labelled as such, the exact configs and code version behind every
figure), ``report.md`` and ``figures/*.png``. ``--open`` opens the HTML in the default browser.

Examples:
    >>> import tempfile, contextlib, io
    >>> from normlab.cli import main
    >>> with contextlib.redirect_stdout(io.StringIO()) as out:
    ...     code = main(["report", "--home", tempfile.mkdtemp()])
    >>> code, "report.html" in out.getvalue()
    (0, True)
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Add the ``report`` subcommand."""
    parser = subparsers.add_parser(
        name, help=help_text,
        description="Render every study result under <home>/studies into one self-contained HTML page and a "
                    "Markdown summary (<home>/report/report.html and report.md).",
        epilog="Example: 'normlab study all --profile quick && normlab report --open'.")
    parser.add_argument("--home", help="the lab folder (default: $NORMLAB_HOME or ./normlab-runs)")
    parser.add_argument("--out", help="write the report here instead of <home>/report")
    parser.add_argument("--open", action="store_true", help="open the HTML report in the default web browser")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the report; 0 on success (also with no results: the page says how to make them)."""
    from normlab.lab.report import write_report

    files = write_report(args.home, args.out)
    for problem in files.skipped:
        print(f"normlab report: skipped {problem}", file=sys.stderr)
    if not files.studies:
        print("normlab report: no study results found; run 'normlab study all --profile smoke' first",
              file=sys.stderr)
    print(f"wrote {files.html} and {files.markdown} ({len(files.studies)} stud"
          f"{'y' if len(files.studies) == 1 else 'ies'}, {len(files.figures)} figure(s))")
    if args.open:
        import webbrowser

        webbrowser.open(files.html.resolve().as_uri())
    return 0
