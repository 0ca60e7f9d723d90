"""The claims' statistics: the paired two-level interval, Holm, the minimum detectable effect, the verdicts, the
declared primaries and the scorecard (notebook 07)."""
import math

import numpy as np
import pytest

from lverse_core.evaluation import statistics as S


def _two_level(rng, seeds, items, seed_sd, item_sd, truth):
    """Per-item differences of one simulated experiment: a seed effect shared by a seed's items, item noise."""
    return truth + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, item_sd, (seeds, items))


def _coverage(interval, seeds, seed_sd, sims=200):
    rng, truth, hit = np.random.default_rng(11), 0.3, 0
    for k in range(sims):
        d = _two_level(rng, seeds, 30, seed_sd, 1.0, truth)
        hit += interval(d, k).contains(truth)
    return hit / sims


def _seeds_then_items(d, k):
    return S.paired_difference([list(x) for x in d], [[0.0] * d.shape[1]] * len(d), resamples=400, seed=k)


def _items_only(d, k):  # the pairing kept, the seeds forgotten: every item as if from one training
    return S.bootstrap_interval(d.reshape(-1), 400, seed=k)


def test_the_paired_interval_covers_the_truth_on_simulated_two_level_data():
    # a seed effect half the item noise's SD: large beside the items' mean over 30 items
    assert 0.90 <= _coverage(_seeds_then_items, 5, 0.5) <= 0.99
    assert 0.90 <= _coverage(_seeds_then_items, 3, 0.5) <= 0.99  # the claims' 3 seeds too
    # the same data read as items alone, ignoring the seeds: far too narrow
    assert _coverage(_items_only, 5, 0.5) < 0.8


def test_the_interval_is_seeded_and_uses_the_items_and_the_seeds():
    rng = np.random.default_rng(0)
    d = _two_level(rng, 3, 50, 0.2, 1.0, 0.3)
    a, b = _seeds_then_items(d, 1), _seeds_then_items(d, 1)
    assert a == b and a.method == S.HIERARCHICAL and a.seeds == 3 and a.items == 150 and a.df == 2
    assert a.estimate == pytest.approx(d.mean()) and a.low < a.estimate < a.high and 0 < a.p < 1
    wider = S.paired_difference([list(x) for x in d * 3], [[0.0] * 50] * 3, resamples=400, seed=1)
    assert wider.se == pytest.approx(3 * a.se)
    # the two-stage replicates vary with both levels: seeds alone would hold no item noise
    reps = S.hierarchical_bootstrap([[0.0, 1.0], [0.0, 1.0]], 2000, seed=0)
    assert reps.std() > 0.2 and set(np.round(reps, 6)) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    # groups of different sizes draw as many items as they hold
    uneven = S.hierarchical_bootstrap([[1.0], [0.0, 0.0, 0.0]], 1000, seed=0)
    assert set(uneven) <= {0.0, 0.5, 1.0}


def test_seed_level_measures_get_the_student_t_width():
    r = S.paired_difference([1.0, 2.0, 3.1], [0.5, 1.4, 2.0], resamples=20000)
    t = S.t_interval([0.5, 0.6, 1.1])
    assert r.method == S.SEEDS_ONLY and r.items == 0 and r.estimate == pytest.approx(t.estimate)
    assert r.high - r.low == pytest.approx(t.high - t.low, rel=0.02)


def test_never_a_zero_width_interval():
    # the old defect: three equal per-seed differences gave [0.01, 0.01] and "supported"
    r = S.paired_difference([0.01] * 3, [0.0] * 3)
    assert r.bounds == (-math.inf, math.inf) and r.p == 1.0 and "cannot be estimated" in r.note
    # a share of 100 items where the method is right on one more item on every seed: one item's step
    method, control = [[1.0] * 31 + [0.0] * 69] * 3, [[1.0] * 30 + [0.0] * 70] * 3
    r = S.paired_difference(method, control)
    assert r.high - r.low > 0 and r.low < 0 < r.high and r.estimate == pytest.approx(0.01)
    same = S.paired_difference([[1.0, 0.0, 1.0]] * 3, [[1.0, 0.0, 1.0]] * 3)
    assert same.estimate == 0 and same.se == pytest.approx(1 / 3) and "step" in same.note
    one = S.paired_difference([[1.0, 0.0]], [[0.0, 0.0]])
    assert one.bounds == (-math.inf, math.inf) and "one seed" in one.note


def test_paired_difference_refuses_unpaired_or_broken_input_by_name():
    with pytest.raises(ValueError, match="paired seeds"):
        S.paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="seed 1: 2 method items vs 3"):
        S.paired_difference([[1.0], [1.0, 2.0]], [[0.0], [0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="per-item lists, or every one a number"):
        S.paired_difference([[1.0], 2.0], [[0.0], 1.0])
    with pytest.raises(ValueError, match="NaN"):
        S.paired_difference([1.0, float("nan")], [0.0, 0.0])


def test_holm_against_a_worked_example():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running max -> 0.02 0.03 0.06 0.06
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert S.holm([]) == [] and S.holm([0.2]) == [0.2]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        S.holm([1.5])


def test_a_difference_widens_to_another_level():
    r = S.paired_difference([1.0, 2.0, 3.1], [0.5, 1.4, 2.0])
    w = r.at_level(0.99)
    assert w.low < r.low and w.high > r.high and w.estimate == r.estimate and w.level == 0.99


def test_minimum_detectable_effect_shrinks_with_more_seeds_and_items():
    assert S.min_detectable_effect(1.0, 1000) == pytest.approx(1.96 + 0.8416, abs=0.01)  # the normal limit
    assert S.min_detectable_effect(1.0, 2) > S.min_detectable_effect(1.0, 9) > S.min_detectable_effect(1.0, 100)
    assert S.min_detectable_effect(1.0, 5, level=0.99) > S.min_detectable_effect(1.0, 5)
    assert S.min_detectable_effect(math.inf, 5) == math.inf and S.min_detectable_effect(1.0, 0) == math.inf
    rng = np.random.default_rng(3)
    small = _two_level(rng, 3, 20, 0.1, 1.0, 0.0)
    many_items = _two_level(rng, 3, 400, 0.1, 1.0, 0.0)
    many_seeds = _two_level(rng, 12, 20, 0.1, 1.0, 0.0)

    def mde(d):
        r = _seeds_then_items(d, 0)
        return S.min_detectable_effect(r.se, r.df)

    assert mde(many_items) < mde(small) and mde(many_seeds) < mde(small)
    # seeds needed to bring the MDE down to a target: more for a smaller target, none for an unknown spread
    assert S.seeds_needed(0.05, 3, 0.3) == 3 < S.seeds_needed(0.05, 3, 0.1) < S.seeds_needed(0.05, 3, 0.05)
    k = S.seeds_needed(0.05, 3, 0.1)
    assert S.min_detectable_effect(0.05 * math.sqrt(3 / k), k - 1) <= 0.1
    assert S.seeds_needed(math.inf, 3, 0.1) is None and S.seeds_needed(10.0, 3, 1e-6, most=50) is None
