"""Reconstruction metrics and the Table 1 layout (paper §4.1)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lverse_core.evaluation import reconstruction
from lverse_core.pipeline import recon_eval
from lverse_core.config import load_profile


def test_psnr_matches_definition():
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[0] += 0.2  # [-1, 1] units: 0.1 in [0, 1] -> MSE 0.01 -> 20 dB
    y[1] -= 1.0  # 0.5 in [0, 1] -> MSE 0.25 -> 6.02 dB
    torch.testing.assert_close(reconstruction.psnr(x, y), torch.tensor([20.0, 10 * math.log10(4)]))


def test_ssim_is_one_for_identical_and_lower_for_noisy():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert np.allclose(reconstruction.ssim(x, x), 1.0)
    assert (reconstruction.ssim(x, (x + 0.5 * torch.randn_like(x)).clamp(-1, 1)) < 0.9).all()


def test_code_usage_counts_and_perplexity():
    u = reconstruction.code_usage(torch.tensor([0, 0, 1, 1]), 8)
    assert u["codes_used"] == 2 and u["fraction_used"] == 0.25 and u["perplexity"] == pytest.approx(2.0)


def test_claim_verdict_reports_each_way():
    good = {"psnr_db": 25.0, "ssim": 0.8, "fid": 10.0}
    bad = {"psnr_db": 20.0, "ssim": 0.6, "fid": 30.0}
    assert recon_eval.claim_outcome(good, bad) == "supports" and recon_eval.claim_outcome(bad, good) == "contradicts"
    assert recon_eval.claim_outcome({**good, "fid": 40.0}, bad) == "mixed"
    assert recon_eval.claim_outcome({"psnr_db": 25.0, "ssim": 0.8}, bad) == "supports"  # FID only where both have it
    text = recon_eval.claim_verdict(good, bad)
    assert recon_eval.CLAIM_OUTCOMES["supports"] in text
    assert all(n in text for n in ("25.00", "20.00", "+5.00", "0.800", "0.600", "10.00", "30.00"))


def test_table1_keeps_paper_rows_apart_from_ours(tmp_path):
    cfg = load_profile("ci", reports_dir=str(tmp_path))
    ours = {"AugVAE-SL": {"psnr_db": 20.0, "ssim": 0.5, "fid": 12.0, "n_images": 32}}
    t = recon_eval.table1(cfg, ours, {"AugVAE-SL": "x"})
    paper = t[t["source"].str.startswith("L-Verse paper")]
    mine = t[t["source"].str.startswith("this run")]
    assert len(paper) == 7 and len(mine) == 1
    ours_fid_col = [c for c in t.columns if c.startswith("FID (kit")]
    assert ours_fid_col and paper[ours_fid_col[0]].isna().all()  # the paper has no number in our feature space
    assert mine["rFID, paper (Inception, ImageNet val)"].isna().all()  # ours never sits in the paper's column
    assert mine["latent maps"].iloc[0] == f"{cfg.image_grid}x{cfg.image_grid}"


# -- look-inside helpers of notebook 01 ---------------------------------------------------------------------------
def test_shared_code_matrix_counts_entries_two_levels_both_use():
    levels = [torch.tensor([[[0, 1], [2, 2]]]), torch.tensor([[[1, 2], [3, 3]]]), torch.tensor([[[2]]])]
    m = reconstruction.shared_code_matrix(levels, codebook_size=8)
    assert m.values.tolist() == [[3, 2, 1], [2, 3, 1], [1, 1, 1]]
    assert list(m.index) == ["level 0 (2x2)", "level 1 (2x2)", "level 2 (1x1)"]
    s = reconstruction.sharing_summary(m, levels, 8)
    assert s["per_level"] == [3, 3, 1] and s["union"] == 4 and s["shared_by_2_or_more"] == 2 and s["shared_by_all"] == 1
    text = recon_eval.sharing_sentence(s)
    assert "4 of 8 entries" in text and "2 (50%) used by two or more levels" in text


def test_ml_to_sl_diff_names_dropped_added_kept_and_what_fine_tuning_moved():
    from lverse_core.models.augvae import AugVAE

    cfg = load_profile("ci")
    ml = AugVAE.from_config(cfg, "ml")
    sl = AugVAE.ml_to_sl(ml)
    with torch.no_grad():
        for p in sl.decoders[0].parameters():
            p.mul_(1.5)
    d = recon_eval.ml_to_sl_diff(ml, sl).set_index("module")
    n = cfg.augvae.n_levels
    assert set(d.index[d.status == "dropped"]) == {f"{p}.{k}" for p in ("encoders", "decoders") for k in range(2, n)}
    assert set(d.index[d.status == "added"]) == {"connectors.0", "connectors.1"}
    change = d["relative change in SL fine-tuning"]
    assert change["decoders.0"] == pytest.approx(0.5, rel=1e-4)
    assert (change.drop("decoders.0").dropna() == 0).all()
    assert d.loc["connectors.0", "SL weights"] == sum(p.numel() for p in sl.connectors[0].parameters())
    summary = recon_eval.surgery_summary(d.reset_index())
    assert summary["added"][0] == 2 and summary["dropped"][0] == 2 * (n - 2)
    assert summary["added"][1] == sum(p.numel() for p in sl.connectors.parameters())
    assert summary["most"][0] == "decoders.0" and summary["most"][1] == pytest.approx(0.5, rel=1e-4)
    assert summary["least"][1] == 0
    text = recon_eval.surgery_sentence(d.reset_index())
    assert f"{summary['added'][1]:,}" in text and f"{summary['dropped'][1]:,}" in text and "(50%)" in text


def test_code_maps_figure_colours_a_code_the_same_everywhere():
    a = recon_eval.code_colours(torch.tensor([[5, 7], [5, 5]]))
    assert a.shape == (2, 2, 3) and (a[0, 0] == a[1, 1]).all() and not (a[0, 0] == a[0, 1]).all()
    fig = recon_eval.code_maps_figure(torch.zeros(3, 16, 16), {"a": torch.tensor([[1, 2], [2, 1]]),
                                                               "b": torch.zeros(4, 4, dtype=torch.long)})
    assert len(fig.axes) == 3 and "2 distinct codes" in fig.axes[1].get_title()
