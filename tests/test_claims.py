import math

import pytest

from lverse_core.evaluation.claims import (CONTRADICTED, INCONCLUSIVE, NO_DIFFERENCE, SUPPORTED, VERDICTS, compare,
                                           verdict)


def test_verdict_on_hand_made_intervals():
    assert verdict(0.5, 2.0, "higher") == SUPPORTED
    assert verdict(-2.0, -0.5, "higher") == CONTRADICTED
    assert verdict(-0.5, 2.0, "higher") == INCONCLUSIVE
    assert verdict(-2.0, -0.5, "lower") == SUPPORTED  # e.g. FID: the method lower than the control
    assert verdict(0.5, 2.0, "lower") == CONTRADICTED
    assert verdict(0.0, 1.0, "higher") == INCONCLUSIVE  # touching zero is not enough
    assert verdict(-math.inf, math.inf, "higher") == INCONCLUSIVE
    with pytest.raises(ValueError, match="better"):
        verdict(0.1, 0.2, "bigger")
    with pytest.raises(ValueError, match="empty"):
        verdict(1.0, 0.0)


def test_the_four_verdicts_with_a_margin():
    assert verdict(0.2, 0.9, "higher", margin=0.5) == SUPPORTED  # clear of zero on the paper's side
    assert verdict(-0.9, -0.2, "higher", margin=0.5) == CONTRADICTED
    assert verdict(-0.3, 0.4, "higher", margin=0.5) == NO_DIFFERENCE  # inside [-0.5, 0.5]
    assert verdict(-0.3, 0.4, "lower", margin=0.5) == NO_DIFFERENCE
    assert verdict(-0.3, 0.6, "higher", margin=0.5) == INCONCLUSIVE  # across zero and past the margin
    assert verdict(-0.3, 0.4, "higher") == INCONCLUSIVE  # no declared margin (a secondary row): never equivalence
    assert verdict(0.1, 0.2, "higher", margin=0.5) == SUPPORTED  # small but clear of zero: which side is known
    assert set(VERDICTS) == {SUPPORTED, CONTRADICTED, NO_DIFFERENCE, INCONCLUSIVE}
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="margin"):
            verdict(-0.1, 0.1, margin=bad)


def test_compare_is_paired_over_seeds_and_does_not_flip_on_one_seed():
    # seeds differ a lot from each other, but the method beats the control by ~1 on every seed: supported
    method, control = [10.0, 20.0, 30.1], [9.0, 19.1, 29.0]
    r = compare(method, control, "higher")
    assert r["verdict"] == SUPPORTED and r["difference"].estimate == pytest.approx(1.0, abs=0.05)
    assert r["difference"].seeds == 3 and r["difference"].items == 0
    assert r["method"] == pytest.approx(20.0333, abs=1e-3) and r["control"] == pytest.approx(19.0333, abs=1e-3)
    assert compare(control, method, "higher")["verdict"] == CONTRADICTED
    assert compare([1.0, 2.0, 3.0], [2.0, 1.0, 3.1], "higher")["verdict"] == INCONCLUSIVE
    assert compare([1.0], [0.0])["verdict"] == INCONCLUSIVE  # a single seed never decides
    # float noise on a measure that is zero for both (BLEU-4 with no 4-gram match) decides nothing
    assert compare([1e-12, 1.2e-11], [5.3e-8, 5.6e-8])["verdict"] == INCONCLUSIVE
    assert verdict(1e-9, 2e-9, "higher", tol=1e-6) == INCONCLUSIVE and verdict(1e-9, 2e-9, "higher") == SUPPORTED
    with pytest.raises(ValueError, match="paired"):
        compare([1.0, 2.0], [1.0])


def test_equal_differences_on_every_seed_no_longer_decide():
    # one more right image in 100 on each of three seeds: the old Student-t said "supported" with [0.01, 0.01]
    r = compare([0.01] * 3, [0.0] * 3)
    assert r["verdict"] == INCONCLUSIVE and r["difference"].high > r["difference"].low
    # the same with the images as items: the interval is one image's step wide, not zero
    items = compare([[1.0] * 31 + [0.0] * 69] * 3, [[1.0] * 30 + [0.0] * 70] * 3, margin=0.2)
    d = items["difference"]
    assert d.items == 300 and d.low < 0.01 < d.high and items["verdict"] == NO_DIFFERENCE
    assert compare([[1.0] * 31 + [0.0] * 69] * 3, [[1.0] * 30 + [0.0] * 70] * 3)["verdict"] == INCONCLUSIVE
