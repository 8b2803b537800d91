"""A fixed-width text table for the analysis reports (one place that decides how numbers print)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return format(value, fmt)
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Render ``rows`` as an aligned table.

    Args:
        rows: one dict per line.
        columns: ``(key, header, format_spec)`` for each column; the format applies to numbers only.

    Examples:
        >>> print(format_table([{"a": "x", "b": 0.5}], [("a", "name", ""), ("b", "value", ".2f")]))
        name  value
        x      0.50
    """
    cells = [[_cell(row.get(key), fmt) for key, _, fmt in columns] for row in rows]
    headers = [header for _, header, _ in columns]
    widths = [max([len(h)] + [len(line[i]) for line in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row.get(key), (int, float)) or row.get(key) is None for row in rows) and rows
               for key, _, _ in columns]
    out = ["  ".join(h.rjust(w) if n else h.ljust(w) for h, w, n in zip(headers, widths, numeric)).rstrip()]
    for line in cells:
        out.append("  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(line, widths, numeric)).rstrip())
    return "\n".join(out)
