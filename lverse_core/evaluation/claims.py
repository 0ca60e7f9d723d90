"""Verdicts on the paper's claims, decided by intervals over seeds, never by one run (claims notebook 07).

A claim compares the paper's method with a control on one measure, trained under the same budget for several
seeds. Per seed the two runs share the seed (data draw, initialisation), so the comparison is paired: the verdict
rests on the mean per-seed difference ``method - control`` and its Student-t interval (95% by default,
``statistics.t_interval``). The claim
is

- *supported* when the whole interval lies on the side the paper predicts,
- *contradicted* when the whole interval lies on the other side,
- *inconclusive at this scale* when the interval contains zero, or when fewer than two seeds leave no interval.

An interval, not a single run, decides: a verdict from one seed flipped between two machines of the same commit
(Table 1's old verdict, "mixed" on an Intel run, "contradicts the claim" on an AMD run).
"""
from __future__ import annotations

from typing import Any, Sequence

from lverse_core.evaluation.statistics import t_interval

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive at this scale"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
DIRECTIONS = ("higher", "lower")  # which way the paper says the method beats the control on a measure


def verdict(low: float, high: float, better: str = "higher", tol: float = 0.0) -> str:
    """The verdict of an interval ``[low, high]`` of the difference method - control, for a measure where the
    paper says the method is ``better`` ("higher" or "lower") than the control. The interval must clear zero by
    more than ``tol`` (differences of float noise, e.g. BLEU-4 of 1e-12 vs 5e-8 when no 4-gram matches, decide
    nothing)."""
    if better not in DIRECTIONS:
        raise ValueError(f"better must be one of {DIRECTIONS}, got {better!r}")
    if low > high:
        raise ValueError(f"interval [{low}, {high}] is empty: low must not exceed high")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    above, below = low > tol, high < -tol
    if not (above or below):
        return INCONCLUSIVE
    return SUPPORTED if above == (better == "higher") else CONTRADICTED


def compare(method: Sequence[float], control: Sequence[float], better: str = "higher",
            level: float = 0.95) -> dict[str, Any]:
    """Paired comparison over seeds: ``method[i]`` and ``control[i]`` come from the same seed. Returns the
    ``statistics.t_interval`` of each side and of their difference (``Interval``; one seed: unbounded), and the
    verdict on the difference."""
    if len(method) != len(control):
        raise ValueError(f"paired seeds: {len(method)} method values vs {len(control)} control values; every seed "
                         f"needs both runs")
    diff = [float(m) - float(c) for m, c in zip(method, control)]
    d = t_interval(diff, level)
    m, c = t_interval(method, level), t_interval(control, level)
    tol = 1e-6 * max(1.0, abs(m.estimate), abs(c.estimate))  # a millionth of the measure's scale: float noise
    return {"method": m, "control": c, "difference": d, "verdict": verdict(d.low, d.high, better, tol),
            "better": better, "level": level, "seeds": len(diff)}
