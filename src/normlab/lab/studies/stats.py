"""Statistics for the studies: mean ± std over seeds and effect sizes with a confidence interval.

Every number a study reports comes from a few seeds, so every comparison carries its uncertainty:

* :func:`summarize` — mean, sample standard deviation (``ddof=1``) and standard error of one group.
* :func:`welch_interval` — the difference of two group means :math:`\\bar a - \\bar b` with Welch's t interval
  (unequal variances; Welch 1947):

  .. math::
      s^2 = \\frac{s_a^2}{n_a} + \\frac{s_b^2}{n_b}, \\qquad
      \\nu = \\frac{s^4}{\\frac{(s_a^2/n_a)^2}{n_a - 1} + \\frac{(s_b^2/n_b)^2}{n_b - 1}}, \\qquad
      \\bar a - \\bar b \\pm t_{1-\\alpha/2,\\,\\nu}\\, s

* :func:`paired_interval` — the mean of per-seed differences with a one-sample t interval (use it when the two
  arms share seeds, so data order and initialization noise cancel).
* :func:`bootstrap_interval` — a percentile bootstrap of any statistic of two groups (Efron & Tibshirani 1993),
  for statistics without a t formula (a ratio of means, a median).
* :func:`t_quantile` — Student's t quantile from the regularized incomplete beta function (stdlib only).

With fewer than two values in a group no interval exists: the bounds are ``nan`` and verdict rules then say
*inconclusive*.

Examples:
    >>> s = summarize([0.61, 0.64, 0.62])
    >>> round(s.mean, 4), round(s.std, 4), s.n
    (0.6233, 0.0153, 3)
    >>> e = welch_interval([0.70, 0.72, 0.71], [0.60, 0.63, 0.61], name="acc gap")
    >>> round(e.estimate, 3), round(e.low, 3), round(e.high, 3)
    (0.097, 0.065, 0.128)
    >>> round(t_quantile(0.975, 4), 4)
    2.7764
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["Summary", "Effect", "summarize", "welch_interval", "paired_interval", "bootstrap_interval",
           "t_quantile", "t_cdf", "format_mean_std"]


@dataclass(frozen=True)
class Summary:
    """Mean ± std of one group of per-seed values (``std`` with ``ddof=1``; ``nan`` for one value)."""

    mean: float
    std: float
    n: int
    sem: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Effect:
    """An effect size with its confidence interval.

    ``estimate`` is the point estimate; ``[low, high]`` its ``confidence`` interval by ``method``
    (``"welch-t"``, ``"paired-t"``, ``"bootstrap-percentile"``). ``n`` counts the values behind each arm.
    """

    name: str
    estimate: float
    low: float
    high: float
    confidence: float
    method: str
    n: tuple[int, ...]
    units: str = ""

    @property
    def has_interval(self) -> bool:
        """True when both bounds are finite numbers."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["n"] = list(self.n)
        return d

    def describe(self, digits: int = 3) -> str:
        """``"name = estimate [low, high] (95% CI, method)"`` for tables and verdict lines."""
        unit = f" {self.units}" if self.units else ""
        if not math.isfinite(self.estimate):
            return f"{self.name}: not measurable"
        interval = (f"[{self.low:.{digits}g}, {self.high:.{digits}g}]" if self.has_interval
                    else "[no interval: fewer than 2 values]")
        return (f"{self.name} = {self.estimate:.{digits}g}{unit} {interval} "
                f"({self.confidence:.0%} CI, {self.method}, n={'/'.join(map(str, self.n))})")


def _clean(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(list(values), dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{what}: expected a flat list of per-seed numbers, got shape {array.shape}")
    return array


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sample std (``ddof=1``), count and standard error of per-seed values.

    Args:
        values: one number per seed; non-finite values (a diverged run) propagate as ``nan``/``inf``.

    Returns:
        :class:`Summary`; ``std``/``sem`` are ``nan`` with fewer than two values, ``mean`` is ``nan`` for none.

    Examples:
        >>> summarize([1.0, 3.0])
        Summary(mean=2.0, std=1.4142135623730951, n=2, sem=1.0)
    """
    array = _clean(values, "summarize")
    n = int(array.size)
    if n == 0:
        return Summary(math.nan, math.nan, 0, math.nan)
    mean = float(array.mean())
    std = float(array.std(ddof=1)) if n > 1 else math.nan
    return Summary(mean, std, n, std / math.sqrt(n) if n > 1 else math.nan)


def format_mean_std(values: Sequence[float] | Summary, digits: int = 3, scale: float = 1.0) -> str:
    """``"0.623 ± 0.015"`` (``"0.62"`` with one seed; ``"—"`` with none), after multiplying by ``scale``.

    Examples:
        >>> format_mean_std([0.61, 0.64, 0.62], digits=1, scale=100)
        '62.3 ± 1.5'
    """
    s = values if isinstance(values, Summary) else summarize(values)
    if s.n == 0 or math.isnan(s.mean):
        return "—"
    if s.n == 1 or math.isnan(s.std):
        return f"{s.mean * scale:.{digits}f}"
    return f"{s.mean * scale:.{digits}f} ± {s.std * scale:.{digits}f}"


# --- Student's t distribution from the regularized incomplete beta function ------------------------------------

def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), evaluated by the modified Lentz method (converges for x < (a+1)/(a+b+2))."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return result


def _regularized_beta(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom (for t ≥ 0):
    :math:`1 - \\tfrac12 I_{\\nu/(\\nu+t^2)}(\\nu/2, \\tfrac12)`.

    Examples:
        >>> round(t_cdf(2.0, 5), 5)
        0.94903
    """
    if df <= 0:
        raise ValueError(f"t_cdf: degrees of freedom must be positive, got {df}")
    tail = 0.5 * _regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` (> 0, may be fractional) degrees of freedom, by bisection.

    Examples:
        >>> round(t_quantile(0.975, 2), 4), round(t_quantile(0.5, 7), 4)
        (4.3027, 0.0)
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0, 1), got {p}")
    if df <= 0 or not math.isfinite(df):
        raise ValueError(f"t_quantile: degrees of freedom must be a positive finite number, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


# --- intervals for differences --------------------------------------------------------------------------------

def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}")


def welch_interval(a: Sequence[float], b: Sequence[float], *, name: str = "mean(a) - mean(b)",
                   confidence: float = 0.95, units: str = "") -> Effect:
    """Difference of means ``mean(a) - mean(b)`` with Welch's t interval (the formula in the module docstring).

    Args:
        a, b: per-seed values of the two arms (independent samples).
        name: what the effect is, shown in reports.
        confidence: the interval's coverage.
        units: shown after the estimate (``"pt"``, ``"x"``).

    Returns:
        :class:`Effect`; bounds are ``nan`` when an arm has fewer than two values or a value is not finite. When
        both arms have zero spread the interval is the point itself.
    """
    _check_confidence(confidence)
    x, y = _clean(a, "welch_interval a"), _clean(b, "welch_interval b")
    n = (int(x.size), int(y.size))
    if min(n) == 0:
        return Effect(name, math.nan, math.nan, math.nan, confidence, "welch-t", n, units)
    estimate = float(x.mean() - y.mean())
    if min(n) < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return Effect(name, estimate, math.nan, math.nan, confidence, "welch-t", n, units)
    va, vb = float(x.var(ddof=1)) / n[0], float(y.var(ddof=1)) / n[1]
    se2 = va + vb
    if se2 == 0.0:
        return Effect(name, estimate, estimate, estimate, confidence, "welch-t", n, units)
    df = se2 ** 2 / ((va ** 2 / (n[0] - 1) if va else 0.0) + (vb ** 2 / (n[1] - 1) if vb else 0.0))
    half = t_quantile(0.5 + confidence / 2.0, df) * math.sqrt(se2)
    return Effect(name, estimate, estimate - half, estimate + half, confidence, "welch-t", n, units)


def paired_interval(a: Sequence[float], b: Sequence[float], *, name: str = "mean(a - b)",
                    confidence: float = 0.95, units: str = "") -> Effect:
    """Mean of the paired differences ``a[i] - b[i]`` (same seed ``i``) with a one-sample t interval.

    Raises:
        ValueError: the two lists differ in length (pairs must match seed for seed).

    Examples:
        >>> e = paired_interval([2.0, 3.0, 4.0], [1.0, 1.5, 2.5])
        >>> round(e.estimate, 3), round(e.low, 3), round(e.high, 3)
        (1.333, 0.616, 2.05)
    """
    _check_confidence(confidence)
    x, y = _clean(a, "paired_interval a"), _clean(b, "paired_interval b")
    if x.size != y.size:
        raise ValueError(f"paired_interval: the arms must pair seed for seed, got {x.size} and {y.size} values")
    d = x - y
    n = (int(d.size),)
    if d.size == 0:
        return Effect(name, math.nan, math.nan, math.nan, confidence, "paired-t", n, units)
    estimate = float(d.mean())
    if d.size < 2 or not np.isfinite(d).all():
        return Effect(name, estimate, math.nan, math.nan, confidence, "paired-t", n, units)
    half = t_quantile(0.5 + confidence / 2.0, d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return Effect(name, estimate, estimate - half, estimate + half, confidence, "paired-t", n, units)


def _mean_difference(x: np.ndarray, y: np.ndarray) -> float:
    return float(x.mean() - y.mean())


def bootstrap_interval(a: Sequence[float], b: Sequence[float],
                       statistic: Callable[[np.ndarray, np.ndarray], float] = _mean_difference, *,
                       name: str = "statistic(a, b)", confidence: float = 0.95, resamples: int = 4000,
                       seed: int = 0, units: str = "") -> Effect:
    """A percentile-bootstrap interval of ``statistic(a, b)``, resampling each arm independently.

    Args:
        a, b: per-seed values of the two arms.
        statistic: ``f(a_array, b_array) -> float``; default the difference of means.
        resamples: bootstrap draws; ``seed`` fixes them so a report is reproducible.

    Returns:
        :class:`Effect` with ``method="bootstrap-percentile"``; bounds ``nan`` with fewer than two values per arm.

    Examples:
        >>> e = bootstrap_interval([1.0, 1.2, 1.1, 1.3], [1.0, 1.0, 1.1, 0.9], resamples=2000)
        >>> round(e.estimate, 3), e.low > 0
        (0.15, True)
    """
    _check_confidence(confidence)
    if resamples < 100:
        raise ValueError(f"bootstrap_interval: use at least 100 resamples (got {resamples})")
    x, y = _clean(a, "bootstrap_interval a"), _clean(b, "bootstrap_interval b")
    n = (int(x.size), int(y.size))
    if min(n) == 0:
        return Effect(name, math.nan, math.nan, math.nan, confidence, "bootstrap-percentile", n, units)
    estimate = float(statistic(x, y))
    if min(n) < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return Effect(name, estimate, math.nan, math.nan, confidence, "bootstrap-percentile", n, units)
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    for i in range(resamples):
        draws[i] = statistic(x[rng.integers(0, x.size, x.size)], y[rng.integers(0, y.size, y.size)])
    draws = draws[np.isfinite(draws)]
    if draws.size < resamples // 2:
        return Effect(name, estimate, math.nan, math.nan, confidence, "bootstrap-percentile", n, units)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return Effect(name, estimate, float(low), float(high), confidence, "bootstrap-percentile", n, units)
