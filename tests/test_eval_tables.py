"""Table 2 / Table 3 builders: paper rows labelled as the paper's, ours with provenance, judge verdicts."""
from __future__ import annotations

import math

import pytest

from lverse_core.evaluation.verdicts import judged_correct
from lverse_core.pipeline import eval_tables as T
from lverse_core.evaluation.metrics import read_caption_results, read_coco_references


def test_table2_rows_and_scales(synth_cfg):
    scores = {"BiART (ours)": {"BLEU-4": 0.5, "METEOR": 0.3, "ROUGE-L": 0.6, "CIDEr": 1.2, "SPICE": None,
                               "SPICE_reason": "not computed: no CoreNLP", "n_images": 32,
                               "attribute_accuracy": 0.25}}
    df = T.table2(synth_cfg, scores, {"BiART (ours)": "truncated at the first full stop"})
    paper = df[df["source"].str.startswith("L-Verse paper")]
    assert "L-Verse" in set(paper["model"]) and len(paper) >= 10
    ours = df.iloc[-1]
    assert ours["BLEU-4"] == pytest.approx(50) and ours["CIDEr"] == pytest.approx(120)
    assert math.isnan(ours["SPICE"]) and "not computed" in ours["note"]
    assert ours["captions naming the right objects (%)"] == pytest.approx(25)
    assert ours["source"].startswith("this run: profile ci") and "32 images" in ours["source"]


def test_caption_files(synth_cfg):
    refs = {1: ["a b.", "c d."], 2: ["e f."]}
    paths = T.save_caption_files(synth_cfg, {"L-Verse (truncated)": {1: "a b.", 2: "x."}}, refs)
    assert paths["L-Verse (truncated)"].name == "captions_l_verse_truncated_test.json"
    assert read_caption_results(paths["L-Verse (truncated)"]) == {1: "a b.", 2: "x."}
    assert read_coco_references(paths["references"]) == refs


@pytest.fixture(scope="module")
def ci_test_set(synth_cfg):
    from lverse_core.evaluation.judge import load_split, ensure_judge, judge_path

    ensure_judge(synth_cfg)
    images, objects, captions = load_split(synth_cfg, "test")
    return images, captions, judge_path(synth_cfg)


def test_streamed_table3_rows_and_table(synth_cfg, ci_test_set):
    from lverse_core.evaluation.judge import load_judge_file
    from lverse_core.pipeline.t2i_eval import RANDOM_REAL, RECONSTRUCTED, Table3Sets, evaluate_text_to_image

    images, captions, jpath = ci_test_set
    judge = load_judge_file(jpath)
    shuffled = images.roll(1, dims=0)
    sets = Table3Sets(generated=lambda idx: images[idx], real=lambda idx: images[idx],
                      reconstructed=lambda idx: shuffled[idx], captions=captions, real_captions=captions,
                      n_real=len(images), real_per_prompt=lambda idx: images[idx])
    rows = evaluate_text_to_image(synth_cfg, sets, judge=judge, radii=[0, 2], cuda=False, judge_path=jpath)["rows"]
    real, fake = rows[T.ours_label(synth_cfg)], rows[RECONSTRUCTED]
    assert real["fid"]["FID-0"] == pytest.approx(0, abs=1e-3) and real["fid"]["FID-2"] == pytest.approx(0, abs=1e-3)
    # Real images against their own captions: the judge's ceiling; a wrong image for each caption scores lower.
    assert fake["judged_correct"] < real["judged_correct"]
    assert rows[RANDOM_REAL]["judged_correct"] < real["judged_correct"]
    assert real["judged_correct"] == pytest.approx(judged_correct(judge, images, captions)["judged_correct"])
    assert any(k.startswith("judged_correct_") and k.endswith("_objects") for k in real)
    df = T.table3(synth_cfg, {"real test images": real, "shuffled real images": fake})
    assert df["model"].tolist() == ["real test images", "shuffled real images"]
    assert df["source"].str.startswith("this run").all()
    assert df.iloc[-1]["FID-0"] == pytest.approx(max(fake["fid"]["FID-0"], 0.0)) and (df[["FID-0", "FID-2"]] >= 0).all().all()
    paper = T.table3_paper()
    assert len(paper) == 7 and paper["source"].str.startswith("L-Verse paper Table 3").all()
    assert not set(paper.columns) & {"images judged right for the caption (%)"}
    with pytest.raises(ValueError, match="prompts"):
        judged_correct(judge, images[:3], captions)
