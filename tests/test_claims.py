import math

import pytest

from lverse_core.evaluation.claims import (CONTRADICTED, INCONCLUSIVE, SUPPORTED, compare, verdict)


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


def test_compare_is_paired_over_seeds_and_does_not_flip_on_one_seed():
    # seeds differ a lot from each other, but the method beats the control by ~1 on every seed: supported
    method, control = [10.0, 20.0, 30.1], [9.0, 19.1, 29.0]
    r = compare(method, control, "higher")
    assert r["verdict"] == SUPPORTED and r["difference"].estimate == pytest.approx(1.0, abs=0.05)
    assert r["difference"].method == "student-t" and r["difference"].n == 3
    assert r["method"].low < r["control"].estimate  # unpaired intervals would overlap: pairing matters
    assert compare(control, method, "higher")["verdict"] == CONTRADICTED
    assert compare([1.0, 2.0, 3.0], [2.0, 1.0, 3.1], "higher")["verdict"] == INCONCLUSIVE
    assert compare([1.0], [0.0])["verdict"] == INCONCLUSIVE  # a single seed never decides
    # float noise on a measure that is zero for both (BLEU-4 with no 4-gram match) decides nothing
    assert compare([1e-12, 1.2e-11], [5.3e-8, 5.6e-8])["verdict"] == INCONCLUSIVE
    assert verdict(1e-9, 2e-9, "higher", tol=1e-6) == INCONCLUSIVE and verdict(1e-9, 2e-9, "higher") == SUPPORTED
    with pytest.raises(ValueError, match="paired"):
        compare([1.0, 2.0], [1.0])
