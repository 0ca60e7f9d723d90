"""Verdicts on the paper's claims, decided by intervals over seeds and test items, never by one run (notebook 07).

A claim compares the paper's method with a control on one measure, trained under the same budget for several
seeds. Per seed the two runs share the seed (data draw, initialisation), and where the measure is an average over
test items, the items too (the same test images, the same prompts): the comparison is paired at both levels. The
verdict rests on the difference ``method - control`` and its interval (``statistics.paired_difference``: seeds,
then items within each seed). The claim is

- *supported* when the whole interval lies on the side the paper predicts, clear of zero,
- *contradicted* when the whole interval lies on the other side,
- *no difference within the margin* when the whole interval lies inside ``[-margin, margin]`` (the equivalence
  margin declared for the claim's primary measure, ``claims.primaries``: two one-sided tests at the interval's
  level; a row with no declared margin never gets this verdict),
- *inconclusive* otherwise (the interval reaches across zero and past the margin, or cannot be estimated).

A small effect that clears zero inside the margin is *supported*: the interval says which side it is on, and the
scorecard's difference column says how small it is. An interval, not a single run, decides: a verdict from one seed
flipped between two machines of the same commit (Table 1's old verdict, "mixed" on an Intel run, "contradicts the
claim" on an AMD run).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lverse_core.evaluation.statistics import paired_difference

SUPPORTED, CONTRADICTED, NO_DIFFERENCE, INCONCLUSIVE = (
    "supported", "contradicted", "no difference within the margin", "inconclusive")
NOT_MEASURED = "not measured"  # a row whose measure is missing or NaN on some seed: "not measured: <why>"
VERDICTS = (SUPPORTED, CONTRADICTED, NO_DIFFERENCE, INCONCLUSIVE)
DIRECTIONS = ("higher", "lower")  # which way the paper says the method beats the control on a measure


def verdict(low: float, high: float, better: str = "higher", tol: float = 0.0, margin: float | None = None) -> str:
    """The verdict of an interval ``[low, high]`` of the difference method - control, for a measure where the
    paper says the method is ``better`` ("higher" or "lower") than the control. The interval must clear zero by
    more than ``tol`` (differences of float noise, e.g. BLEU-4 of 1e-12 vs 5e-8 when no 4-gram matches, decide
    nothing); with a ``margin`` (> 0), an interval inside ``[-margin, margin]`` is *no difference within the
    margin*."""
    if better not in DIRECTIONS:
        raise ValueError(f"better must be one of {DIRECTIONS}, got {better!r}")
    if low > high:
        raise ValueError(f"interval [{low}, {high}] is empty: low must not exceed high")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    if margin is not None and not margin > 0:
        raise ValueError(f"margin must be > 0 (or None for a row without one), got {margin}")
    above, below = low > tol, high < -tol
    if above or below:
        return SUPPORTED if above == (better == "higher") else CONTRADICTED
    if margin is not None and -margin <= low and high <= margin:
        return NO_DIFFERENCE
    return INCONCLUSIVE


def float_tolerance(method: Sequence[Any], control: Sequence[Any]) -> float:
    """A millionth of the measure's scale: differences below it are float noise, not an effect."""
    means = [float(np.mean(v)) for v in (*method, *control)]
    return 1e-6 * max([1.0, *map(abs, means)])


def compare(method: Sequence[Any], control: Sequence[Any], better: str = "higher", level: float = 0.95,
            margin: float | None = None, resamples: int = 4000, seed: int = 0) -> dict[str, Any]:
    """Paired comparison: ``method[s]`` and ``control[s]`` come from seed ``s``, each a number or a list of per-item
    values paired across the two (``statistics.paired_difference``). Returns the mean of each side over seeds, the
    ``Difference`` (interval, standard error, p) and its verdict."""
    d = paired_difference(method, control, level, resamples, seed)
    return {"method": float(np.mean([np.mean(v) for v in method])),
            "control": float(np.mean([np.mean(v) for v in control])), "difference": d,
            "verdict": verdict(d.low, d.high, better, float_tolerance(method, control), margin),
            "better": better, "level": level, "seeds": d.seeds}
