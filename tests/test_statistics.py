"""The one statistics module: every interval in one shape, the textbook values, and what moving to it changed."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lverse_core.evaluation import statistics as S

VERDICTS_40 = [1.0] * 13 + [0.0] * 27  # 40 per-image right/wrong verdicts, 32.5% right


def test_t_interval_is_the_textbook_student_t_interval():
    r = S.t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2 df) x sd / sqrt(n)
    assert isinstance(r, S.Interval) and r.method == S.T_INTERVAL and r.level == 0.95
    assert r.estimate == 2.0 and r.n == 3 and r.bounds == pytest.approx((2.0 - half, 2.0 + half))
    ref = S.t_interval([0.3, 1.9, 2.2, 0.7, 1.1], level=0.9)
    from scipy import stats

    x = np.array([0.3, 1.9, 2.2, 0.7, 1.1])
    assert ref.bounds == pytest.approx(stats.t.interval(0.9, 4, loc=x.mean(), scale=stats.sem(x)))
    one = S.t_interval([5.0])
    assert one.bounds == (-math.inf, math.inf) and one.n == 1  # one value says nothing about the spread


@pytest.mark.parametrize("fn", [S.t_interval, S.bootstrap_interval])
def test_bad_values_and_levels_are_refused_by_name(fn):
    with pytest.raises(ValueError, match="at least one value"):
        fn([])
    with pytest.raises(ValueError, match="NaN.*index 1"):
        fn([1.0, float("nan")])
    with pytest.raises(ValueError, match="level"):
        fn([1.0, 2.0], level=1.0)


def test_bootstrap_interval_is_seeded_brackets_the_mean_and_shrinks_with_more_values():
    a, b = S.bootstrap_interval(VERDICTS_40, 500, seed=3), S.bootstrap_interval(VERDICTS_40, 500, seed=3)
    assert a == b and a.method == S.BOOTSTRAP and a.n == 40 and a.estimate == pytest.approx(0.325)
    assert S.bootstrap_interval(VERDICTS_40, 500, seed=4) != a
    assert a.low < a.estimate < a.high and 0 <= a.low and a.high <= 1
    large = S.bootstrap_interval(VERDICTS_40 * 50, 500, seed=3)
    assert (large.high - large.low) < 0.3 * (a.high - a.low)  # ~ 1 / sqrt(50) as wide
    assert S.bootstrap_interval([1, 1, 1], 100).bounds == (1.0, 1.0)  # no spread, nothing to resample
    assert S.bootstrap_interval([0.4], 100).bounds == (0.4, 0.4)
    with pytest.raises(ValueError, match="resamples"):
        S.bootstrap_interval(VERDICTS_40, 0)


def test_bootstrap_interval_pins_its_values_on_a_fixed_example():
    r = S.bootstrap_interval(VERDICTS_40, 1000, seed=0)
    assert r.bounds == pytest.approx((0.175, 0.475))


def _old_torch_bootstrap(per_item, resamples, seed, level=0.95):
    """The judge intervals before the statistics module: torch generator, torch.quantile."""
    x = torch.as_tensor(list(per_item), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    means = x[torch.randint(len(x), (resamples, len(x)), generator=g)].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(lo), float(hi)


def test_old_and_new_judge_intervals_differ_only_by_resampling_noise():
    shares = [((i * 37) % 101) / 100 for i in range(40)]  # e.g. each image's share of shuffled captions matched
    old = _old_torch_bootstrap(shares, 1000, 0)
    new = S.bootstrap_interval(shares, 1000, seed=0).bounds
    assert old == pytest.approx((0.4057375, 0.5907500))  # before
    assert new == pytest.approx((0.4084625, 0.5857625))  # now: another generator draws other resamples ...
    assert new == pytest.approx(old, abs=0.01)  # ... of the same percentile bootstrap


def test_the_gap_intervals_widen_from_the_normal_quantile_to_students_t():
    per_image = [0.12, 0.05, 0.31, -0.02, 0.18, 0.09, 0.22, 0.15]
    v = torch.tensor(per_image, dtype=torch.float64)
    old_half = 1.96 * float(v.std()) / len(v) ** 0.5  # the gap intervals before: normal approximation
    new = S.t_interval(per_image)
    from scipy import stats

    assert (new.high - new.estimate) == pytest.approx(old_half * stats.t.ppf(0.975, 7) / 1.96)
    assert (new.high - new.estimate) > old_half


def test_percentile_interval_reads_the_replicates_percentiles():
    reps = np.linspace(0.0, 1.0, 101)
    r = S.percentile_interval(reps, 0.5, n=7, level=0.9, method="two-way bootstrap")
    assert r.bounds == pytest.approx((0.05, 0.95)) and r.n == 7 and r.method == "two-way bootstrap"
    assert r.as_dict() == {"estimate": 0.5, "low": r.low, "high": r.high, "level": 0.9, "method": "two-way bootstrap",
                           "n": 7}


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=30), st.integers(0, 2 ** 31 - 1))
def test_every_interval_holds_its_estimate_for_any_values(values, seed):
    t = S.t_interval(values)
    b = S.bootstrap_interval(values, 50, seed)
    assert t.estimate == b.estimate
    assert t.low <= t.estimate + 1e-9 and t.estimate <= t.high + 1e-9
    assert min(values) - 1e-9 <= b.low <= b.high <= max(values) + 1e-9
