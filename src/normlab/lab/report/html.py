"""The self-contained HTML report: verdicts, figures (embedded PNG), tables, published anchors and exact configs.

One file with inline CSS, no scripts and no external resources, so it opens anywhere (a browser, an e-mail
attachment, a CI artifact). Every string that comes from a result file — titles, labels, configs, notes — goes
through :func:`html.escape`; links are emitted only for ``http(s)`` URLs.

Examples:
    >>> page = render_html([], generated_at="2025-01-01T00:00:00+00:00", home="runs")
    >>> page.startswith("<!DOCTYPE html>"), "No study results" in page
    (True, True)
"""
from __future__ import annotations

import html
import math
from typing import Any

from .figures import png_data_uri, render_png
from .provenance import config_summary, format_value, runs_for

__all__ = ["render_html", "format_cell", "STATUS_CLASSES"]

STATUS_CLASSES = {"supported": "ok", "not supported": "bad", "inconclusive": "unk"}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:0 auto;padding:0 18px 40px;
color:#1d232b;line-height:1.45}
h1{font-size:1.7em;margin:.8em 0 .2em}h2{border-bottom:2px solid #dde3ea;padding-bottom:.2em;margin-top:2em}
h3{margin:1.3em 0 .4em}.meta{color:#56606b;font-size:.92em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}th,td{border:1px solid #d5dbe1;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f2f5f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:.85em;white-space:nowrap}
.ok{background:#d8f3dc;color:#1b5e20}.bad{background:#fde0dc;color:#8e1b10}.unk{background:#eceff1;color:#455a64}
.verdict{border-left:4px solid #b0bec5;padding:4px 10px;margin:.6em 0;background:#fafbfc}
.verdict.ok{border-color:#43a047;background:#f4fbf5}.verdict.bad{border-color:#e53935;background:#fff6f5}
.rule{color:#56606b;font-size:.88em}figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #e3e7eb}
figcaption{font-size:.9em;color:#37414b}details{margin:.3em 0 1em;font-size:.88em}summary{cursor:pointer;color:#1a5fb4}
.anchor{border:2px dashed #8d6e63;background:#fffaf3;padding:6px 12px;margin:1em 0}
.anchor .label{font-weight:700;color:#6d4c41;text-transform:uppercase;font-size:.8em;letter-spacing:.05em}
.note{background:#fff8e1;border-left:4px solid #ffb300;padding:4px 10px;margin:.4em 0;font-size:.9em}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.86em}pre{white-space:pre-wrap}
nav ul{columns:2;font-size:.95em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def format_cell(value: Any) -> str:
    """A table cell as text: floats to 4 significant digits, None as an em dash, others as str.

    Examples:
        >>> format_cell(0.123456), format_cell(None), format_cell(12), format_cell("a<b")
        ('0.1235', '—', '12', 'a<b')
    """
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:.4g}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _table(columns: list[Any], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td class=\"num\">{_e(format_cell(c))}</td>" if _is_number(c)
                                    else f"<td>{_e(format_cell(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _link(url: Any, text: Any) -> str:
    url = str(url or "")
    if url.startswith(("https://", "http://")):
        return f"<a href=\"{_e(url)}\">{_e(text)}</a>"
    return _e(text)


def _badge(status: str) -> str:
    return f"<span class=\"badge {STATUS_CLASSES.get(status, 'unk')}\">{_e(status)}</span>"


def _effect_text(effect: dict[str, Any] | None) -> str:
    if not effect or effect.get("estimate") is None:
        return "not measured"
    unit = f" {effect['units']}" if effect.get("units") else ""
    text = f"{effect.get('name', 'effect')} = {format_cell(float(effect['estimate']))}{unit}"
    if effect.get("low") is not None and effect.get("high") is not None:
        text += (f" [{format_cell(float(effect['low']))}, {format_cell(float(effect['high']))}] "
                 f"({float(effect.get('confidence', 0.95)):.0%} CI, {effect.get('method', '')}, "
                 f"n={'/'.join(str(n) for n in effect.get('n', []))})")
    else:
        text += " (no interval)"
    return text


def _provenance(result: dict[str, Any], run_ids: list[str], what: str) -> str:
    runs = runs_for(result, run_ids)
    if not runs:
        settings = [[k, format_value(v)] for k, v in (result.get("settings") or {}).items()]
        return (f"<details><summary>Exact configs behind this {what}: no training runs (code version "
                f"{_e(result.get('code_version', 'unknown'))}; settings below)</summary>"
                f"{_table(['setting', 'value'], settings)}</details>")
    summary = config_summary(runs)
    shared = _table(["setting (same for every run)", "value"],
                    [[k, format_value(v)] for k, v in summary.shared.items()])
    varying = _table(["run id", "labels", *summary.varying],
                     [[rid, ", ".join(f"{k}={format_value(v)}" for k, v in labels.items()),
                       *[format_value(values[k]) for k in summary.varying]] for rid, labels, values in summary.rows])
    return (f"<details><summary>Exact configs behind this {what}: {len(runs)} run(s), code version "
            f"{_e(result.get('code_version', 'unknown'))}</summary>{shared}{varying}</details>")


def _verdict_block(verdict: dict[str, Any]) -> str:
    status = str(verdict.get("status", "inconclusive"))
    return (f"<div class=\"verdict {STATUS_CLASSES.get(status, 'unk')}\"><b>{_e(verdict.get('claim', ''))}</b> "
            f"{_badge(status)}<br>{_e(_effect_text(verdict.get('effect')))}<br>"
            f"<span class=\"rule\">Why: {_e(verdict.get('reason', ''))}. Rule: {_e(verdict.get('rule', ''))}</span>"
            f"</div>")


def _anchor_block(anchor: dict[str, Any]) -> str:
    return (f"<div class=\"anchor\"><div class=\"label\">Published numbers — {_e(anchor.get('source', ''))}, "
            f"not measured by normlab</div><p>{_e(anchor.get('setting', ''))}</p>"
            f"{_table(anchor.get('columns', []), anchor.get('rows', []))}"
            f"<p class=\"meta\">{_link(anchor.get('url'), anchor.get('citation', ''))}"
            f"{'. ' + _e(anchor['note']) if anchor.get('note') else ''}</p></div>")


def _study_section(result: dict[str, Any], figure_uris: dict[tuple[str, str], str]) -> str:
    name = str(result.get("study", ""))
    timing = result.get("timing") or {}
    parts = [f"<section id=\"study-{_e(name)}\"><h2>{_e(result.get('title') or name)}</h2>",
             f"<p>{_e(result.get('summary', ''))}</p>",
             f"<p class=\"meta\">Study <code>{_e(name)}</code> v{_e(result.get('study_version', '?'))} · profile "
             f"<b>{_e(result.get('profile', '?'))}</b> · code version <code>{_e(result.get('code_version', '?'))}"
             f"</code> · finished {_e(result.get('finished_at', '?'))} · this invocation took "
             f"{_e(format_cell(timing.get('total_s')))} s · {len(result.get('runs') or [])} training run(s), "
             f"{_e(format_cell(timing.get('runs_epoch_s')))} s of training epochs in all</p>"]
    for kind, line in (result.get("data") or {}).items():
        parts.append(f"<p class=\"meta\">Data ({_e(kind)}): {_e(line)}</p>")
    parts.append("<h3>Verdicts</h3>")
    parts.extend(_verdict_block(v) for v in result.get("verdicts") or [])
    if not result.get("verdicts"):
        parts.append("<p>No verdicts.</p>")
    for note in result.get("notes") or []:
        parts.append(f"<div class=\"note\">{_e(note)}</div>")
    for figure in result.get("figures") or []:
        uri = figure_uris.get((name, str(figure.get("id"))))
        image = (f"<img src=\"{uri}\" alt=\"{_e(figure.get('title', ''))}\">" if uri
                 else "<p>(figure could not be drawn)</p>")
        parts.append(f"<figure id=\"fig-{_e(name)}-{_e(figure.get('id', ''))}\">{image}<figcaption><b>"
                     f"{_e(figure.get('title', ''))}.</b> {_e(figure.get('caption', ''))}</figcaption></figure>"
                     + _provenance(result, list(figure.get("run_ids") or []), "figure"))
    for table in result.get("tables") or []:
        parts.append(f"<h3>{_e(table.get('title', ''))}</h3>{_table(table.get('columns', []), table.get('rows', []))}"
                     f"<p class=\"meta\">{_e(table.get('caption', ''))}</p>"
                     + _provenance(result, list(table.get("run_ids") or []), "table"))
    for anchor in result.get("anchors") or []:
        parts.append(_anchor_block(anchor))
    environment = result.get("environment") or {}
    parts.append("<details><summary>Environment</summary>"
                 + _table(["key", "value"], [[k, format_value(v)] for k, v in environment.items()]) + "</details>")
    parts.append("</section>")
    return "".join(parts)


def render_html(results: list[dict[str, Any]], *, generated_at: str, home: str,
                figure_pngs: dict[tuple[str, str], bytes] | None = None) -> str:
    """The whole report as one HTML string.

    Args:
        results: study results (``result.json`` dicts), in report order.
        generated_at: timestamp shown in the header.
        home: the lab home folder the results came from (shown in the header).
        figure_pngs: ``(study, figure id) -> PNG bytes``; figures missing here are drawn now.

    Returns:
        The HTML document.
    """
    pngs = dict(figure_pngs or {})
    uris: dict[tuple[str, str], str] = {}
    for result in results:
        for figure in result.get("figures") or []:
            key = (str(result.get("study", "")), str(figure.get("id")))
            try:
                uris[key] = png_data_uri(pngs[key] if key in pngs else render_png(figure))
            except Exception:  # a malformed figure must not take the report down; it says so in place
                continue
    rows = []
    for result in results:
        name = str(result.get("study", ""))
        for verdict in result.get("verdicts") or []:
            rows.append(f"<tr><td><a href=\"#study-{_e(name)}\">{_e(name)}</a></td><td>{_e(verdict.get('claim', ''))}"
                        f"</td><td>{_badge(str(verdict.get('status', 'inconclusive')))}</td>"
                        f"<td>{_e(_effect_text(verdict.get('effect')))}</td>"
                        f"<td>{_e(result.get('profile', ''))}</td></tr>")
    versions = sorted({str(r.get("code_version", "unknown")) for r in results})
    header = (f"<header><h1>normlab report: do the claims about normalization hold?</h1><p class=\"meta\">Generated "
              f"{_e(generated_at)} from {len(results)} study result(s) in <code>{_e(home)}</code>; code version(s): "
              f"{_e(', '.join(versions) or 'none')}.</p></header>")
    if not results:
        body = ("<p>No study results were found. Run <code>normlab study all --profile smoke</code> (or "
                "<code>--profile quick</code>) first, then <code>normlab report</code>.</p>")
    else:
        nav = "".join(f"<li><a href=\"#study-{_e(r.get('study', ''))}\">{_e(r.get('title') or r.get('study'))}</a></li>"
                      for r in results)
        body = (f"<nav><ul>{nav}</ul></nav><section id=\"summary\"><h2>Verdicts at a glance</h2>"
                f"<table><thead><tr><th>study</th><th>claim</th><th>verdict</th><th>effect [95% CI]</th>"
                f"<th>profile</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
                "<p class=\"meta\">Each verdict is computed by the rule written in its study from the effect size and "
                "its confidence interval over seeds: supported when the interval lies wholly on the claimed side, "
                "not supported when it lies wholly on the other side, inconclusive otherwise. The smoke profile "
                "always says inconclusive. Numbers in dashed boxes and dashed plot lines are published anchors, "
                "not our measurements.</p></section>" + "".join(_study_section(r, uris) for r in results))
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>normlab report</title>"
            f"<style>{_CSS}</style></head><body>{header}{body}<footer class=\"meta\"><p>Written by "
            f"<code>normlab report</code>. Rerun <code>normlab study NAME</code> to refresh a study.</p></footer>"
            f"</body></html>\n")
