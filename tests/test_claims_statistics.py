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


# -- the declared primaries --------------------------------------------------------------------------------------

def test_every_profile_declares_the_same_six_primaries_with_a_reason():
    from lverse_core.config import load_profile
    from lverse_core.config.schema import ClaimPrimaries

    declared = ClaimPrimaries()
    for profile in ("ci", "smoke", "gpu", "paper"):
        assert load_profile(profile).claims.primaries == declared, profile
    assert [f for f in vars(declared)] == [f"claim_{n}" for n in range(1, 7)]
    assert all(p.margin > 0 and p.reason.strip() for p in vars(declared).values())


@pytest.mark.parametrize("override, message", [
    ({"claims.primaries.claim_2.margin": -0.01}, r"claims.primaries.claim_2.margin: -0.01 is out of range"),
    ({"claims.primaries.claim_2.margin": 0.0}, r"claims.primaries.claim_2.margin: 0.0 is out of range"),
    ({"claims.primaries.claim_7": {"measure": "psnr_db"}}, r"unknown key 'claims.primaries.claim_7'"),
    ({"claims.primaries.claim_1.measure": "psnr db"}, r"claims.primaries.claim_1.measure: 'psnr db'; give a measure"),
    ({"claims.primaries.claim_1.measure": "psnr_db_items"}, r"claims.primaries.claim_1.measure"),
    ({"claims.primaries.claim_4.reason": " "}, r"claims.primaries.claim_4.reason: empty"),
])
def test_bad_primaries_are_config_errors_naming_the_field(override, message):
    from lverse_core.config import ConfigError, load_profile

    with pytest.raises(ConfigError, match=message):
        load_profile("ci", **override)
    with pytest.raises(ConfigError, match=r"claims.primaries.claim_3.measure: ''"):
        load_profile("paper", **{"claims.primaries.claim_3.margin": 0.1})  # a partial declaration is refused


# -- the scorecard on hand-made measures ---------------------------------------------------------------------------

ROWS = [
    ("1a cross-level", "PSNR (dB)", ("sl", "psnr_db"), ("sl_per_level", "psnr_db"), "higher"),
    ("2 segment", "captions right", ("bidirectional", "captions_right"), ("no_segment", "captions_right"), "higher"),
    ("3 bidirectional", "captions right", ("bidirectional", "captions_right"), ("i2t_only", "captions_right"),
     "higher"),
    ("4 truncation", "BLEU-4", ("bidirectional", "bleu4_truncated"), ("bidirectional", "bleu4_untruncated"),
     "higher"),
    ("5 reranking", "images judged right", ("bidirectional", "images_right"), ("bidirectional", "images_right_single"),
     "higher"),
    ("6 blur", "KID fall", ("bidirectional", "kid_fall_generated"), ("bidirectional", "kid_fall_ceiling"), "higher"),
]


def _items(out, key, values):
    out[key], out[f"{key}_items"] = float(np.mean(values)), [float(v) for v in values]


def _hand_made(seeds=3, items=40):
    rng = np.random.default_rng(5)
    measures = {}
    for s in range(seeds):
        arms = {a: {} for a in ("sl", "sl_per_level", "bidirectional", "no_segment", "i2t_only", "t2i_only")}
        base = 20 + rng.normal(0, 1, items)
        _items(arms["sl"], "psnr_db", base + 1.0 + rng.normal(0, 0.05, items))  # +1 dB on every image: supported
        _items(arms["sl_per_level"], "psnr_db", base)
        nll = 2 + rng.normal(0, 0.3, items)
        for arm, shift in (("bidirectional", 0.0), ("no_segment", 0.0), ("i2t_only", 0.5), ("t2i_only", 0.5)):
            _items(arms[arm], "nll_i2t", nll + shift + rng.normal(0, 0.001, items))
            _items(arms[arm], "nll_t2i", nll + shift + rng.normal(0, 0.001, items))
        right = (rng.random(items) < 0.5).astype(float)
        for arm in ("bidirectional", "no_segment", "i2t_only"):
            _items(arms[arm], "captions_right", right)
        _items(arms["bidirectional"], "images_right", right)
        _items(arms["bidirectional"], "images_right_single", right)
        arms["bidirectional"].update({"bleu4_truncated": 10.0 + s, "bleu4_untruncated": 9.0 + s,
                                      "kid_fall_generated": 0.5 + 0.1 * s, "kid_fall_ceiling": 0.4})
        measures[s] = arms
    measures[1]["bidirectional"].update({"bleu4_truncated": math.nan, "bleu4_truncated_why": "no caption decoded"})
    return measures


def _card(measures=None, rows=ROWS, **over):
    from lverse_core.config import load_profile
    from lverse_core.evaluation.scorecard import scorecard

    return scorecard(_hand_made() if measures is None else measures, load_profile("ci", **over).claims, rows,
                     resamples=500)


def _row(card, claim, control):
    hit = card[(card["claim"].str[0] == claim) & (card["control arm"] == control)]
    assert len(hit) == 1, hit
    return hit.iloc[0]


def test_the_scorecard_decides_each_primary_and_labels_every_other_row_secondary():
    from lverse_core.evaluation.claims import CONTRADICTED, INCONCLUSIVE, NO_DIFFERENCE, NOT_MEASURED, SUPPORTED
    from lverse_core.evaluation.scorecard import ONE_DIRECTION, PRIMARY, SECONDARY, shortfall

    card = _card()
    assert list(card.columns[:5]) == ["claim", "measure", "role", "method arm", "control arm"]
    for col in ("difference", "low", "high", "margin", "MDE", "p", "verdict", "seeds", "items"):
        assert col in card.columns
    primaries = card[card["role"] == PRIMARY]
    assert sorted(primaries["claim"].str[0]) == list("123456")
    assert set(card["role"]) == {PRIMARY, SECONDARY} and len(card) == len(ROWS) + 2  # + the NLL rows of 2 and 3
    psnr = _row(card, "1", "sl_per_level: psnr_db")
    assert psnr["role"] == PRIMARY and psnr["verdict"] == SUPPORTED and psnr["items"] == 120
    assert psnr["low"] > 0.9 and psnr["margin"] == 0.3 and psnr["level"] > 0.95  # widened to its Holm step
    assert _row(card, "2", "no_segment: nll_both").pipe(lambda r: (r["measure"], r["verdict"])) == (
        "held-out NLL, both directions (nats per token)", NO_DIFFERENCE)
    three = _row(card, "3", f"{ONE_DIRECTION}: nll_both")
    assert three["role"] == PRIMARY and three["verdict"] == SUPPORTED and three["difference"] == pytest.approx(-1.0,
                                                                                                           abs=0.01)
    bleu = _row(card, "4", "bidirectional: bleu4_untruncated")
    assert bleu["verdict"] == f"{NOT_MEASURED}: bidirectional: bleu4_truncated is nan on seed 1 (no caption decoded)"
    kid = _row(card, "6", "bidirectional: kid_fall_ceiling")
    assert kid["items"] == 0 and kid["verdict"] in (SUPPORTED, INCONCLUSIVE) and kid["high"] > kid["low"]
    # a secondary row: no margin, the profile's level, never "no difference"
    captions = _row(card, "2", "no_segment: captions_right")
    secondary = card[(card["role"] == SECONDARY)]
    assert (secondary["level"] == 0.95).all() and secondary["margin"].isna().all()
    assert NO_DIFFERENCE not in set(secondary["verdict"]) and CONTRADICTED not in set(card["verdict"])
    assert captions["role"] == SECONDARY and captions["verdict"] == INCONCLUSIVE  # identical items
    # every measured row has a finite, positive minimum detectable effect; the primaries the seeds they would need
    measured = card[~card["verdict"].str.startswith(NOT_MEASURED)]
    assert ((measured["MDE"] > 0) & np.isfinite(measured["MDE"])).all()
    assert np.isfinite(primaries.loc[~primaries["verdict"].str.startswith(NOT_MEASURED), "seeds needed"]).all()
    assert any("claim 4" in s and NOT_MEASURED in s for s in shortfall(card))


def test_primary_p_values_are_holm_adjusted_and_agree_with_the_verdicts():
    from lverse_core.evaluation.claims import NOT_MEASURED
    from lverse_core.evaluation.scorecard import PRIMARY

    card = _card()
    plain = _card(**{"claims.level": 0.95})  # the same card: deterministic
    assert card.equals(plain)
    prim = card[(card["role"] == PRIMARY) & ~card["verdict"].str.startswith(NOT_MEASURED)]
    m = len(prim)
    # Holm's step levels over the six declared primaries, 1 - alpha / 6 for the smallest p; claim 4's primary is not
    # measured (NaN on seed 1) and counts as a p of 1, the largest, so the measured ones take the first m steps
    assert m == 5 and sorted(prim["level"]) == pytest.approx(sorted(1 - 0.05 / k for k in range(6 - m + 1, 7)))
    for _, r in prim.iterrows():
        decided = r["verdict"] in ("supported", "contradicted")
        assert decided == (r["p"] <= 0.05 and not r["low"] <= 0 <= r["high"])


def test_a_run_of_some_claims_is_corrected_over_all_six_primaries():
    from lverse_core.evaluation.claims import INCONCLUSIVE, SUPPORTED
    from lverse_core.evaluation.scorecard import PRIMARY

    def primary(card, claim):
        hit = card[(card["role"] == PRIMARY) & (card["claim"].str[0] == claim)]
        return hit.iloc[0]

    # claims 5 and 6 alone (claims.only): Holm's first two steps of six, as if the four claims not run had p = 1
    alone = _card(rows=[r for r in ROWS if r[0][0] in "56"])
    assert sorted(primary(alone, c)["level"] for c in "56") == pytest.approx([1 - 0.05 / 5, 1 - 0.05 / 6])
    one = primary(_card(rows=[r for r in ROWS if r[0][0] == "6"]), "6")  # one claim alone: tested at alpha / 6
    assert one["level"] == pytest.approx(1 - 0.05 / 6)

    # a primary that Holm over the three measured would reject but Holm over six does not (raw p 0.012: 3 x 0.012
    # <= 0.05 < 6 x 0.012): inconclusive, and its interval is at 1 - alpha / 6
    from lverse_core.evaluation import scorecard as sc

    class D:  # a paired difference stand-in: fixed p, an interval that clears zero at any level
        p, se, df, seeds, estimate = 0.012, 0.1, 2, 3, 1.0

        def at_level(self, level):
            return type("W", (), {"low": 0.5, "high": 1.5, "level": level})()

    out = [{"margin": 0.05, "note": ""} for _ in range(3)]
    sc._holm(out, {0: (D(), 0.0, "higher"), 1: (D(), 0.0, "higher"), 2: (D(), 0.0, "higher")}, {0: 4, 1: 5, 2: 6},
             0.05, family=3)
    assert {r["verdict"] for r in out} == {SUPPORTED}  # the old family: the three measured
    out = [{"margin": 0.05, "note": ""} for _ in range(3)]
    sc._holm(out, {0: (D(), 0.0, "higher"), 1: (D(), 0.0, "higher"), 2: (D(), 0.0, "higher")}, {0: 4, 1: 5, 2: 6},
             0.05, family=6)
    assert [r["p"] for r in out] == pytest.approx([0.072] * 3)
    assert {r["verdict"] for r in out} == {INCONCLUSIVE} and max(r["level"] for r in out) == pytest.approx(1 - 0.05 / 6)


def test_a_missing_arm_or_measure_leaves_one_row_not_measured():
    from lverse_core.evaluation.claims import NOT_MEASURED

    measures = _hand_made()
    del measures[2]["no_segment"]
    del measures[0]["sl"]["psnr_db"]
    card = _card(measures)
    assert _row(card, "1", "sl_per_level: psnr_db")["verdict"] == f"{NOT_MEASURED}: no sl: psnr_db on seed 0"
    assert _row(card, "2", "no_segment: nll_both")["verdict"].startswith(f"{NOT_MEASURED}: no arm no_segment on seed 2")
    assert not _row(card, "3", "one_direction: nll_both")["verdict"].startswith(NOT_MEASURED)  # the others still decide


def test_todays_measures_without_items_or_nll_still_make_a_scorecard():
    from lverse_core.evaluation.claims import NOT_MEASURED

    measures = _hand_made()
    for by_arm in measures.values():
        for m in by_arm.values():
            for k in [k for k in m if k.endswith("_items") or k.startswith("nll_")]:
                del m[k]
    card = _card(measures)
    assert set(card["items"]) == {0}
    assert _row(card, "2", "no_segment: nll_both")["verdict"] == (
        f"{NOT_MEASURED}: no bidirectional: nll_both (made from nll_i2t and nll_t2i) on seed 0")
    assert _row(card, "1", "sl_per_level: psnr_db")["verdict"] == "supported"


def test_a_declared_primary_with_no_row_stops_the_scorecard_by_name():
    from lverse_core.config import ConfigError

    with pytest.raises(ConfigError, match=r"claims.primaries.claim_5: bidirectional: images_right vs t2i_only "
                                          r"matches 0 rows of claim 5"):
        _card(**{"claims.primaries.claim_5.control": "t2i_only"})
    # a claim that is not run (no rows of it) needs no row
    card = _card(rows=[r for r in ROWS if not r[0].startswith("5")], **{"claims.primaries.claim_5.control": "t2i_only"})
    assert "5" not in set(card["claim"].str[0])


def test_broken_values_make_their_row_not_measured_not_an_exception():
    from lverse_core.evaluation.claims import NOT_MEASURED

    measures = _hand_made()
    measures[0]["sl"]["psnr_db_items"] = []
    measures[2]["bidirectional"]["kid_fall_generated"] = "n/a"
    card = _card(measures)
    assert _row(card, "1", "sl_per_level: psnr_db")["verdict"] == (
        f"{NOT_MEASURED}: sl: psnr_db_items is empty or holds a non-finite value")
    assert _row(card, "6", "bidirectional: kid_fall_ceiling")["verdict"].startswith(
        f"{NOT_MEASURED}: bidirectional: kid_fall_generated is not a number on seed 2")
    assert _row(card, "3", "one_direction: nll_both")["verdict"] == "supported"


def test_a_measure_that_is_not_its_items_mean_is_compared_on_the_items_and_says_so():
    measures = _hand_made()
    for s, by_arm in measures.items():  # corpus BLEU-4 beside per-caption scores of another mean
        b = by_arm["bidirectional"]
        b["bleu4_truncated"], b["bleu4_truncated_items"] = 10.0, [12.0, 14.0, 16.0]
        b["bleu4_untruncated"], b["bleu4_untruncated_items"] = 9.0, [10.0, 11.0, 12.0]
    row = _row(_card(measures), "4", "bidirectional: bleu4_untruncated")
    assert row["items"] == 9 and row["method"] == pytest.approx(14.0) and row["difference"] == pytest.approx(3.0)
    assert "bleu4_truncated is not the mean of its items on seed 0" in row["note"]


def test_a_nan_read_back_from_a_seeds_saved_measures_keeps_its_why():
    """Measures read from a results file (``results/07_claims.json`` is strict JSON, where NaN is null) score as the
    run's own did: an undefined measure is not measured, with the reason it was saved with."""
    import json

    from lverse_core.evaluation.claims import NOT_MEASURED

    why = "KID at radius 0 is -0.000823 (not positive: the sets cannot be told apart at this sample size)"
    measures = _hand_made()
    measures[2]["bidirectional"].update({"kid_fall_generated": math.nan, "kid_fall_generated_why": why})
    fresh = _row(_card(measures), "6", "bidirectional: kid_fall_ceiling")["verdict"]
    measures[2]["bidirectional"] = json.loads(json.dumps(report_clean(measures[2]["bidirectional"])))
    assert measures[2]["bidirectional"]["kid_fall_generated"] is None  # as the results file gives it
    cached = _row(_card(measures), "6", "bidirectional: kid_fall_ceiling")["verdict"]
    assert cached == fresh == f"{NOT_MEASURED}: bidirectional: kid_fall_generated is nan on seed 2 ({why})"


def report_clean(obj):
    """What the kit writes to a results or measures file for ``obj`` (NaN and infinities as null)."""
    from lverse_core.report import _clean

    return _clean(obj)
