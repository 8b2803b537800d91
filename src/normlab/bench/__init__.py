"""``normlab bench``: time every normalization layer against its torch.nn counterpart and torch.compile.

:func:`run_bench` runs the comparisons of a :class:`BenchConfig` (shapes, dtypes, norms) and returns
:class:`BenchRow` records; :mod:`normlab.bench.report` turns them into a table, CSV, JSON and a plot and
checks the performance targets. How each number is measured: :mod:`normlab.bench.timing` (time, copy
bandwidth, peak memory) and :mod:`normlab.bench.cases` (what is compared, the minimum traffic).
"""

from normlab.bench.cases import (
    FULL_SHAPES,
    QUICK_SHAPES,
    Shape,
    bench_norms,
    parse_shape,
)
from normlab.bench.engine import BenchConfig, BenchResult, BenchRow, run_bench
from normlab.bench.report import (
    check_targets,
    format_table,
    format_targets,
    write_outputs,
)

__all__ = [
    "FULL_SHAPES",
    "QUICK_SHAPES",
    "BenchConfig",
    "BenchResult",
    "BenchRow",
    "Shape",
    "bench_norms",
    "check_targets",
    "format_table",
    "format_targets",
    "parse_shape",
    "run_bench",
    "write_outputs",
]
