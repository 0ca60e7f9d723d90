"""The arms of the claims experiment (``claims_experiment``, notebook 07): which claims a run measures, the
budgets every method and its control share, and the configuration of each seed and arm (no file is read here).
"""
from __future__ import annotations

from typing import Any

from lverse_core.config import Config, ConfigError, derive
from lverse_core.config.sources import data_source

AUGVAE_ARMS = ("ml", "ml_per_level", "sl", "sl_per_level", "baseline")
BIART_ARMS = ("bidirectional", "no_segment", "shared_positions", "shared_positions_no_segment", "t2i_only",
              "i2t_only")
CLAIMS = (1, 2, 3, 4, 5, 6)
# the arms each claim compares (4, 5 and 6 read the bidirectional model's samples in two ways)
ARMS_OF_CLAIM: dict[int, tuple[str, ...]] = {
    1: AUGVAE_ARMS, 2: ("bidirectional", "no_segment", "shared_positions", "shared_positions_no_segment"),
    3: ("bidirectional", "t2i_only", "i2t_only"), 4: ("bidirectional",), 5: ("bidirectional",),
    6: ("bidirectional",)}


def claims_selected(cfg: Config) -> tuple[int, ...]:
    """The claims this run measures: ``claims.only`` (validated: numbers 1-6), or all six when it is empty."""
    return tuple(sorted(set(cfg.claims.only))) if cfg.claims.only else CLAIMS


def _parse_numbers(name: str, value: Any, noun: str, what: str, example: str) -> list[int]:
    """A notebook parameter of whole numbers (``CLAIMS``, ``SEEDS``): ``""`` / None (none), an int, a string such as
    ``"1 3"`` or ``"1,3"``, or a list; a ConfigError names what could not be read. Their range is the config's to
    check (``derive`` validates them)."""
    if value is None or value == "":
        return []
    if isinstance(value, bool):
        raise ConfigError(f"{name}={value!r}: give {what}, e.g. {example}")
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        parts = value.replace(",", " ").split()
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ConfigError(f"{name}={value!r}: give {what}, e.g. {example} (got a {type(value).__name__})")
    out = []
    for p in parts:
        try:
            if isinstance(p, bool) or not isinstance(p, (int, str)):
                raise ValueError
            out.append(int(p))
        except ValueError:
            raise ConfigError(f"{name}={value!r}: {p!r} is not {noun}; give {what}, e.g. {example}") from None
    return out


def parse_claims(value: Any) -> list[int]:
    """The notebook parameter ``CLAIMS`` (make claims CLAIMS="1 3") as a list of claim numbers; [] means all six."""
    return _parse_numbers("CLAIMS", value, "a claim number", "claim numbers 1-6", '"1 3"')


def parse_seeds(value: Any) -> list[int]:
    """The notebook parameter ``SEEDS`` (make claims SEEDS="0 1 2 3 4") as a list of seeds; [] means the profile's
    ``claims.seeds``."""
    return _parse_numbers("SEEDS", value, "a seed", "seeds (whole numbers from 0)", '"0 1 2 3 4"')


def with_parameters(cfg: Config, claims: Any = "", primaries_only: Any = False, seeds: Any = "") -> Config:
    """``cfg`` with notebook 07's parameters applied (``CLAIMS``, ``PRIMARIES_ONLY``, ``SEEDS``; the make variables
    of the same names), each validated by the config. The run folders stay the same: each seed's arms live in
    ``claims/s<seed>/``, so a subset of the claims or other seeds reuse and add to what earlier runs trained."""
    if not isinstance(primaries_only, bool):
        raise ConfigError(f"PRIMARIES_ONLY={primaries_only!r}: give True or False (make claims PRIMARIES_ONLY=1)")
    changes: dict[str, Any] = {}
    if claims not in ("", None):
        changes["claims.only"] = parse_claims(claims)
    if primaries_only:
        changes["claims.primaries_only"] = True
    if seeds not in ("", None):
        changes["claims.seeds"] = parse_seeds(seeds)
    return derive(cfg, **changes) if changes else cfg


# arms named by a primary measure (``claims.primaries``) that stand for several trained arms: the one-direction
# models' pair, read as one arm by the scorecard
ONE_DIRECTION = "one_direction"
PRIMARY_ARM_GROUPS = {ONE_DIRECTION: ("t2i_only", "i2t_only")}


def primary_arms(cfg: Config, claim: int) -> set[str]:
    """The arms claim ``claim``'s primary measure compares (its method and control), as trained arms."""
    p = getattr(cfg.claims.primaries, f"claim_{claim}")
    return {a for arm in (p.method, p.control) for a in PRIMARY_ARM_GROUPS.get(arm, (arm,))}


def arms_selected(cfg: Config) -> list[str]:
    """The arms the selected claims need, in ``AUGVAE_ARMS`` + ``BIART_ARMS`` order; with ``claims.primaries_only``
    only those their primary measures compare."""
    if cfg.claims.primaries_only:
        need = {arm for c in claims_selected(cfg) for arm in primary_arms(cfg, c)}
    else:
        need = {arm for c in claims_selected(cfg) for arm in ARMS_OF_CLAIM[c]}
    return [arm for arm in (*AUGVAE_ARMS, *BIART_ARMS) if arm in need]


def claim_number(claim: str) -> int | None:
    """The number a claim text starts with ("1a cross-level ..." -> 1), None if none."""
    digits = claim[:len(claim) - len(claim.lstrip("0123456789"))]
    return int(digits) if digits else None


def budgets(cfg: Config) -> dict[str, int]:
    """The step counts and sizes every arm of a claim shares (``claims.*``, 0 = the profile's own)."""
    c = cfg.claims
    return {"ml_steps": c.ml_steps or cfg.augvae_train.ml_steps, "sl_steps": c.sl_steps or cfg.augvae_train.sl_steps,
            "biart_steps": c.biart_steps or cfg.biart_train.steps, "eval_images": c.eval_images,
            "n_candidates": c.n_candidates or cfg.sampling.n_candidates}


def blur_images(cfg: Config) -> int:
    """How many test images, and images drawn from their first captions, claim 6's KIDs compare:
    ``claims.blur_images``, 0 = ``claims.eval_images`` (at most the test split's size)."""
    return cfg.claims.blur_images or cfg.claims.eval_images


def seed_config(cfg: Config, seed: int) -> Config:
    """The configuration of one seed's runs: its own data draw (the main run's seed: the main run's data set) and
    run folder, the claims' budgets, and otherwise the profile's recipe as it is (tokenizer recipe, candidates and
    reranking rule of both directions)."""
    b = budgets(cfg)
    over: dict[str, Any] = {
        "seed": seed, "runs_dir": f"{cfg.runs_dir}/claims/s{seed}",
        "reports_dir": f"{cfg.runs_dir}/claims/s{seed}/reports",
        "augvae_train.ml_steps": b["ml_steps"], "augvae_train.sl_steps": b["sl_steps"],
        "augvae_train.baseline_steps": b["ml_steps"] + b["sl_steps"], "biart_train.steps": b["biart_steps"],
        "sampling.n_candidates": b["n_candidates"]}
    if data_source(cfg).embedded and seed != cfg.seed:  # a real data set keeps its files
        over["data.root"] = f"{cfg.data.root}+claims-s{seed}"
    return derive(cfg, **over)


def biart_arm_config(cfg_s: Config, arm: str) -> Config:
    """BiART of ``arm``: the paper's model, an ablation of the segment embedding / position scheme, or a
    one-direction control with half the steps (equal steps per direction and equal total compute) and the warm-up
    scaled alike (the same fraction of its steps, so the same learning-rate schedule over its training)."""
    steps = cfg_s.biart_train.steps
    half = max(1, steps // 2)
    warm = cfg_s.biart_train.warmup_steps
    half_warm = 0 if warm == 0 else max(1, round(warm * half / steps))
    arms: dict[str, dict[str, Any]] = {
        "bidirectional": {},
        "no_segment": {"biart.segment_embedding": False},
        "shared_positions": {"biart.positions": "shared"},
        "shared_positions_no_segment": {"biart.positions": "shared", "biart.segment_embedding": False},
        "t2i_only": {"biart_train.direction": "t2i", "biart_train.steps": half, "biart_train.warmup_steps": half_warm},
        "i2t_only": {"biart_train.direction": "i2t", "biart_train.steps": half, "biart_train.warmup_steps": half_warm},
    }
    if arm not in arms:
        raise ValueError(f"unknown BiART arm {arm!r}; choose from {', '.join(arms)}")
    return derive(cfg_s, **arms[arm])


def per_level_config(cfg_s: Config) -> Config:
    return derive(cfg_s, **{"augvae.codebook": "per_level", "runs_dir": f"{cfg_s.runs_dir}/ml_per_level"})


def _augvae_arm(cfg_s: Config, arm: str) -> tuple[Config, str]:
    """The configuration and variant of an AugVAE arm's checkpoint."""
    variant = {"ml": "ml", "ml_per_level": "ml", "sl": "sl", "sl_per_level": "sl", "baseline": "baseline"}[arm]
    return (per_level_config(cfg_s) if arm.endswith("_per_level") else cfg_s), variant
