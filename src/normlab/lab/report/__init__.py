"""The report: every study's ``result.json`` rendered as one self-contained HTML page and a Markdown summary.

``write_report(home)`` reads ``<home>/studies/*/result.json`` (in the order of the study registry, then any
others alphabetically), draws the figures once with matplotlib, and writes into ``<home>/report/``:

* ``report.html`` — verdicts, figures as embedded base64 PNGs, tables, published anchors in labelled boxes, and
  under every figure and table the exact configs of its runs and the code version;
* ``report.md`` — the verdicts and tables in Markdown, linking the figures;
* ``figures/<study>-<figure>.png`` — the same figures as files (for the Markdown).

Examples:
    >>> import tempfile
    >>> files = write_report(tempfile.mkdtemp())
    >>> files.html.name, files.markdown.name, files.studies
    ('report.html', 'report.md', [])
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .figures import png_data_uri, render_png
from .html import render_html
from .markdown import render_markdown

__all__ = ["ReportFiles", "write_report", "load_results", "render_html", "render_markdown", "render_png",
           "png_data_uri"]


@dataclass(frozen=True)
class ReportFiles:
    """Where the report was written, and which studies it covers."""

    html: Path
    markdown: Path
    figures: list[Path]
    studies: list[str]
    skipped: list[str]  # result files that could not be read, with the reason


def load_results(home: str | os.PathLike | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """All readable study results under ``<home>/studies``, in report order, and the unreadable ones with reasons."""
    from normlab.lab.paths import studies_dir
    from normlab.lab.studies.framework import STUDY_NAMES, read_result

    folder = studies_dir(home)
    paths = sorted(folder.glob("*/result.json")) if folder.is_dir() else []
    order = {name: index for index, name in enumerate(STUDY_NAMES)}
    paths.sort(key=lambda p: (order.get(p.parent.name, len(order)), p.parent.name))
    results, skipped = [], []
    for path in paths:
        try:
            results.append(read_result(path))
        except (ValueError, OSError) as error:
            skipped.append(f"{path}: {error}")
    return results, skipped


def write_report(home: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None) -> ReportFiles:
    """Render every study result under ``home`` into ``out_dir`` (default ``<home>/report``).

    Args:
        home: the lab home (``--home`` / ``NORMLAB_HOME`` / ``./normlab-runs``).
        out_dir: where to write; created if needed.

    Returns:
        :class:`ReportFiles`.
    """
    from normlab.lab.paths import lab_home, report_dir

    home_path = lab_home(home)
    out = Path(out_dir) if out_dir is not None else report_dir(home_path)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    results, skipped = load_results(home_path)
    pngs: dict[tuple[str, str], bytes] = {}
    files: dict[tuple[str, str], str] = {}
    written: list[Path] = []
    for result in results:
        for figure in result.get("figures") or []:
            key = (str(result.get("study", "")), str(figure.get("id", "")))
            try:
                pngs[key] = render_png(figure)
            except Exception as error:  # noqa: BLE001 — one bad figure must not lose the whole report
                print(f"normlab report: could not draw {key[0]}/{key[1]}: {error}", file=sys.stderr)
                continue
            name = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{key[0]}-{key[1]}") + ".png"
            path = out / "figures" / name
            path.write_bytes(pngs[key])
            files[key] = f"figures/{name}"
            written.append(path)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(render_html(results, generated_at=generated, home=str(home_path), figure_pngs=pngs),
                         encoding="utf-8")
    md_path.write_text(render_markdown(results, generated_at=generated, home=str(home_path), figure_files=files),
                       encoding="utf-8")
    return ReportFiles(html_path, md_path, written, [str(r.get("study")) for r in results], skipped)
