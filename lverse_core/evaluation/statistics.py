"""Every confidence interval the kit reports, in one place and one shape (``Interval``).

Two ways to put an interval on a mean, chosen by what the values are:

- ``t_interval``: the two-sided Student-t interval of the mean, for a few roughly normal values (the claims' per-seed
  differences, notebook 07) and for per-image means whose spread is estimated from the images (BiART's caption gap,
  notebook 02). One value leaves the interval unbounded (``-inf``, ``inf``): a single value says nothing about spread.
- ``bootstrap_interval``: the percentile bootstrap of the mean (``scipy.stats.bootstrap``, seeded numpy generator),
  for bounded, far-from-normal values such as per-image right/wrong verdicts (Table 3's judge, notebook 05).

``percentile_interval`` turns bootstrap replicates made elsewhere into the same shape: the human evaluation
(notebook 06) resamples sets and raters together (``human_eval.vote_shares``), a scheme no one-sample bootstrap
expresses. Results are deterministic for a given seed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

T_INTERVAL = "student-t"
BOOTSTRAP = "percentile bootstrap"


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-sided interval at ``level`` (e.g. 0.95), made by ``method`` from ``n`` values."""
    estimate: float
    low: float
    high: float
    level: float
    method: str
    n: int

    @property
    def bounds(self) -> tuple[float, float]:
        return self.low, self.high

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def _values(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(x) == 0:
        raise ValueError(f"{what} needs at least one value")
    if np.isnan(x).any():
        raise ValueError(f"{what} got NaN among {len(x)} values (first at index {int(np.isnan(x).argmax())}): a "
                         f"measure failed to produce its value; drop or recompute it first")
    return x


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of ``values`` and its two-sided Student-t interval (n - 1 degrees of freedom)."""
    from scipy import stats

    _check_level(level)
    x = _values(values, "t_interval")
    n, mean = len(x), float(x.mean())
    if n == 1:
        return Interval(mean, -math.inf, math.inf, level, T_INTERVAL, 1)
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, level, T_INTERVAL, n)


def bootstrap_interval(values: Sequence[float], resamples: int = 1000, seed: int = 0, level: float = 0.95
                       ) -> Interval:
    """Mean of ``values`` and its percentile bootstrap interval over ``resamples`` resamples of the values
    (``scipy.stats.bootstrap``, ``method="percentile"``, numpy generator seeded with ``seed``). One value has no
    spread to resample: its interval is the value itself."""
    from scipy import stats

    _check_level(level)
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    x = _values(values, "bootstrap_interval")
    mean = float(x.mean())
    if len(x) == 1:
        return Interval(mean, mean, mean, level, BOOTSTRAP, 1)
    batch = max(1, min(resamples, 10_000_000 // len(x)))  # at most ~80 MB of resampled values at a time
    r = stats.bootstrap((x,), np.mean, n_resamples=resamples, batch=batch, vectorized=True, confidence_level=level,
                        method="percentile", rng=np.random.default_rng(seed))
    low, high = float(r.confidence_interval.low), float(r.confidence_interval.high)
    return Interval(mean, low, high, level, BOOTSTRAP, len(x))


def percentile_interval(replicates: Sequence[float], estimate: float, n: int, level: float = 0.95,
                        method: str = BOOTSTRAP) -> Interval:
    """``estimate`` with the central ``level`` share of bootstrap ``replicates`` (their percentiles (1 - level) / 2
    and (1 + level) / 2, linear interpolation), for resampling schemes made by the caller; ``n`` values behind it."""
    _check_level(level)
    reps = _values(replicates, "percentile_interval")
    low, high = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(estimate), float(low), float(high), level, method, int(n))


__all__ = ["BOOTSTRAP", "Interval", "T_INTERVAL", "bootstrap_interval", "percentile_interval", "t_interval"]
