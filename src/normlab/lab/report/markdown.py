"""The Markdown summary: every verdict with its effect and interval, each study's tables, and links to the figures.

Meant for a README, a pull request or a terminal: the verdicts first, then per study its tables (published
anchors marked as such) and its figures as linked PNG files written beside the summary. Strings from result files
are escaped for Markdown tables (``|``, ``<``, ``>``, line breaks).

Examples:
    >>> text = render_markdown([], generated_at="2025-01-01", home="runs")
    >>> text.splitlines()[0]
    '# normlab report'
"""
from __future__ import annotations

from typing import Any

from .html import format_cell

__all__ = ["render_markdown", "escape_md"]


def escape_md(value: Any) -> str:
    """Text safe inside a Markdown table cell.

    Examples:
        >>> escape_md("a|b <i>")
        'a\\\\|b &lt;i&gt;'
    """
    text = format_cell(value) if not isinstance(value, str) else value
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
            .replace("\r", " ").replace("\n", " "))


def _table(columns: list[Any], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(escape_md(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(escape_md(format_cell(c)) for c in row) + " |" for row in rows]
    return lines + [""]


def _effect(effect: dict[str, Any] | None) -> str:
    if not effect or effect.get("estimate") is None:
        return "not measured"
    unit = f" {effect['units']}" if effect.get("units") else ""
    text = f"{effect.get('name', 'effect')} = {format_cell(float(effect['estimate']))}{unit}"
    if effect.get("low") is not None and effect.get("high") is not None:
        text += f" [{format_cell(float(effect['low']))}, {format_cell(float(effect['high']))}]"
    return text


def render_markdown(results: list[dict[str, Any]], *, generated_at: str, home: str,
                    figure_files: dict[tuple[str, str], str] | None = None) -> str:
    """The Markdown summary as one string.

    Args:
        results: study results in report order.
        generated_at: timestamp for the header.
        home: the lab home the results came from.
        figure_files: ``(study, figure id) -> relative PNG path`` to link; figures without a file are listed by
            title only.

    Returns:
        The Markdown text.
    """
    files = dict(figure_files or {})
    lines = ["# normlab report", "",
             f"Generated {escape_md(generated_at)} from {len(results)} study result(s) in `{home}`. "
             "Verdicts come from the rule written in each study (95% confidence intervals over seeds); the "
             "smoke profile always says inconclusive. Published numbers are labelled as such.", ""]
    if not results:
        return "\n".join(lines + ["No study results found: run `normlab study all --profile smoke` first.", ""])
    rows = [[r.get("study", ""), v.get("claim", ""), f"**{v.get('status', '')}**", _effect(v.get("effect")),
             r.get("profile", "")] for r in results for v in r.get("verdicts") or []]
    lines += ["## Verdicts", ""] + _table(["study", "claim", "verdict", "effect [95% CI]", "profile"], rows)
    for result in results:
        name = str(result.get("study", ""))
        timing = result.get("timing") or {}
        lines += [f"## {escape_md(result.get('title') or name)}", "",
                  f"Study `{name}` v{result.get('study_version', '?')}, profile **{result.get('profile', '?')}**, "
                  f"code version `{result.get('code_version', '?')}`, {len(result.get('runs') or [])} run(s) "
                  f"({format_cell(timing.get('runs_epoch_s'))} s of training epochs; this invocation "
                  f"{format_cell(timing.get('total_s'))} s).", ""]
        for kind, line in (result.get("data") or {}).items():
            lines += [f"Data ({escape_md(kind)}): {escape_md(line)}", ""]
        for verdict in result.get("verdicts") or []:
            lines += [f"- **{escape_md(verdict.get('status', ''))}** — {escape_md(verdict.get('claim', ''))}: "
                      f"{escape_md(_effect(verdict.get('effect')))} ({escape_md(verdict.get('reason', ''))})"]
        lines += [""]
        for note in result.get("notes") or []:
            lines += [f"> Note: {escape_md(note)}", ""]
        for table in result.get("tables") or []:
            lines += [f"**{escape_md(table.get('title', ''))}**", ""] + _table(table.get("columns", []),
                                                                               table.get("rows", []))
        for anchor in result.get("anchors") or []:
            lines += [f"**Published numbers — {escape_md(anchor.get('source', ''))} (not measured by normlab):** "
                      f"{escape_md(anchor.get('setting', ''))}", ""]
            lines += _table(anchor.get("columns", []), anchor.get("rows", []))
            lines += [f"Source: {escape_md(anchor.get('citation', ''))} {anchor.get('url', '')}", ""]
        for figure in result.get("figures") or []:
            path = files.get((name, str(figure.get("id"))))
            title = escape_md(figure.get("title", ""))
            lines += [f"![{title}]({path})" if path else f"Figure: {title}", ""]
    return "\n".join(lines)
