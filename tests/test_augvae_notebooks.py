"""Notebooks 01 and 03 run headless with papermill on the ci profile and write their results.

They reuse finished AugVAE checkpoints in runs/ci/ (training itself is tested in test_augvae.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lverse_core.config import REPO_ROOT, load_profile
from lverse_core.pretokenize import load_codes

pytest.importorskip("papermill")


def _run(nb: str, out: Path) -> None:
    cmd = [sys.executable, "-m", "papermill", str(REPO_ROOT / "notebooks" / nb), str(out), "-p", "PROFILE", "ci",
           "--cwd", str(REPO_ROOT)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


def test_notebooks_01_and_03_on_ci(tmp_path):
    cfg = load_profile("ci")
    _run("01_train_augvae.ipynb", tmp_path / "01.ipynb")
    summary = json.loads((cfg.reports_root / "results" / "augvae_training.json").read_text())
    assert summary["params"]["sl"] < summary["params"]["ml"]
    for split in ("train", "val", "test"):
        codes, ids = load_codes(cfg, split)
        assert codes.shape == (len(ids), cfg.image_grid, cfg.image_grid) and codes.dtype == np.uint16
        assert int(codes.max()) < cfg.augvae.codebook_size
    _run("03_table1_reconstruction.ipynb", tmp_path / "03.ipynb")
    res = json.loads((cfg.reports_root / "results" / "table1_reconstruction.json").read_text())
    assert set(res["models"]) == {"AugVAE-ML", "AugVAE-SL", "VQ-VAE (plain, single level)"}
    assert "not Inception" in res["fid_feature_space"]
    for r in res["models"].values():
        assert r["psnr_db"] > 10 and r["fid"] >= 0 and 0 < r["ssim"] <= 1
    assert res["verdict"].startswith("On this run the comparison")
    for name in ("augvae_training_curves", "augvae_reconstructions", "table1_reconstruction_grid",
                 "figure5_ood_reconstructions"):
        assert (cfg.reports_root / "figures" / f"{name}.png").stat().st_size > 1000
