"""Notebook 02's glue: held-out NLL per direction and part, and the conditioning gap read from it."""
import pandas as pd
import pytest
import torch

from lverse_core.models.biart import I2T, T2I, BiART, BiARTArgs
from lverse_core.evaluation.likelihood import heldout_nll
from lverse_core.pipeline.biart_run import conditioning_gap
from lverse_core.training.biart_train import synthetic_pairs


def _table(img_ref, img_gen, txt_ref, txt_gen):
    return pd.DataFrame([
        {"direction": "text->image", "part": "[REF]", "modality": "text", "nll": txt_ref},
        {"direction": "text->image", "part": "[GEN]", "modality": "image", "nll": img_gen},
        {"direction": "image->text", "part": "[REF]", "modality": "image", "nll": img_ref},
        {"direction": "image->text", "part": "[GEN]", "modality": "text", "nll": txt_gen}])


def test_conditioning_gap_reads_the_numbers():
    g = conditioning_gap(_table(3.0, 2.0, 1.5, 0.5))
    assert g["image"]["gap_nats"] == pytest.approx(1.0) and g["text"]["gap_fraction"] == pytest.approx(2 / 3)
    assert (g["image"]["verdict"], g["text"]["verdict"]) == ("used", "used")
    for number in ("2.000", "3.000", "+1.000", "0.500", "1.500"):  # the sentence carries the numbers it reads
        assert number in g["sentence"], number
    flat = conditioning_gap(_table(3.370, 3.401, 1.0, 0.99))
    assert flat["image"]["gap_nats"] < 0 and (flat["image"]["verdict"], flat["text"]["verdict"]) == ("none", "barely")
    assert "-0.031" in flat["sentence"] and "+0.010" in flat["sentence"]


def test_gap_verdict_thresholds():
    from lverse_core.pipeline.biart_run import gap_verdict

    assert gap_verdict(0.51, 10.0) == "used" and gap_verdict(0.5, 10.0) == "barely"
    assert gap_verdict(1e-9, 10.0) == "barely" and gap_verdict(0.0, 10.0) == "none" and gap_verdict(-1, 10) == "none"


def _tiny_model_and_pairs():
    """A random 1-layer BiART and 5 images x 2 captions of synthetic pairs that fit it."""
    torch.manual_seed(0)
    args = BiARTArgs(n_layer=1, n_head=2, n_embd=16, text_len=6, image_tokens=4, text_vocab=20, image_vocab=8,
                     pad_id=-100, dropout=0.0)
    return BiART(args), synthetic_pairs(5, 2, 6, 20, 4, 8, seed=0)


def test_heldout_nll_matches_the_model_loss_on_one_batch():
    model, pairs = _tiny_model_and_pairs()
    table = heldout_nll(model, pairs, "cpu", batch_size=3)  # uneven batches: weighted means
    text, image = pairs.batch(list(range(len(pairs.text))), "cpu")
    with torch.no_grad():
        t2i, i2t = model(text, image, T2I), model(text, image, I2T)
    got = table.set_index(["direction", "part"])["nll"]
    assert got[("text->image", "[GEN]")] == pytest.approx(float(t2i["gen"]), rel=1e-5)
    assert got[("image->text", "[REF]")] == pytest.approx(float(i2t["ref"]), rel=1e-5)
    assert set(table["modality"]) == {"text", "image"} and len(table) == 4


def test_clip_score_fns_never_score_more_than_a_batch_at_once():
    import torch

    from lverse_core.pipeline.biart_run import clip_score_fns

    class Recorder:
        def __init__(self):
            self.sizes = []

        def score(self, images, texts):
            assert len(images) == len(texts)
            self.sizes.append(len(texts))
            return images.float().flatten(1).mean(1) + torch.tensor([float(len(t)) for t in texts])

    images = torch.randn(5, 3, 4, 4)
    owner = torch.arange(5).repeat_interleave(8)  # 5 images x 8 candidates
    texts = [f"caption {'x' * (i % 7)}" for i in range(40)]
    rec = Recorder()
    _, i2t = clip_score_fns(rec, None, 2, images, batch_size=16)
    got = i2t(owner, texts)
    assert max(rec.sizes) <= 16 and sum(rec.sizes) == 40
    want = images[owner].flatten(1).mean(1) + torch.tensor([float(len(t)) for t in texts])
    assert torch.allclose(got, want)
    decoded = []
    t2i, _ = clip_score_fns(rec, lambda c: decoded.append(len(c)) or torch.zeros(len(c), 3, 4, 4), 2,
                            batch_size=16)
    assert t2i(torch.zeros(40, 4, dtype=torch.long), texts).shape == (40,)
    assert max(decoded) <= 16


class _Tok:
    """Ids 0 pad, 1 eot, others words."""
    pad_id, eot_id = 0, 1

    def token_text(self, i):
        return {0: "<pad>", 1: "<eot>"}.get(int(i), f"w{int(i)}")


def test_layout_table_marks_segments_positions_and_loss_targets():
    from lverse_core.pipeline.biart_run import condense, layout_counts, layout_sentence, layout_table

    args = BiARTArgs(n_layer=1, n_head=2, n_embd=16, text_len=6, image_tokens=4, text_vocab=20, image_vocab=8,
                     pad_id=0, dropout=0.0)
    model = BiART(args)
    text = torch.tensor([5, 6, 7, 1, 0, 0])  # three words, eot, two pads
    codes = torch.tensor([3, 1, 4, 1])
    t2i = layout_table(model, _Tok(), T2I, text, codes)
    assert len(t2i) == 6 + 4 + 2
    assert t2i["token"].tolist()[:5] == ["[SOC]", "'w5'", "'w6'", "'w7'", "'<eot>'"] and t2i["token"][7] == "[SOI]"
    assert t2i["token"].tolist()[8:] == ["code 3", "code 1", "code 4", "code 1"]
    assert t2i["segment"].tolist() == ["[REF]"] * 7 + ["[GEN]"] * 5
    assert t2i["position id"].tolist() == list(range(7)) + list(range(5))  # restarts for the second part
    loss = t2i["trained to predict it"].tolist()
    assert loss[1:5] == ["yes, [REF] NLL"] * 4 and loss[5:7] == ["no ([PAD] targets are excluded)"] * 2
    assert loss[0].startswith("no") and loss[7].startswith("no") and loss[8:] == ["yes, [GEN] NLL"] * 4
    i2t = layout_table(model, _Tok(), I2T, text, codes)
    assert i2t["token"][0] == "[SOI]" and i2t["token"][5] == "[SOC]"
    assert (i2t["trained to predict it"][1:5] == "yes, [REF] NLL").all()
    assert (i2t["trained to predict it"][6:10] == "yes, [GEN] NLL").all()
    counts = layout_counts(t2i)
    assert {k: counts[k] for k in ("tokens", "ref", "gen", "pad")} == {"tokens": len(t2i), "ref": 4, "gen": 4, "pad": 2}
    assert counts["first"] == t2i.loc[1, "kind"]  # the part after [SOT]/[SOI] is the condition
    text = layout_sentence(t2i, T2I)
    assert all(f" {n} " in text for n in (counts["tokens"], counts["ref"], counts["gen"], counts["pad"]))
    short = condense(i2t, head=1, tail=1)
    assert len(short) < len(i2t) and short["token"].str.contains("more").any()
    assert short["token"].iloc[0] == "[SOI]" and short["token"].iloc[-1] == "'<pad>'"


def test_reranking_sentence_says_when_the_reranker_kept_a_wrong_one():
    from lverse_core.pipeline.biart_run import reranking_outcome, reranking_sentence

    assert reranking_outcome([1.0, 3.0, 2.0], [True, False, False]) == {
        "kept": 1, "low": 1.0, "high": 3.0, "n": 3, "n_right": 1, "kept_right": False}
    assert reranking_outcome([1.0, 3.0, 2.0], [False, True, False])["kept_right"] is True
    assert reranking_outcome([1.0, 3.0], None) == {"kept": 1, "low": 1.0, "high": 3.0, "n": 2}
    wrong = reranking_sentence([1.0, 3.0, 2.0], [True, False, False])
    right = reranking_sentence([1.0, 3.0, 2.0], [False, True, False])
    assert "1.0 to 3.0" in wrong and "candidate 1" in wrong and "1 of 3" in wrong
    assert wrong != right and len(wrong) > len(right)  # only a wrong pick gets the extra clause
    assert reranking_sentence([1.0, 3.0], None).endswith("was kept.")


def test_image_token_gaps_average_to_the_heldout_image_gap():
    from lverse_core.evaluation.likelihood import image_token_gaps

    model, pairs = _tiny_model_and_pairs()
    gaps = image_token_gaps(model, pairs, "cpu", batch_size=3)
    assert gaps.shape == (10, 4)
    gap = conditioning_gap(heldout_nll(model, pairs, "cpu"))["image"]["gap_nats"]
    assert float(gaps.mean()) == pytest.approx(gap, rel=1e-4, abs=1e-6)


def test_object_cells_mark_the_cells_a_box_touches():
    from lverse_core.evaluation.likelihood import object_cells

    # 64-px image, 8 x 8 grid of 8-px cells: a box from (10, 3) to (17.5, 12) touches columns 1-2, rows 0-1
    cells = object_cells([{"bbox": [10.0, 3.0, 17.5, 12.0]}], 64, 8).view(8, 8)
    assert cells.sum() == 4 and cells[0:2, 1:3].all()
    edge = object_cells([{"bbox": [56.0, 56.0, 64.0, 64.0]}], 64, 8).view(8, 8)  # box on the last cell exactly
    assert edge.sum() == 1 and edge[7, 7]
    assert object_cells([], 64, 8).sum() == 0


def test_gap_by_region_averages_captions_then_cells():
    from lverse_core.pipeline.biart_run import gap_by_region

    n_img, N = 40, 4
    cells = torch.zeros(n_img, N, dtype=torch.bool)
    cells[:, 0] = True  # one object cell per image
    owner = torch.arange(n_img).repeat_interleave(2)  # two captions per image
    gaps = torch.zeros(2 * n_img, N)
    gaps[:, 0] = 1.0 + 0.1 * torch.randn(2 * n_img)  # the caption helps the object cell only
    gaps[:, 1:] = 0.01 * torch.randn(2 * n_img, N - 1)
    r = gap_by_region(gaps, owner, n_img, cells)
    assert r["object"]["ci95"][0] > 0.9 and abs(r["background"]["mean"]) < 0.01
    assert r["object"]["n_images"] == n_img and r["object_cell_share"] == pytest.approx(0.25)
    assert r["per_image_total"]["mean"] == pytest.approx(float(gaps.sum(1).mean()), rel=1e-5)
    o, b = r["object"], r["background"]
    assert f"{o['mean']:.3f} [{o['ci95'][0]:.3f}, {o['ci95'][1]:.3f}]" in r["sentence"] and "25%" in r["sentence"]
    assert f"{b['mean']:.3f} [{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}]" in r["sentence"]
    from lverse_core.evaluation.statistics import t_interval

    per_image_obj = (gaps[0::2, 0] + gaps[1::2, 0]).double() / 2
    assert r["object"]["ci95"] == pytest.approx(list(t_interval(per_image_obj.tolist()).bounds))  # Student-t over images
    with pytest.raises(ValueError, match="do not line up"):
        gap_by_region(gaps[:, :3], owner, n_img, cells)
    with pytest.raises(ValueError, match="one gap row per"):
        gap_by_region(gaps[:5], owner, n_img)
    whole = gap_by_region(gaps, owner, n_img + 1)  # an image without captions is left out; no cells: no regions
    assert whole["all"]["n_images"] == n_img and "object" not in whole
    assert f"{whole['per_image_total']['mean']:.1f}" in whole["sentence"] and "[" not in whole["sentence"]


def test_heldout_pass_gives_the_table_and_the_gaps_from_one_forward_per_direction_and_batch(monkeypatch):
    """At paper size each forward over the held-out pairs is minutes on a CPU: the two analyses share it."""
    from lverse_core.evaluation.likelihood import heldout_pass, image_token_gaps

    model, pairs = _tiny_model_and_pairs()
    expected_table, expected_gaps = heldout_nll(model, pairs, "cpu", batch_size=3), image_token_gaps(model, pairs,
                                                                                                   "cpu", batch_size=3)
    calls = []
    real = model.logits
    monkeypatch.setattr(model, "logits", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    table, gaps = heldout_pass(model, pairs, "cpu", batch_size=3)
    assert len(calls) == 2 * 4  # 10 pairs in batches of 3: 4 batches, one forward per direction each
    assert table.equals(expected_table) and torch.equal(gaps, expected_gaps)
