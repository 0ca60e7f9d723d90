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

``paired_difference`` decides the claims (notebook 07): the difference method - control of a measure taken on
several seeds, each seed holding per-item values paired across the two arms (the same test images, the same
prompts). It resamples seeds, then items within each chosen seed (``hierarchical_bootstrap``), so the interval
carries both the variation between trainings and the variation between test items; ``holm`` corrects a family of
its p-values, ``min_detectable_effect`` and ``seeds_needed`` say what a design can resolve.
"""
from __future__ import annotations

import dataclasses
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


HIERARCHICAL = "seeds, then items (bootstrap SE, Student-t on seeds - 1 df)"
SEEDS_ONLY = "seeds (bootstrap SE, Student-t on seeds - 1 df)"


@dataclass(frozen=True)
class Difference:
    """The paired difference method - control over ``seeds`` seeds (``items`` per-item pairs in all, 0 when the
    measure has none), its interval ``[low, high]`` at ``level``, the standard error ``se`` it is made from, its
    degrees of freedom ``df`` (seeds - 1) and the two-sided p-value of "no difference". ``note`` says how it was
    made when it is not the plain bootstrap (a resolution floor, or why it cannot be estimated: then ``low, high``
    are ``-inf, inf`` and ``p`` is 1)."""
    estimate: float
    low: float
    high: float
    level: float
    se: float
    df: int
    p: float
    seeds: int
    items: int
    method: str
    note: str = ""

    @property
    def bounds(self) -> tuple[float, float]:
        return self.low, self.high

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def at_level(self, level: float) -> "Difference":
        """The same estimate and standard error with the interval at another ``level`` (e.g. a Holm step)."""
        _check_level(level)
        if not math.isfinite(self.se) or self.df < 1:
            return dataclasses.replace(self, level=level)
        half = _t_quantile((1 + level) / 2, self.df) * self.se
        return dataclasses.replace(self, low=self.estimate - half, high=self.estimate + half, level=level)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _t_quantile(q: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


def hierarchical_bootstrap(groups: Sequence[Sequence[float]], resamples: int = 4000, seed: int = 0) -> np.ndarray:
    """``resamples`` bootstrap replicates of the mean over groups of the groups' item means: each replicate draws
    ``len(groups)`` groups with replacement, then, within each drawn group, as many items as it holds with
    replacement (two-stage resampling, Davison & Hinkley 1997, section 3.8). Groups may hold different numbers of
    items. Vectorised over resamples x groups x items (in chunks of ~160 MB); seeded numpy generator."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if len(groups) == 0:
        raise ValueError("hierarchical_bootstrap needs at least one group")
    rows = [_values(g, f"hierarchical_bootstrap (group {i})") for i, g in enumerate(groups)]
    n = np.array([len(r) for r in rows])
    S, N = len(rows), int(n.max())
    padded = np.zeros((S, N))
    for i, r in enumerate(rows):
        padded[i, :len(r)] = r
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    chunk = max(1, 20_000_000 // (S * N))
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        pick = rng.integers(0, S, (b, S))  # (b, S) the groups drawn
        count = n[pick]  # (b, S) items each drawn group holds
        item = (rng.random((b, S, N)) * count[..., None]).astype(np.int64)  # (b, S, N) uniform in [0, count)
        drawn = padded[pick[..., None], item]  # (b, S, N)
        used = np.arange(N) < count[..., None]  # a group of fewer items draws only as many
        out[start:start + b] = ((drawn * used).sum(-1) / count).mean(-1)
    return out


def _resolution(values: Sequence[np.ndarray]) -> float | None:
    """The smallest step the measure can take on these items: the smallest gap between distinct item values
    (items of 0/1, a share: 1), per item of a seed (one item in n). None when nothing tells it."""
    pooled = np.unique(np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in values]))
    if len(pooled) > 1:
        gap = float(np.diff(pooled).min())
    elif len(pooled) == 1 and pooled[0] in (0.0, 1.0):
        gap = 1.0
    else:
        return None
    return gap / max(len(v) for v in values)


def paired_difference(method: Sequence[Any], control: Sequence[Any], level: float = 0.95, resamples: int = 4000,
                      seed: int = 0) -> Difference:
    """The difference method - control of a measure over seeds: ``method[s]`` and ``control[s]`` are seed ``s``'s
    values, each either one number (a measure with no items: FID, KID, corpus CIDEr) or a list of per-item values
    paired across the two arms (the items of the same test images). The estimate is the mean over seeds of the
    seeds' mean item difference; its standard error ``se`` is the standard deviation of
    ``hierarchical_bootstrap`` replicates (seeds, then items within each seed: both sources of variation), and

        interval = estimate +- t(1 - alpha / 2, seeds - 1) * se,    p = 2 * P(T_{seeds - 1} > |estimate| / se).

    Why not the bootstrap's percentiles: a percentile interval cannot be wider than the range of the seeds drawn,
    so with 3 seeds and a large seed effect it covers the truth ~85% of the time at a nominal 95%; the Student-t
    quantile on seeds - 1 degrees of freedom keeps the seeds' few degrees of freedom in the width (the bootstrap SE
    counts item noise at both stages, so the interval errs wide: 93-97% coverage in simulation at 3-8 seeds with a
    seed effect half the item noise, ~100% when item noise dominates; tests/test_claims_statistics.py checks it).

    Never zero width: when the replicates do not vary (every item difference equal, or every seed's difference
    equal and no items), the standard error is one step of the measure (``_resolution``: one item in n for a
    share); a measure with no items and no spread between seeds has no estimable interval (``-inf, inf``). One
    seed leaves the variation between trainings unknown: ``-inf, inf``."""
    _check_level(level)
    if len(method) != len(control):
        raise ValueError(f"paired seeds: {len(method)} method values vs {len(control)} control values; every seed "
                         f"needs both arms")
    if len(method) == 0:
        raise ValueError("paired_difference needs at least one seed")
    with_items = [np.ndim(m) > 0 for m in method] + [np.ndim(c) > 0 for c in control]
    if any(with_items) and not all(with_items):
        raise ValueError("paired_difference: give every seed of both arms per-item lists, or every one a number")
    S = len(method)
    if all(with_items):
        m = [_values(v, f"method items of seed {i}") for i, v in enumerate(method)]
        c = [_values(v, f"control items of seed {i}") for i, v in enumerate(control)]
        for i, (a, b) in enumerate(zip(m, c)):
            if len(a) != len(b):
                raise ValueError(f"seed {i}: {len(a)} method items vs {len(b)} control items; items are paired "
                                 f"(the same test items in both arms)")
        groups, items, method_name = [a - b for a, b in zip(m, c)], sum(len(a) for a in m), HIERARCHICAL
        resolution = _resolution(m + c)
    else:
        groups = [np.array([float(a) - float(b)]) for a, b in zip(method, control)]
        _values([g[0] for g in groups], "paired_difference")
        items, method_name, resolution = 0, SEEDS_ONLY, None
    estimate = float(np.mean([g.mean() for g in groups]))
    df = S - 1
    if S < 2:
        return Difference(estimate, -math.inf, math.inf, level, math.inf, 0, 1.0, S, items, method_name,
                          "one seed: the variation between trainings is unknown")
    se = float(hierarchical_bootstrap(groups, resamples, seed).std(ddof=1))
    if not items:  # the plug-in bootstrap of S values is sqrt((S - 1) / S) too narrow: Student-t's sd / sqrt(S)
        se *= math.sqrt(S / df)
    note = ""
    if not se > 1e-12 * max(1.0, abs(estimate)):  # no spread, or float noise of it
        if resolution is None:
            return Difference(estimate, -math.inf, math.inf, level, math.inf, df, 1.0, S, items, method_name,
                              f"every seed gives the same difference and the measure has no per-item values: its "
                              f"spread cannot be estimated")
        se, note = resolution, f"no spread: the standard error is the measure's step ({resolution:.3g})"
    from scipy import stats

    p = float(2 * stats.t.sf(abs(estimate) / se, df))
    half = _t_quantile((1 + level) / 2, df) * se
    return Difference(estimate, estimate - half, estimate + half, level, se, df, p, S, items, method_name, note)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979): sort ascending, multiply the j-th smallest (j from 0) by
    m - j, carry the running maximum, cap at 1. A hypothesis is rejected at family-wise level alpha iff its
    adjusted p <= alpha. The same as ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]``."""
    p = _values(pvalues, "holm") if len(pvalues) else np.zeros(0)
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"holm: p-values must lie in [0, 1], got {list(p)}")
    order = np.argsort(p, kind="stable")
    m = len(p)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return [float(x) for x in adjusted]


def min_detectable_effect(se: float, df: int, level: float = 0.95, power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at ``level`` detects with probability ``power``:

        MDE = (t(1 - alpha / 2, df) + t(power, df)) * se

    (the normal approximation of power, with the interval's Student-t quantiles; ``se`` from the bootstrap).
    Infinite when ``se`` is, or with no degrees of freedom."""
    _check_level(level)
    if not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1), got {power}")
    if df < 1 or not math.isfinite(se):
        return math.inf
    return (_t_quantile((1 + level) / 2, df) + _t_quantile(power, df)) * se


def seeds_needed(se: float, seeds: int, target: float, level: float = 0.95, power: float = 0.8,
                 most: int = 1000) -> int | None:
    """The fewest seeds at which ``min_detectable_effect`` falls to ``target`` (e.g. a claim's margin), the standard
    error shrinking as 1 / sqrt(seeds) from ``se`` at ``seeds``; None when more than ``most`` would be needed or
    nothing is known (infinite ``se``)."""
    if not (math.isfinite(se) and seeds >= 1 and target > 0):
        return None
    for k in range(max(2, seeds), most + 1):
        if min_detectable_effect(se * math.sqrt(seeds / k), k - 1, level, power) <= target:
            return k
    return None


__all__ = ["BOOTSTRAP", "Difference", "HIERARCHICAL", "Interval", "SEEDS_ONLY", "T_INTERVAL", "bootstrap_interval",
           "hierarchical_bootstrap", "holm", "min_detectable_effect", "paired_difference", "percentile_interval",
           "seeds_needed", "t_interval"]
