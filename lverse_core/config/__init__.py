"""Typed run profiles (``configs/<name>.yaml``) for the L-Verse kit.

One profile describes one scale of the same pipeline: ``ci`` (tiniest, 2 CPU cores), ``smoke`` (the default,
small but honest), ``gpu`` (one GPU) and ``paper`` (the paper's sizes, §3.5). A profile is a YAML file whose
sections map one-to-one onto the dataclasses of ``schema``; anything the YAML leaves out keeps the default.

    cfg = load_profile("smoke", **{"augvae.ml_steps": 10, "seed": 3})

Validation is strict on purpose: an unknown section or key, or a value of the wrong type, is a ``ConfigError``
that names the offending key and lists the valid ones, so a typo never silently falls back to a default.
Paths to real assets (data roots, weight files) can also come from environment variables, named in
``ASSET_ENV``; ``require_asset`` turns a missing one into an error saying where the file comes from.

One job per module:

- ``schema``: the sections and their fields, each declared once with its default, help and valid values
- ``validate``: building a Config from a YAML tree and checking it against those declarations
- ``assets``: real data sets and weight files (env variables, sources, stand-ins) and ``require_asset``
- ``profiles``: reading YAML, ``extends``, overrides, ``derive`` and a notebook's run configuration
- ``sources``: what each ``data.source`` is (embedded or read from assets, with ground truth or without)
- ``folders``: the work directory, profile names, output folders and the run folders of overrides
"""
from lverse_core.config.errors import ConfigError, MissingAssetError
from lverse_core.config.folders import (CONFIG_DIR, OUTPUT_FOLDER_KEYS, PROFILE_NAME, REPO_ROOT,
                                        available_profiles, overrides_tag, workdir)
from lverse_core.config.schema import (ANY, AT_LEAST_0, AT_LEAST_1, FRACTION, INT_MAX, OPEN_FRACTION, POSITIVE, SEED,
                                       Asset, AssetsConfig, AugVAEConfig, AugVAETrainConfig, BiARTConfig,
                                       BiARTTrainConfig, ClaimsConfig, CLIPConfig, Config, DataConfig, EvalConfig,
                                       Range, SamplingConfig, Spec, field_types, leaves, setting)
from lverse_core.config.sources import SOURCES, DataSource, data_source
from lverse_core.config.validate import CHOICES, CROSS_CHECKS, LENGTHS, RANGES, TOGGLES, validate
from lverse_core.config.assets import ASSET_ENV, ASSET_HELP, ASSETS, STAND_IN_PATHS, require_asset
from lverse_core.config.profiles import (OVERRIDES_MAX_DEPTH, RESERVED_OVERRIDES, config_from_dict, derive,
                                         load_profile, load_run_config)

__all__ = [
    "ANY", "ASSETS", "ASSET_ENV", "ASSET_HELP", "AT_LEAST_0", "AT_LEAST_1", "Asset", "AssetsConfig", "AugVAEConfig",
    "AugVAETrainConfig", "BiARTConfig", "BiARTTrainConfig", "CHOICES", "CLIPConfig", "CONFIG_DIR", "CROSS_CHECKS",
    "ClaimsConfig", "Config", "ConfigError", "DataConfig", "DataSource", "EvalConfig", "FRACTION", "INT_MAX", "LENGTHS",
    "SOURCES", "data_source",
    "MissingAssetError", "OPEN_FRACTION", "OUTPUT_FOLDER_KEYS", "OVERRIDES_MAX_DEPTH", "POSITIVE", "PROFILE_NAME",
    "RANGES", "REPO_ROOT", "RESERVED_OVERRIDES", "Range", "SEED", "STAND_IN_PATHS", "SamplingConfig", "Spec",
    "TOGGLES", "available_profiles", "config_from_dict", "derive", "field_types", "leaves", "load_profile",
    "load_run_config", "overrides_tag", "require_asset", "setting", "validate", "workdir",
]
