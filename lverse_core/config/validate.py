"""Turning a YAML tree into a Config and checking it, from the declarations in ``schema``.

``build`` checks each value's type as it builds the dataclasses (an unknown key or a value of the wrong type names
the key and what is valid); ``validate`` then walks every declared field (choices, list length, range, the field's
own check) and runs the few checks that tie fields together (``CROSS_CHECKS``).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from typing import Any

from lverse_core.config.errors import ConfigError, short
from lverse_core.config.folders import check_profile_name
from lverse_core.config.sources import data_source
from lverse_core.config.schema import INT_MAX, Config, Range, Spec, field_types, get, leaves, spec_of

# Views of the declarations by dotted key, for readers that want one kind of rule at a time.
CHOICES: dict[str, tuple[str, ...]] = {k: s.choices for k, _, s in leaves() if s.choices is not None}
RANGES: dict[str, Range] = {k: s.range for k, _, s in leaves() if s.range is not None}
LENGTHS: dict[str, tuple[int, int | None]] = {k: s.length for k, _, s in leaves() if s.length is not None}
TOGGLES: tuple[str, ...] = tuple(k for k, _, s in leaves() if s.toggle)


# -- building: types --------------------------------------------------------------------------------------------

def check_value(where: str, value: Any, typ: Any) -> Any:
    """Return ``value`` coerced to ``typ`` (int -> float allowed), or raise ConfigError naming ``where``."""
    origin = typing.get_origin(typ)
    if origin is list:
        (item,) = typing.get_args(typ)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list of {item.__name__}, got {short(value)}")
        return [check_value(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {short(value)} ({type(value).__name__})")
        try:
            return float(value)  # NaN and +-inf pass here; the declared ranges refuse them, naming the key
        except OverflowError:  # an integer beyond the largest float
            raise ConfigError(f"{where}: {short(value)} is out of range; expected a finite number") from None
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {short(value)} ({type(value).__name__})")
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {short(value)}")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {short(value)} ({type(value).__name__})")
        return value
    raise ConfigError(f"{where}: unsupported type {typ}")  # pragma: no cover - schema bug


def build(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """An instance of section ``cls`` from a YAML mapping; fields the mapping leaves out keep their defaults."""
    types = field_types(cls)
    specs = {f.name: spec_of(f) for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in types:
            raise ConfigError(
                f"unknown key '{where}{key}'; valid keys in {where.rstrip('.') or 'the top level'}: "
                f"{', '.join(types)}"
            )
        typ = types[key]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key}: expected a mapping of {', '.join(field_types(typ))}")
            kwargs[key] = build(typ, value, f"{where}{key}.")
        else:
            if specs[key].toggle and isinstance(value, bool):
                value = "true" if value else "false"  # YAML's true/false beside the word auto
            kwargs[key] = check_value(f"{where}{key}", value, typ)
    return cls(**kwargs)


# -- validating: each field's declaration ------------------------------------------------------------------------

def check_setting(key: str, value: Any, spec: Spec) -> None:
    """Raise a ConfigError naming ``key`` if ``value`` breaks what its declaration allows."""
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(spec.choices)}")
    if spec.length is not None:
        fewest, most = spec.length
        if len(value) < fewest or (most is not None and len(value) > most):
            want = f"exactly {fewest}" if fewest == most else f"at least {fewest}" if most is None else \
                f"{fewest} to {most}"
            raise ConfigError(f"{key}: {short(value)} has {len(value)} item(s); give {want}")
    if spec.range is not None:
        each = " for every item" if isinstance(value, list) else ""
        for v in value if isinstance(value, list) else [value]:
            if v not in spec.range:  # Range refuses NaN and +-inf
                raise ConfigError(f"{key}: {short(value)} is out of range; allowed: {spec.range}{each}"
                                  + (", a finite number" if isinstance(v, float) and not math.isfinite(v) else ""))
            if isinstance(v, int) and v > INT_MAX:
                raise ConfigError(f"{key}: {short(value)} is out of range; integers in a profile are at most "
                                  f"{INT_MAX} (2**31 - 1){each}")
    if spec.check is not None:
        problem = spec.check(value)
        if problem is not None:
            raise ConfigError(f"{key}: {problem}")


# -- validating: checks that tie fields together -----------------------------------------------------------------

def _levels_fit_the_image(cfg: Config) -> None:
    a = cfg.augvae
    # 2 ** halvings > image_size, compared by bit length: 2 ** n_levels itself would not finish for a huge n_levels
    halvings = len(a.ch_mult) - 1 + a.n_levels - 1
    if halvings >= cfg.data.image_size.bit_length():
        raise ConfigError(
            f"augvae: {a.n_levels} levels with ch_mult {a.ch_mult} downsample a {cfg.data.image_size}-px image "
            f"below 1x1; use fewer levels or a larger data.image_size"
        )


def _sl_level_is_a_level(cfg: Config) -> None:
    a = cfg.augvae
    if not 0 <= a.sl_level < a.n_levels:
        raise ConfigError(f"augvae.sl_level: {a.sl_level} must be in 0..{a.n_levels - 1}")


def _norm_groups_divide_channels(cfg: Config) -> None:
    a = cfg.augvae
    for ch in [a.hidden * m for m in a.ch_mult] + [a.z_channels]:
        if ch % a.norm_groups:
            raise ConfigError(f"augvae.norm_groups: {a.norm_groups} does not divide channel count {ch}")


def _heads_divide_width(cfg: Config) -> None:
    if cfg.biart.n_embd % cfg.biart.n_head:
        raise ConfigError(f"biart.n_embd ({cfg.biart.n_embd}) must be divisible by biart.n_head ({cfg.biart.n_head})")


def _embedded_set_not_empty(cfg: Config) -> None:
    if data_source(cfg).embedded and cfg.data.n_train <= 0:
        raise ConfigError(f"data.n_train: the embedded data set needs a positive size, got {cfg.data.n_train}")


# Run after every field passed its own checks (some of them divide by fields that must be positive).
CROSS_CHECKS: tuple[Callable[[Config], None], ...] = (
    _levels_fit_the_image, _sl_level_is_a_level, _norm_groups_divide_channels, _heads_divide_width,
    _embedded_set_not_empty,
)


def validate(cfg: Config) -> Config:
    """``cfg`` if every field is as declared and the fields fit together, else a ConfigError naming the key."""
    check_profile_name(cfg.profile)
    for key, _, spec in leaves():
        check_setting(key, get(cfg, key), spec)
    for check in CROSS_CHECKS:
        check(cfg)
    return cfg
