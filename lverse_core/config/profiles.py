"""Reading profiles: ``configs/<name>.yaml`` with ``extends`` resolved, overrides laid over it, asset paths from the
environment, validated; and a notebook's run configuration (profile + ``OVERRIDES``) with its own folders."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from lverse_core.config.assets import ASSETS, env_assets
from lverse_core.config.errors import ConfigError, short
from lverse_core.config.folders import (OUTPUT_FOLDER_KEYS, available_profiles, check_profile_folders,
                                        check_profile_name, check_run_record, config_dir, overrides_tag,
                                        run_folders, workdir)
from lverse_core.config.schema import Config, get
from lverse_core.config.validate import build, validate

# Keys that name the profile or a folder: a run's OVERRIDES may not set them. The run's own folders follow from the
# profile and the overrides' tag (load_run_config); a user-chosen one could point at another run's folders (a ci-sized
# data set written over smoke's) or outside the work directory. The kit's own code sets them through load_profile's
# and derive's keyword overrides (the claims' per-seed folders, the tests' tmp dirs), which are not user input.
RESERVED_OVERRIDES = ("profile", *OUTPUT_FOLDER_KEYS, *(f"assets.{k}" for k in ASSETS))
OVERRIDES_MAX_DEPTH = 8  # {"section": {"key": [[...]]}}: a profile is never deeper than a few levels


def load_profile(name: str = "smoke", **overrides: Any) -> Config:
    """Load ``configs/<name>.yaml`` into a validated :class:`Config`.

    Overrides use dotted keys (``load_profile("ci", **{"augvae.ml_steps": 5})``) or whole sections
    (``augvae_train={"ml_steps": 5}``). Asset paths set in the environment (``ASSET_ENV``) win over the YAML.
    """
    check_profile_name(name)
    workdir()  # pin a relative LVERSE_WORKDIR now, before any kernel or worker inherits the environment
    path = config_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown profile {name!r}; valid profiles: {', '.join(available_profiles())}")
    tree = _read_tree(path)
    if tree.get("profile", name) != name:
        raise ConfigError(f"{path} says profile {tree['profile']!r} but was loaded as {name!r}")
    tree = _extended(tree, path, [name])
    check_profile_folders(tree, path)
    tree["profile"] = name
    if "profile" in overrides:
        raise ConfigError(f"override 'profile': the profile is chosen by name (load_profile({name!r}, ...)), "
                          f"never overridden")
    for key, value in overrides.items():
        if isinstance(value, dict) and "." not in key:
            for sub, v in value.items():
                _set_dotted(tree, f"{key}.{sub}", v)
        else:
            _set_dotted(tree, key, value)
    assets = tree.setdefault("assets", {})
    if isinstance(assets, dict):  # anything else: validation names it
        assets.update(env_assets())
    return validate(build(Config, tree))


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a Config saved with ``to_dict`` (e.g. from a checkpoint), validated."""
    return validate(build(Config, dict(tree)))


def derive(cfg: Config, **dotted: Any) -> Config:
    """``cfg`` with dotted overrides (``derive(cfg, **{"biart.n_layer": 2})``) applied, validated; ``cfg`` is
    unchanged. Unlike ``load_profile(name, ...)`` it keeps whatever ``cfg`` already overrides."""
    tree = copy.deepcopy(cfg.to_dict())
    for key, value in dotted.items():
        _set_dotted(tree, key, value)
    return config_from_dict(tree)


def load_run_config(name: str, overrides: dict[str, Any] | None = None) -> Config:
    """The configuration a notebook runs with: profile ``name`` plus the notebook parameter ``OVERRIDES``.

    ``OVERRIDES`` maps dotted keys to values (``{"augvae_train.sl_steps": 2600}``). A run with overrides never
    reuses or overwrites the default run's checkpoints and reports: it gets its own ``runs/<profile>+<tag>/`` and
    ``reports/<profile>+<tag>/`` (``tag`` = ``overrides_tag`` of the validated values), and its own
    ``data/<profile>+<tag>/`` when it changes ``seed`` or a ``data.`` key; ``overrides.json`` in the run folder says
    what the tag stands for, and a run whose overrides differ from it is refused. Keys naming the profile or a
    folder (``RESERVED_OVERRIDES``) are refused: the run's folders are the kit's to choose.
    """
    if overrides is None or overrides == {}:
        return load_profile(name)
    flat = _flat_overrides(overrides)
    if not flat:  # e.g. {"augvae": {}}: nothing overridden
        return load_profile(name)
    # the tag stands for the validated values (1 and 1.0 for a float are the same run), in their JSON form
    resolved = load_profile(name, **flat)
    values = json.loads(json.dumps({k: get(resolved, k) for k in flat}, sort_keys=True))
    tag = overrides_tag(values)
    folders = run_folders(tag, moves_data=any(k == "seed" or k.startswith("data.") for k in flat))
    cfg = load_profile(name, **{**flat, **folders})
    check_run_record(cfg.runs_root, {"profile": name, "overrides": values, "tag": tag})
    return cfg


# -- the YAML tree ---------------------------------------------------------------------------------------------

def _read_tree(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(tree).__name__}")
    return tree


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``top`` laid over it section by section (a key in ``top`` wins; lists are replaced)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _extended(tree: dict[str, Any], path: Path, chain: list[str]) -> dict[str, Any]:
    """A profile's tree with ``extends: <base profile>`` resolved: the base's YAML, then this one's keys over it."""
    base = tree.pop("extends", None)
    if base is None:
        return tree
    check_profile_name(base)
    base_path = config_dir() / f"{base}.yaml"
    if base in chain:
        raise ConfigError(f"{path}: 'extends: {base}' makes a cycle ({' -> '.join([*chain, base])})")
    if not base_path.is_file():
        raise ConfigError(f"{path}: 'extends: {base}' names no profile; valid profiles: "
                          f"{', '.join(available_profiles())}")
    base_tree = _extended(_read_tree(base_path), base_path, [*chain, base])
    base_tree.pop("profile", None)
    return _merged(base_tree, tree)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: '{part}' is not a section")
    node[parts[-1]] = value


# -- OVERRIDES, as a user writes them --------------------------------------------------------------------------

def _nesting_depth(value: Any, limit: int) -> int:
    """How many levels of dicts and lists ``value`` has, counted level by level without recursion and only up to
    ``limit + 1`` (a value nested thousands of levels deep would otherwise end in a RecursionError)."""
    depth, level = 0, [value]
    while depth <= limit:
        level = [x for x in level if isinstance(x, (dict, list, tuple))]
        if not level:
            break
        depth += 1
        level = [v for x in level for v in (x.values() if isinstance(x, dict) else x)]
    return depth


def _reserved_key_error(key: str) -> ConfigError:
    if key == "profile":
        return ConfigError("OVERRIDES: 'profile' cannot be overridden; choose the profile with PROFILE (the runner's "
                           "--profile), and set values with dotted keys in OVERRIDES")
    if key.startswith("assets."):
        name = key.split(".", 1)[1]
        return ConfigError(f"OVERRIDES: '{key}' names a folder or file and cannot be overridden; set it in "
                           f"configs/<profile>.yaml or with the environment variable {ASSETS[name].env}")
    return ConfigError(f"OVERRIDES: '{key}' names a folder and cannot be overridden; a run with OVERRIDES gets its "
                       f"own runs/, reports/ (and data/) folders named after its tag. To move every output, set "
                       f"LVERSE_WORKDIR")


def _flat_overrides(overrides: Any) -> dict[str, Any]:
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise ConfigError(f"OVERRIDES must be a dict of dotted config keys to values, e.g. "
                          f"{{\"augvae_train.sl_steps\": 2600}}; got {short(overrides)}")
    if _nesting_depth(overrides, OVERRIDES_MAX_DEPTH) > OVERRIDES_MAX_DEPTH:
        raise ConfigError(f"OVERRIDES is nested more than {OVERRIDES_MAX_DEPTH} levels deep; a profile's values are "
                          f"numbers, strings and flat lists under dotted keys, e.g. "
                          f"{{\"biart_train.betas\": [0.9, 0.95]}}")
    flat = {}
    for key, value in overrides.items():
        if isinstance(value, dict) and "." not in key:
            if not all(isinstance(k, str) for k in value):
                raise ConfigError(f"OVERRIDES: section {key!r} must map key names to values; got {short(value)}")
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    for key in flat:
        for reserved in RESERVED_OVERRIDES:
            if key == reserved or key.startswith(reserved + "."):
                raise _reserved_key_error(reserved)
    return flat
