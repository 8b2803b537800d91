"""Drawing a study's figures with matplotlib, from the numbers stored in its ``result.json``.

A figure is one or more panels; each panel has series of ``x``/``y`` values with optional ±1 std error bars.
Our measurements are solid lines with filled markers; numbers published in a paper (``"published": true``) are
dashed with hollow markers and "(published)" in the legend, so the two are never confused.

Examples:
    >>> figure = {"id": "f", "title": "Loss", "panels": [{"title": "", "x_label": "epoch", "y_label": "loss",
    ...           "series": [{"label": "bn", "x": [0, 1], "y": [2.0, 1.5], "err": [0.1, 0.1]}]}]}
    >>> png = render_png(figure)
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
"""
from __future__ import annotations

import base64
import io
import math
from typing import Any

__all__ = ["render_png", "png_data_uri"]


def _finite(values: list[Any]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def _draw_panel(axes: Any, panel: dict[str, Any]) -> None:
    from matplotlib.ticker import MaxNLocator

    drawn, integral = False, True
    for series in panel.get("series", []):
        xs, ys = _finite(series.get("x", [])), _finite(series.get("y", []))
        if not xs or all(math.isnan(y) for y in ys):
            continue
        integral = integral and all(math.isnan(x) or float(x).is_integer() for x in xs)
        published = bool(series.get("published"))
        label = str(series.get("label", "")) + (" (published)" if published else "")
        style = dict(marker=series.get("marker") or "o", markersize=4, linewidth=1.6, label=label)
        if published:
            style.update(linestyle="--", markerfacecolor="none", alpha=0.9)
        if series.get("line") is False:
            style.update(linestyle="none", markersize=6)
        err = series.get("err")
        if err is not None and not published:
            axes.errorbar(xs, ys, yerr=[0.0 if e is None else float(e) for e in err], capsize=2, **style)
        else:
            axes.plot(xs, ys, **style)
        drawn = True
    if integral and not panel.get("x_log"):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs 1, 2, 3 — not 1.5
    if panel.get("x_log"):
        axes.set_xscale("log", base=2)
    if panel.get("y_log"):
        axes.set_yscale("log")
    ticks, names = panel.get("x_ticks"), panel.get("x_tick_labels")
    if ticks:
        axes.set_xticks([float(t) for t in ticks])
        axes.set_xticklabels([str(n) for n in names] if names and len(names) == len(ticks) else
                             [f"{t:g}" for t in ticks])
        axes.minorticks_off()
    axes.set_title(str(panel.get("title", "")), fontsize=10)
    axes.set_xlabel(str(panel.get("x_label", "")))
    axes.set_ylabel(str(panel.get("y_label", "")))
    axes.grid(True, alpha=0.3)
    if drawn:
        axes.legend(fontsize=7, loc="best")
    else:
        axes.text(0.5, 0.5, "no finished runs to plot", ha="center", va="center", transform=axes.transAxes)


def render_png(figure: dict[str, Any], *, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (matplotlib's Agg backend; no display needed).

    Args:
        figure: a figure dict as in the ``result.json`` schema (``title``, ``panels`` of ``series``).
        dpi: resolution.

    Returns:
        The PNG file's bytes.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    panels = figure.get("panels") or [{"title": "", "x_label": "", "y_label": "", "series": []}]
    columns = min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    canvas = Figure(figsize=(4.6 * columns, 3.4 * rows + 0.4), dpi=dpi, layout="constrained")
    grid = canvas.subplots(rows, columns, squeeze=False)
    for index, axes in enumerate(grid.flat):
        if index < len(panels):
            _draw_panel(axes, panels[index])
        else:
            axes.set_visible(False)
    canvas.suptitle(str(figure.get("title", "")), fontsize=11)
    buffer = io.BytesIO()
    canvas.savefig(buffer, format="png")
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an ``<img src>`` in a self-contained HTML file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
