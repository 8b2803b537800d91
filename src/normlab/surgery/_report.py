"""Reports of what a surgery did: a list of records that prints as a fixed-width table."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, max_width: int = 40) -> str:
    """Rows under a header, each column as wide as its widest cell (cells longer than ``max_width`` are cut
    with ``…``, except in the last column, which is never cut)."""
    rows = [[str(cell) for cell in row] for row in rows]
    last = len(headers) - 1

    def clip(cell: str, column: int) -> str:
        return cell if column == last or len(cell) <= max_width else cell[: max_width - 1] + "…"

    rows = [[clip(cell, i) for i, cell in enumerate(row)] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


class SurgeryReport(list):
    """What a surgery did, one record per layer: a ``list`` in Python, a table when printed.

    Attributes:
        model: the model after the surgery. In-place tools (``swap_norm``, ``freeze_norm``, ``convert_sync_bn``,
            ``revert_sync_bn``) return the same object they were given, except when the model itself was the
            layer replaced; ``fold_bn`` returns a new model.
        action: one line saying what was done, printed above the table.
    """

    headers: tuple[str, ...] = ()

    def __init__(self, records: Iterable[Any] = (), *, model: nn.Module | None = None, action: str = "") -> None:
        super().__init__(records)
        self.model = model
        self.action = action

    def rows(self) -> list[Sequence[str]]:
        return [record.row() for record in self]

    def __repr__(self) -> str:
        if not self:
            return f"{self.action}: nothing to do"
        return f"{self.action}\n{format_table(self.headers, self.rows())}"

    __str__ = __repr__

    def warn_if_empty(self, why: str) -> None:
        """Warn (never stay silent) when the surgery found nothing to work on."""
        if not self:
            warnings.warn(f"{self.action}: nothing to do — {why}", UserWarning, stacklevel=3)


def join_paths(paths: Sequence[str]) -> str:
    """A module's paths for a table cell (``(root)`` for the model itself; shared modules list every path)."""
    return ", ".join(p or "(root)" for p in paths)
