"""Tests for normlab.lab.studies.stats and .verdicts: t quantiles against published tables, intervals against
hand-worked formulas and their coverage on simulated data, and the verdict rules on synthetic effects."""
from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from normlab.lab.studies.stats import (Effect, bootstrap_interval, format_mean_std, paired_interval, summarize, t_cdf,
                                       t_quantile, welch_interval)
from normlab.lab.studies.verdicts import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Verdict, apply_profile, exceeds,
                                          inconclusive, within)

# Student t 0.975 quantiles as printed in standard tables (e.g. NIST/SEMATECH e-Handbook, Table 1.3.6.7.2).
T_TABLE = [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (10, 2.228), (30, 2.042), (100, 1.984)]


@pytest.mark.parametrize("df, expected", T_TABLE)
def test_t_quantile_matches_published_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("p, df", [(0.9, 3), (0.995, 7), (0.6, 2.5), (0.05, 12)])
def test_t_quantile_inverts_cdf_and_is_antisymmetric(p, df):
    q = t_quantile(p, df)
    assert t_cdf(q, df) == pytest.approx(p, abs=1e-9)
    assert t_quantile(1 - p, df) == pytest.approx(-q, abs=1e-9)


def test_t_quantile_tends_to_normal():
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-4)


@pytest.mark.parametrize("bad", [dict(p=0.0, df=3), dict(p=1.0, df=3), dict(p=0.5, df=0), dict(p=0.5, df=math.inf)])
def test_t_quantile_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        t_quantile(**bad)


@pytest.mark.parametrize("values", [[0.61, 0.64, 0.62], [1.0, 5.0], [3.0, 3.0, 3.0, 4.5]])
def test_summarize_matches_statistics_module(values):
    s = summarize(values)
    assert (s.mean, s.n) == (pytest.approx(statistics.fmean(values)), len(values))
    assert s.std == pytest.approx(statistics.stdev(values))
    assert s.sem == pytest.approx(statistics.stdev(values) / math.sqrt(len(values)))


@pytest.mark.parametrize("values, expected", [([], "—"), ([0.5], "0.500"), ([1.0, 2.0], "1.500 ± 0.707")])
def test_format_mean_std(values, expected):
    assert format_mean_std(values) == expected


def test_welch_equal_variances_reduces_to_pooled_t_with_table_quantile():
    # a and b both have variance 1 and n=3: Welch's df is exactly 4 and the interval is d ± t(0.975, 4) sqrt(2/3).
    effect = welch_interval([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    half = 2.776445 * math.sqrt(2 / 3)
    assert (effect.estimate, effect.low, effect.high) == pytest.approx((-3.0, -3.0 - half, -3.0 + half), abs=1e-5)


def test_paired_interval_uses_differences_and_table_quantile():
    effect = paired_interval([2.0, 3.0, 4.0], [1.0, 1.5, 2.5])  # differences 1, 1.5, 1.5
    d = np.array([1.0, 1.5, 1.5])
    half = 4.302653 * d.std(ddof=1) / math.sqrt(3)
    assert (effect.low, effect.high) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-5)


@pytest.mark.parametrize("make", [
    lambda a, b: welch_interval(a, b),
    lambda a, b: paired_interval(a, b),
])
def test_t_intervals_cover_the_true_difference_about_95_percent(make):
    rng = np.random.default_rng(1)
    trials, covered = 400, 0
    for _ in range(trials):
        a, b = rng.normal(1.0, 1.0, 5), rng.normal(0.0, 2.0, 5)
        effect = make(a, b)
        covered += effect.low <= 1.0 <= effect.high
    assert 0.91 <= covered / trials <= 0.99


def test_bootstrap_width_matches_normal_theory_on_large_samples():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.5, 1.0, 300), rng.normal(0.0, 1.0, 300)
    effect = bootstrap_interval(a, b, resamples=2000)
    expected = 2 * 1.96 * math.sqrt(a.var(ddof=1) / 300 + b.var(ddof=1) / 300)
    assert effect.high - effect.low == pytest.approx(expected, rel=0.1)
    assert effect.estimate == pytest.approx(a.mean() - b.mean())


def test_bootstrap_is_reproducible_and_takes_any_statistic():
    ratio = lambda x, y: float(x.mean() / y.mean())  # noqa: E731
    first = bootstrap_interval([2.0, 2.2, 2.1], [1.0, 1.1, 0.9], ratio, resamples=500, seed=3)
    again = bootstrap_interval([2.0, 2.2, 2.1], [1.0, 1.1, 0.9], ratio, resamples=500, seed=3)
    assert first == again and first.low > 1.5


@pytest.mark.parametrize("make", [welch_interval, paired_interval, bootstrap_interval])
@pytest.mark.parametrize("a, b", [([1.0], [2.0]), ([1.0, math.nan], [2.0, 3.0])])
def test_no_interval_without_two_finite_values(make, a, b):
    effect = make(a, b)
    assert not effect.has_interval


def test_paired_interval_refuses_unmatched_seeds():
    with pytest.raises(ValueError, match="seed for seed"):
        paired_interval([1.0, 2.0], [1.0])


def _effect(low, high, estimate=None):
    estimate = (low + high) / 2 if estimate is None else estimate
    return Effect("d", estimate, low, high, 0.95, "welch-t", (3, 3))


EXCEEDS_CASES = [  # (low, high, threshold, direction, expected)
    (0.1, 0.5, 0.0, "above", SUPPORTED),
    (-0.5, -0.1, 0.0, "above", NOT_SUPPORTED),
    (-0.1, 0.5, 0.0, "above", INCONCLUSIVE),
    (-2.0, -0.5, -1.0, "above", INCONCLUSIVE),
    (-0.9, 0.5, -1.0, "above", SUPPORTED),
    (0.001, 0.004, 0.01, "below", SUPPORTED),
    (0.02, 0.03, 0.01, "below", NOT_SUPPORTED),
    (0.0, 0.0, 0.0, "above", INCONCLUSIVE),
]


@pytest.mark.parametrize("low, high, threshold, direction, expected", EXCEEDS_CASES)
def test_exceeds_rule(low, high, threshold, direction, expected):
    verdict = exceeds("claim", _effect(low, high), threshold, direction=direction)
    assert verdict.status == expected
    assert "interval" in verdict.reason and "supported if" in verdict.rule


WITHIN_CASES = [(-0.5, 0.5, 1.0, SUPPORTED), (1.0, 2.0, 1.0, NOT_SUPPORTED), (-3.0, -1.5, 1.0, NOT_SUPPORTED),
                (0.5, 1.5, 1.0, INCONCLUSIVE), (-2.0, 2.0, 1.0, INCONCLUSIVE)]


@pytest.mark.parametrize("low, high, margin, expected", WITHIN_CASES)
def test_within_rule(low, high, margin, expected):
    assert within("claim", _effect(low, high), margin).status == expected


@pytest.mark.parametrize("effect", [None, Effect("d", math.nan, math.nan, math.nan, 0.95, "welch-t", (0, 0)),
                                    Effect("d", 1.0, math.nan, math.nan, 0.95, "welch-t", (1, 1))])
def test_rules_are_inconclusive_without_an_interval(effect):
    assert exceeds("c", effect).status == INCONCLUSIVE
    assert within("c", effect, 1.0).status == INCONCLUSIVE


def test_smoke_profile_forces_inconclusive_but_keeps_the_effect():
    verdict = exceeds("c", _effect(0.1, 0.5), 0.0)
    forced = apply_profile(verdict, "smoke", conclusive=False)
    assert forced.status == INCONCLUSIVE and forced.reason.startswith("inconclusive: smoke profile")
    assert "supported" in forced.reason and forced.effect == verdict.effect
    assert apply_profile(verdict, "quick", conclusive=True) is verdict


def test_verdict_round_trips_through_json_dict():
    verdict = exceeds("c", _effect(0.1, 0.5), 0.0, extra=1)
    assert Verdict.from_dict(verdict.to_dict()) == verdict
    assert Verdict.from_dict(inconclusive("c", "r", "why").to_dict()).effect is None


@pytest.mark.parametrize("bad", [dict(direction="up"), dict(margin=0.0)])
def test_rules_reject_bad_arguments(bad):
    with pytest.raises(ValueError):
        if "margin" in bad:
            within("c", _effect(0, 1), bad["margin"])
        else:
            exceeds("c", _effect(0, 1), direction=bad["direction"])
