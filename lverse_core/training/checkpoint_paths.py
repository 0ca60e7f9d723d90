"""Where a run keeps the models it trains: one table of file names under ``runs/<profile>/``, one function."""
from __future__ import annotations

from pathlib import Path

from lverse_core.config import Config

# model -> checkpoint file in the run folder (AugVAE variants ml | sl | baseline, and BiART)
CHECKPOINT_FILES = {"ml": "augvae_ml.pt", "sl": "augvae_sl.pt", "baseline": "vqvae_baseline.pt", "biart": "biart.pt"}


def checkpoint_path(cfg: Config, model: str) -> Path:
    """The checkpoint of ``model`` (a key of ``CHECKPOINT_FILES``) in this run's folder."""
    if model not in CHECKPOINT_FILES:
        raise ValueError(f"unknown model {model!r} for a checkpoint path; valid: {', '.join(CHECKPOINT_FILES)}")
    return cfg.runs_root / CHECKPOINT_FILES[model]
