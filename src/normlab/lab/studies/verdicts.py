"""Verdicts: a claim, an effect size with its interval, and a rule that decides — never a hand-written conclusion.

A study states each claim it tests as a condition on one effect (a difference of means, a log ratio) and picks
one of two rules:

* :func:`exceeds` — a directional claim, "the effect is above (or below) ``threshold``". **Supported** when the
  whole confidence interval lies on the claimed side of the threshold; **not supported** when the whole interval
  lies on the other side (the data contradict the claim); **inconclusive** when the interval straddles it.
* :func:`within` — an equivalence claim, "the effect is negligible: inside ``[-margin, +margin]``" (two one-sided
  tests, Schuirmann 1987). **Supported** when the interval lies inside the band, **not supported** when it lies
  wholly outside, **inconclusive** otherwise.

Either rule gives *inconclusive* when the effect has no interval (fewer than two seeds, a diverged run), and
:func:`apply_profile` turns every verdict of a profile that cannot conclude (``smoke``) into
``"inconclusive: smoke profile"`` while keeping the measured effect, so the report shows what was measured
without pretending that one tiny epoch settles anything.

Examples:
    >>> from normlab.lab.studies.stats import Effect
    >>> gap = Effect("acc(BN) - acc(none)", 0.08, 0.05, 0.11, 0.95, "welch-t", (3, 3), "")
    >>> v = exceeds("BN trains to higher accuracy than no normalization", gap, threshold=0.0)
    >>> v.status, v.reason
    ('supported', 'the 95% interval [0.05, 0.11] lies above 0')
    >>> within("GN is insensitive to batch size", gap, margin=0.02).status
    'not supported'
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from .stats import Effect

__all__ = ["Verdict", "SUPPORTED", "NOT_SUPPORTED", "INCONCLUSIVE", "STATUSES", "exceeds", "within",
           "inconclusive", "apply_profile"]

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
STATUSES = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)


def _g(value: float) -> str:
    return f"{value:.3g}"


@dataclass(frozen=True)
class Verdict:
    """The outcome of testing one claim.

    ``status`` is one of :data:`STATUSES`; ``rule`` says in words how it was decided (written by the study);
    ``reason`` says why this status (computed); ``effect`` is the measured effect (may be None when nothing could
    be measured); ``details`` holds any extra numbers the study wants shown.
    """

    claim: str
    status: str
    effect: Effect | None
    rule: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Verdict status must be one of {STATUSES}, got {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"claim": self.claim, "status": self.status, "rule": self.rule, "reason": self.reason,
                "effect": None if self.effect is None else self.effect.to_dict(), "details": dict(self.details)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Verdict":
        effect = data.get("effect")
        if effect is not None:
            effect = Effect(**{**effect, "n": tuple(effect.get("n", ()))})
        return cls(data["claim"], data["status"], effect, data.get("rule", ""), data.get("reason", ""),
                   dict(data.get("details", {})))


def _no_interval(effect: Effect | None) -> str | None:
    if effect is None or not math.isfinite(effect.estimate):
        return "the effect could not be measured (no finished runs, or the runs diverged)"
    if not effect.has_interval:
        return f"no confidence interval: {'/'.join(map(str, effect.n))} value(s) per arm (at least 2 needed)"
    return None


def _interval(effect: Effect) -> str:
    return f"the {effect.confidence:.0%} interval [{_g(effect.low)}, {_g(effect.high)}]"


def exceeds(claim: str, effect: Effect | None, threshold: float = 0.0, *, direction: str = "above",
            rule: str | None = None, **details: Any) -> Verdict:
    """Decide a directional claim: the effect lies ``direction`` (``"above"``/``"below"``) ``threshold``.

    Args:
        claim: the claim in words.
        effect: the measured effect with its interval.
        threshold: the value the claim says the effect passes (0 for "any improvement", or the smallest effect
            that matters).
        direction: ``"above"`` or ``"below"``.
        rule: the rule in words; by default it is generated from the threshold and direction.
        **details: extra JSON values stored with the verdict.

    Returns:
        The :class:`Verdict`.
    """
    if direction not in ("above", "below"):
        raise ValueError(f"exceeds: direction must be 'above' or 'below', got {direction!r}")
    name = effect.name if effect is not None else "the effect"
    other = "below" if direction == "above" else "above"
    rule = rule or (f"supported if the confidence interval of {name} lies entirely {direction} {_g(threshold)}; "
                    f"not supported if it lies entirely {other} it; inconclusive otherwise")
    missing = _no_interval(effect)
    if missing:
        return Verdict(claim, INCONCLUSIVE, effect, rule, missing, dict(details))
    sign = 1.0 if direction == "above" else -1.0
    low, high = sorted((sign * (effect.low - threshold), sign * (effect.high - threshold)))
    if low > 0:
        status, where = SUPPORTED, direction
    elif high < 0:
        status, where = NOT_SUPPORTED, other
    else:
        status, where = INCONCLUSIVE, "across"
    verb = "includes" if where == "across" else f"lies {where}"
    reason = f"{_interval(effect)} {verb} {_g(threshold)}"
    return Verdict(claim, status, effect, rule, reason, dict(details))


def within(claim: str, effect: Effect | None, margin: float, *, rule: str | None = None, **details: Any) -> Verdict:
    """Decide an equivalence claim: the effect is inside ``[-margin, +margin]``.

    Args:
        claim: the claim in words.
        effect: the measured effect with its interval.
        margin: the largest effect still called negligible (> 0), in the effect's units.
        rule: the rule in words; by default generated from the margin.

    Returns:
        The :class:`Verdict`.
    """
    if not margin > 0:
        raise ValueError(f"within: margin must be positive, got {margin}")
    name = effect.name if effect is not None else "the effect"
    rule = rule or (f"supported if the confidence interval of {name} lies inside ±{_g(margin)}; not supported if "
                    f"it lies entirely outside that band; inconclusive otherwise")
    missing = _no_interval(effect)
    if missing:
        return Verdict(claim, INCONCLUSIVE, effect, rule, missing, dict(details))
    if -margin < effect.low and effect.high < margin:
        status, reason = SUPPORTED, f"{_interval(effect)} lies inside ±{_g(margin)}"
    elif effect.low >= margin or effect.high <= -margin:
        status, reason = NOT_SUPPORTED, f"{_interval(effect)} lies outside ±{_g(margin)}"
    else:
        status, reason = INCONCLUSIVE, f"{_interval(effect)} crosses the ±{_g(margin)} band"
    return Verdict(claim, status, effect, rule, reason, dict(details))


def inconclusive(claim: str, rule: str, reason: str, effect: Effect | None = None, **details: Any) -> Verdict:
    """A verdict that could not be reached (missing runs, a dependency not available), with the reason."""
    return Verdict(claim, INCONCLUSIVE, effect, rule, reason, dict(details))


def apply_profile(verdict: Verdict, profile_name: str, conclusive: bool) -> Verdict:
    """Force ``"inconclusive: <profile> profile"`` for profiles that cannot conclude; keep the measured effect.

    Examples:
        >>> v = inconclusive("c", "r", "no runs")
        >>> apply_profile(v, "smoke", conclusive=False).reason
        'inconclusive: smoke profile (the rule alone would say: inconclusive — no runs)'
    """
    if conclusive:
        return verdict
    reason = f"inconclusive: {profile_name} profile (the rule alone would say: {verdict.status} — {verdict.reason})"
    return replace(verdict, status=INCONCLUSIVE, reason=reason)
