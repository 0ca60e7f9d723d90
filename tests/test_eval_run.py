"""Helpers of notebooks 04/05 (lverse_core/eval_run.py)."""
from __future__ import annotations

import pytest
import torch

import synthetic_scenes as syn
from lverse_core.data.pixels import signed_from_uint8
from lverse_core.evaluation import verdicts as V
from lverse_core.evaluation.statistics import bootstrap_interval
from lverse_core.pipeline import eval_run as E


def test_caption_variants_are_the_papers_two_rows():
    recs = [{"image_id": 4, "caption": "a red circle.", "caption_untruncated": "a red circle. and more"}]
    v = E.caption_variants(recs)
    assert v == {E.TRUNCATED: {4: "a red circle."}, E.UNTRUNCATED: {4: "a red circle. and more"}}


@pytest.mark.parametrize("ours, base, met, ratio", [(0.5, 0.1, True, 5.0), (0.49, 0.1, False, 4.9),
                                                     (0.3, 0.0, True, None), (0.0, 0.0, False, None)])
def test_acceptance(ours, base, met, ratio):
    a = E.acceptance(ours, base, 5, "captions")
    assert a["met"] is met and (a["ratio"] == pytest.approx(ratio) if ratio else a["ratio"] is None)
    assert ("NOT met" in a["verdict"]) is (not met)
    assert E.acceptance(None, 0.1, 5, "captions")["met"] is None


def test_acceptance_flags_weak_evidence_and_shows_counts():
    a = E.acceptance(3 / 200, 0.0, 2, "images", n=200)
    assert a["met"] and a["weak_evidence"] and "3/200 vs 0/200" in a["verdict"] and "weak" in a["verdict"]
    b = E.acceptance(60 / 200, 10 / 200, 2, "images", n=200)
    assert b["met"] and not b["weak_evidence"] and "weak" not in b["verdict"]


def test_derangement_moves_every_index_and_is_seeded():
    for n in (2, 3, 17, 200):
        d = V.derangement(n, seed=3)
        assert sorted(d.tolist()) == list(range(n)) and (d != torch.arange(n)).all()
    assert torch.equal(V.derangement(50, 1), V.derangement(50, 1))
    assert not torch.equal(V.derangement(50, 1), V.derangement(50, 2))
    with pytest.raises(ValueError):
        V.derangement(1, 0)


def _bounds(judge, fake, real, prompts, seed, floor_rounds=V.FLOOR_ROUNDS):
    """``judge_bounds`` of whole tensors: the verdicts the streamed Table 3 makes batch by batch, made at once."""
    from lverse_core.evaluation.judge import image_matches, to_unit_range
    from lverse_core.evaluation.verdicts import judged_correct

    seen = judge.judge_image(to_unit_range(fake))
    pairs = V.floor_pairings(len(prompts), seed, floor_rounds)
    hits = torch.tensor([[image_matches(seen[i], prompts[int(p[i])]) for i in range(len(prompts))] for p in pairs],
                        dtype=torch.bool).view(floor_rounds, len(prompts))
    return V.judge_bounds(judged_correct(judge, fake, prompts), judged_correct(judge, real, prompts), hits, seed)


def test_judge_bounds_order_ceiling_above_floor(trained_judge, synth_data, synth_cfg):
    judge, _, _ = trained_judge
    _, _, xt, ot = synth_data
    prompts = [syn.caption(o) for o in ot]
    # real test scenes stand in for "generated" images: ours equals the ceiling, the shuffled floor is far lower
    b = _bounds(judge, xt, xt, prompts, seed=0)
    ours, ceiling = b["generated images"], b["real images (judge ceiling)"]
    floor = b["images generated from shuffled captions (floor)"]
    assert ours["judged_correct"] == ceiling["judged_correct"] > 0.5
    assert floor["judged_correct"] < 0.5 * ceiling["judged_correct"]
    t = E.judge_table(synth_cfg, b)
    assert list(t["images"]) == list(b) and t["judged right for the caption (%)"].iloc[0] == pytest.approx(
        100 * ours["judged_correct"])


def test_decode_to_uint8_round_trip():
    imgs = torch.rand(10, 3, 8, 8) * 2 - 1
    out = E.decode_to_uint8(lambda c: imgs[c[:, 0, 0]], torch.arange(10).view(10, 1, 1).expand(10, 2, 2), 3)
    assert out.dtype == torch.uint8 and out.shape == (10, 3, 8, 8)
    assert torch.allclose(signed_from_uint8(out), imgs, atol=1 / 127.5)


def test_figures_render(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from lverse_core.report import reference_table

    fig = E.caption_figure(torch.zeros(2, 3, 8, 8), ["ref a.", "ref b."], ["ours a.", "ours b."], ["x", "y"])
    assert len(fig.axes) == 4
    fig = E.fid_curve_figure(reference_table("table3_t2i_fid_coco_val_30k"), {"FID-0": 3.0, "FID-2": 1.0}, "kit")
    assert len(fig.axes) == 2 and "kit" in fig.axes[1].get_title()
    rows = E.grid_rows(torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 3, 8, 8))
    assert len(rows) == 2 and rows[0].shape == (4, 3, 8, 8)



def test_floor_pools_several_derangements_and_intervals_bracket_the_estimate(trained_judge, synth_data):
    judge, _, _ = trained_judge
    _, _, xt, ot = synth_data
    prompts = [syn.caption(o) for o in ot]
    one = _bounds(judge, xt, xt, prompts, seed=0, floor_rounds=1)
    many = _bounds(judge, xt, xt, prompts, seed=0, floor_rounds=10)
    f1 = one["images generated from shuffled captions (floor)"]
    f10 = many["images generated from shuffled captions (floor)"]
    assert f1["n_pairs"] == len(prompts) and f10["n_pairs"] == 10 * len(prompts)
    assert f10["matches"] >= f1["matches"] and f10["judged_correct"] == pytest.approx(f10["matches"] / f10["n_pairs"])
    for entry in many.values():
        lo, hi = entry["ci95"]
        assert 0 <= lo <= entry["judged_correct"] <= hi <= 1


def test_bootstrap_interval_shrinks_with_more_images():
    small = bootstrap_interval([1, 0] * 10, 500, 0).bounds
    large = bootstrap_interval([1, 0] * 1000, 500, 0).bounds
    assert small[0] < 0.5 < small[1] and large[0] < 0.5 < large[1]
    assert (large[1] - large[0]) < 0.3 * (small[1] - small[0])
    assert bootstrap_interval([1, 1, 1], 100, 0).bounds == (1.0, 1.0)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_interval([], 10, 0).bounds


def test_truncation_reading_compares_directions_with_the_papers_rows():
    import pandas as pd

    from lverse_core.pipeline.eval_run import TRUNCATED, UNTRUNCATED, truncation_reading

    paper = pd.DataFrame([
        {"model": "L-Verse", "BLEU-4": 39.9, "METEOR": 31.4, "ROUGE-L": 60.4, "CIDEr": 102.2, "SPICE": 23.3},
        {"model": "L-Verse (untruncated)", "BLEU-4": 27.6, "METEOR": 23.6, "ROUGE-L": 43.9, "CIDEr": 181.6,
         "SPICE": 28.9}])
    scores = {TRUNCATED: {"BLEU-4": 0.45, "METEOR": 0.30, "ROUGE-L": 0.60, "CIDEr": 2.6, "SPICE": None},
              UNTRUNCATED: {"BLEU-4": 0.33, "METEOR": 0.35, "ROUGE-L": 0.50, "CIDEr": 1.4, "SPICE": None}}
    r = truncation_reading(scores, paper)
    assert r["agree"] == ["BLEU-4", "ROUGE-L"] and r["differ"] == ["METEOR", "CIDEr"] and r["skipped"] == ["SPICE"]
    assert r["sentence"] == ("truncation moves BLEU-4, ROUGE-L the way it does in the paper; METEOR, CIDEr move the "
                             "other way; not compared: SPICE (missing on one side).")
    assert r["rows"][0]["ours truncated"] == 45.0 and r["rows"][0]["paper untruncated"] == 27.6


def test_fid_ceiling_reading_separates_biart_error_from_the_decoder():
    from lverse_core.pipeline.eval_run import fid_ceiling_reading

    fine = fid_ceiling_reading({"FID-0": 10.0, "FID-8": 4.0}, {"FID-0": 5.0, "FID-8": 3.0})
    assert [r["excess over the ceiling"] for r in fine["rows"]] == [5.0, 1.0]
    assert fine["where"] == "fine" and "10 -> 4 (-60%)" in fine["sentence"] and "5 -> 1 (-80%)" in fine["sentence"]
    coarse = fid_ceiling_reading({"FID-0": 10.0, "FID-8": 8.0}, {"FID-0": 5.0, "FID-8": 3.0})
    assert coarse["where"] == "coarse"  # both curves fall, yet the excess stays
    none = fid_ceiling_reading({"FID-0": -1e-12}, {"FID-0": 0.0})
    assert none["where"] == "none" and none["rows"][0]["generated"] == 0.0
    tiny = fid_ceiling_reading({"FID-0": 7.35, "FID-8": 0.563}, {"FID-0": 7.34, "FID-8": 0.565})
    assert tiny["where"] == "none"  # both curves fall alike: nothing is BiART's
    assert len({fine["sentence"], coarse["sentence"], tiny["sentence"]}) == 3


def test_the_shared_image_grid_draws_every_image_under_its_column_header():
    from lverse_core.pipeline.figures import image_grid_figure

    rows = E.grid_rows(torch.full((2, 3, 8, 8), -1.0), torch.ones(2, 2, 3, 8, 8))  # real black, generated white
    fig = image_grid_figure(rows, ["a red circle", "a blue square"], 3)
    header, grid = fig.axes[:3], fig.axes[3:]
    assert [t.get_text() for ax in header for t in ax.texts] == ["real image", "generated #1\n(reranked)",
                                                                 "generated #2\n(reranked)"]
    shown = [ax.images[0].get_array() for ax in grid]
    assert len(shown) == 6 and [float(a.mean()) for a in shown] == [0.0, 1.0, 1.0] * 2
