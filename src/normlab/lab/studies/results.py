"""What a study produces and reads back: the stored runs it trained, and the tables, figures and anchors it reports.

* :class:`RunData` / :class:`RunSet` — the runs of a study as read back from the results store, each with the
  ``labels`` the study gave it (``{"norm": "batch_norm", "batch_size": 8, "seed": 0}``), its config, final
  metrics and per-epoch history; ``RunSet.values("test_acc", norm="batch_norm")`` gives one number per seed.
* :class:`Series`, :class:`Panel`, :class:`Figure`, :class:`Table`, :class:`Anchor` — plain data that the report
  renders (figures are drawn by the report from these numbers, so ``result.json`` holds everything).

Examples:
    >>> runs = RunSet([RunData("a1", {"norm": "bn", "seed": 0}, {}, "finished", {"test_acc": 0.6}, []),
    ...                RunData("a2", {"norm": "bn", "seed": 1}, {}, "finished", {"test_acc": 0.7}, [])])
    >>> runs.values("test_acc", norm="bn")
    [0.6, 0.7]
    >>> Figure("f", "Accuracy", [Panel("", "epoch", "acc", [Series("bn", [0, 1], [0.5, 0.6])])]).to_dict()["id"]
    'f'
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator

__all__ = ["RunData", "RunSet", "Series", "Panel", "Figure", "Table", "Anchor"]


@dataclass(frozen=True)
class RunData:
    """One stored run of a study: id, labels, config, status, final metrics and per-epoch history."""

    run_id: str
    labels: dict[str, Any]
    config: dict[str, Any]
    status: str
    final: dict[str, Any]
    history: list[dict[str, Any]]
    error: str | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)  # named JSON values the run's callbacks stored

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    def metric(self, name: str) -> float:
        """A final metric as a float (``nan`` when missing, not finished, or not a number)."""
        value = self.final.get(name) if self.finished else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan

    def curve(self, name: str) -> tuple[list[float], list[float]]:
        """``(epochs, values)`` of a per-epoch metric (epochs as logged by the trainer)."""
        xs, ys = [], []
        for row in self.history:
            if name in row and isinstance(row[name], (int, float)):
                xs.append(float(row.get("epoch", len(xs))))
                ys.append(float(row[name]))
        return xs, ys


class RunSet:
    """The runs of one study, selectable by label."""

    def __init__(self, runs: Iterable[RunData]):
        self.runs = list(runs)

    def __iter__(self) -> Iterator[RunData]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def select(self, **labels: Any) -> "RunSet":
        """The runs whose labels match every given ``key=value`` (a list/tuple value matches any of its items)."""
        def match(run: RunData) -> bool:
            for key, wanted in labels.items():
                have = run.labels.get(key)
                if isinstance(wanted, (list, tuple, set)):
                    if have not in wanted:
                        return False
                elif have != wanted:
                    return False
            return True
        return RunSet(r for r in self.runs if match(r))

    def values(self, metric: str, **labels: Any) -> list[float]:
        """One final ``metric`` per selected run, finished runs only, ordered by seed."""
        chosen = sorted(self.select(**labels).finished(), key=lambda r: r.labels.get("seed", 0))
        return [r.metric(metric) for r in chosen]

    def finished(self) -> list[RunData]:
        return [r for r in self.runs if r.finished]

    def label_values(self, key: str) -> list[Any]:
        """The distinct values of one label, in first-seen order."""
        seen: list[Any] = []
        for run in self.runs:
            value = run.labels.get(key)
            if value not in seen:
                seen.append(value)
        return seen

    def ids(self) -> list[str]:
        return [r.run_id for r in self.runs]

    def failed(self) -> list[RunData]:
        return [r for r in self.runs if not r.finished]


@dataclass
class Series:
    """One line of a panel: ``x``/``y`` values, optional symmetric error bars ``err`` (±1 std over seeds).

    ``published`` marks numbers taken from a paper (drawn dashed, labelled "published"), never ours.
    """

    label: str
    x: list[float]
    y: list[float]
    err: list[float] | None = None
    published: bool = False
    marker: str = "o"
    line: bool = True  # False draws the points alone (a scatter)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or (self.err is not None and len(self.err) != len(self.y)):
            raise ValueError(f"Series {self.label!r}: x, y (and err) must have equal lengths, got {len(self.x)}, "
                             f"{len(self.y)}{'' if self.err is None else f', {len(self.err)}'}")
        self.x = [_json_number(v) for v in self.x]
        self.y = [_json_number(v) for v in self.y]
        self.err = None if self.err is None else [_json_number(v) for v in self.err]


@dataclass
class Panel:
    """One set of axes of a figure."""

    title: str
    x_label: str
    y_label: str
    series: list[Series]
    x_log: bool = False
    y_log: bool = False
    x_ticks: list[float] | None = None  # e.g. the batch sizes, so a log axis shows 2, 4, 8 ...
    x_tick_labels: list[str] | None = None  # names for the x_ticks (a categorical axis)


@dataclass
class Figure:
    """A figure of one or more panels, with the runs behind it (so the report can show their exact configs)."""

    id: str
    title: str
    panels: list[Panel]
    caption: str = ""
    run_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Table:
    """A table: column names and rows of cells (str or numbers); ``run_ids`` name the runs behind it."""

    id: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    run_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"Table {self.id!r}: a row has {len(row)} cells for {len(self.columns)} columns: "
                                 f"{row!r}")
        self.rows = [[_json_number(c) if isinstance(c, float) else c for c in row] for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Anchor:
    """Numbers published in a paper, shown beside ours and labelled as such — never mixed into our statistics."""

    id: str
    source: str  # short, e.g. "Wu & He (2018)"
    citation: str  # full reference
    url: str
    setting: str  # what the numbers are: data set, model, metric
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _json_number(value: Any) -> Any:
    """Floats that JSON cannot hold (nan, inf) become None; other values pass through."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
