"""Reconstruction metrics and the Table 1 layout (paper §4.1)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lverse_core.pipeline import recon_eval
from lverse_core.config import load_profile


def test_psnr_matches_definition():
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[0] += 0.2  # [-1, 1] units: 0.1 in [0, 1] -> MSE 0.01 -> 20 dB
    y[1] -= 1.0  # 0.5 in [0, 1] -> MSE 0.25 -> 6.02 dB
    torch.testing.assert_close(recon_eval.psnr(x, y), torch.tensor([20.0, 10 * math.log10(4)]))


def test_ssim_is_one_for_identical_and_lower_for_noisy():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert np.allclose(recon_eval.ssim(x, x), 1.0)
    assert (recon_eval.ssim(x, (x + 0.5 * torch.randn_like(x)).clamp(-1, 1)) < 0.9).all()


def test_code_usage_counts_and_perplexity():
    u = recon_eval.code_usage(torch.tensor([0, 0, 1, 1]), 8)
    assert u["codes_used"] == 2 and u["fraction_used"] == 0.25 and u["perplexity"] == pytest.approx(2.0)


def test_claim_verdict_reports_each_way():
    good = {"psnr_db": 25.0, "ssim": 0.8, "fid": 10.0}
    bad = {"psnr_db": 20.0, "ssim": 0.6, "fid": 30.0}
    assert "supports the claim" in recon_eval.claim_verdict(good, bad)
    assert "contradicts the claim" in recon_eval.claim_verdict(bad, good)
    assert "mixed" in recon_eval.claim_verdict({**good, "fid": 40.0}, bad)


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
