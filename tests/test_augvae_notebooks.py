"""Notebooks 01 and 03 run headless with papermill on the ci profile and write their results.

They are read from the test run's ci pipeline (tests/conftest.py: ci_pipeline); training itself is tested in
test_augvae.py."""
from __future__ import annotations

import json

import numpy as np

from lverse_core.evaluation.fid import fid_label
from lverse_core.pipeline import recon_eval
from lverse_core.training.pretokenize import load_codes
from tests._figures import assert_figure_shows



def test_notebooks_01_and_03_on_ci(ci_outputs):
    cfg = ci_outputs
    summary = json.loads((cfg.reports_root / "results" / "augvae_training.json").read_text())
    assert summary["params"]["sl"] < summary["params"]["ml"]
    for split in ("train", "val", "test"):
        codes, ids = load_codes(cfg, split)
        assert codes.shape == (len(ids), cfg.image_grid, cfg.image_grid) and codes.dtype == np.uint16
        assert int(codes.max()) < cfg.augvae.codebook_size
    res = json.loads((cfg.reports_root / "results" / "table1_reconstruction.json").read_text())
    assert set(res["models"]) == {"AugVAE-ML", "AugVAE-SL", "VQ-VAE (plain, single level)"}
    assert res["fid_feature_space"] == fid_label(cfg)
    for r in res["models"].values():
        assert r["psnr_db"] > 10 and r["fid"] >= 0 and 0 < r["ssim"] <= 1
    sl, plain = res["models"]["AugVAE-SL"], res["models"]["VQ-VAE (plain, single level)"]
    assert res["outcome"] == recon_eval.claim_outcome(sl, plain) and res["verdict"] == recon_eval.claim_verdict(sl, plain)
    for name in ("augvae_training_curves", "augvae_reconstructions", "table1_reconstruction_grid",
                 "figure5_ood_reconstructions"):
        assert_figure_shows(cfg.reports_root / "figures" / f"{name}.png")
