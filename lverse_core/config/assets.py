"""Real data sets and weight files: where each is configured, where it comes from, and the lookup that turns a
missing one into an error saying so. Each asset is described once, by its field of ``schema.AssetsConfig``; the
tables below are read from those declarations."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

from lverse_core.config.errors import ConfigError, MissingAssetError
from lverse_core.config.schema import Asset, AssetsConfig, spec_of

if TYPE_CHECKING:
    from lverse_core.config.schema import Config

# Each asset's declaration, by field name (the fields of AssetsConfig declared with schema.asset).
ASSETS: dict[str, Asset] = {f.name: spec_of(f).asset for f in dataclasses.fields(AssetsConfig)
                            if spec_of(f).asset is not None}
# Environment variables that override asset paths (they win over the YAML).
ASSET_ENV = {name: a.env for name, a in ASSETS.items()}
# Where each asset comes from, quoted in the error when it is missing.
ASSET_HELP = {name: a.source for name, a in ASSETS.items()}
# With ``assets.stand_ins`` (profile paper-dry) these assets are stand-ins that lverse_core.data.stand_ins writes
# under data/<profile>/: the embedded data set in the real formats and random-weight files of the real architectures
STAND_IN_PATHS = {name: a.stand_in for name, a in ASSETS.items() if a.stand_in}


def require_asset(cfg: Config, name: str) -> Path:
    """The local path of asset ``name``, or a MissingAssetError naming it, its env variable and its source."""
    if name not in ASSETS:
        raise ConfigError(f"unknown asset {name!r}; valid: {', '.join(ASSETS)}")
    spec = ASSETS[name]
    if cfg.assets.stand_ins and spec.stand_in:
        p = cfg.data_root / spec.stand_in
        if not p.exists():
            raise MissingAssetError(
                f"stand-in asset '{name}' ({p}) is not written yet (assets.stand_ins is on in profile "
                f"{cfg.profile!r}). Notebook 00 writes the stand-ins: python -m lverse_core run --profile "
                f"{cfg.profile} --only 00 (or lverse_core.data.stand_ins.ensure_stand_ins(cfg)).")
        return p
    value = getattr(cfg.assets, name)
    if not value:
        raise MissingAssetError(
            f"asset '{name}' is not configured. Set assets.{name} in configs/{cfg.profile}.yaml or the environment "
            f"variable {spec.env}. It comes from: {spec.source}. The kit never downloads it."
        )
    p = Path(os.path.expanduser(value))
    if not p.exists():
        raise MissingAssetError(
            f"asset '{name}' points to {p}, which does not exist. Fix assets.{name} or {spec.env}. "
            f"It comes from: {spec.source}."
        )
    return p


def env_assets() -> dict[str, str]:
    """The asset paths set in the environment (name -> path); they win over the YAML."""
    return {name: os.environ[a.env] for name, a in ASSETS.items() if os.environ.get(a.env)}
