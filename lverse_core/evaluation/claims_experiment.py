"""The experiment behind the claims notebook (07): every claim's method and control, trained per seed, measured alike.

Every arm is trained with the profile's own recipe (the main run's steps, tokenizer recipe, candidates and reranking
rule; ``claims.*`` budgets, when set, are shared by method and control). Per seed ``s`` (``claims.seeds``) everything
is redrawn: the embedded data set (``data/<profile>+claims-s<s>``, a real data set keeps its files), initialisation
and batch order, except for the main run's seed (``cfg.seed``): it uses the main run's data set, and every model of
the main run that was made from the same settings and inputs (``lverse_core.provenance``) is copied into the
claims folder instead of trained again (the main run's own files are only read). The runs of a seed live in
``runs/<profile>/claims/s<s>/``:

    augvae_ml.pt, augvae_sl.pt, vqvae_baseline.pt      AugVAE-ML (one shared codebook), SL finetuned from it, and
                                                       the same SL trained from scratch for ML + SL steps
    ml_per_level/augvae_ml.pt, ml_per_level/augvae_sl.pt
                                                       AugVAE-ML with one codebook per level (same total codes) and
                                                       the SL finetuned from it (the same SL steps)
    codes/, tokenizer.json                             the SL codes BiART trains on, its tokenizer
    clip_reranker.pt, judge.pt                         the CLIP reranker and the attribute judge: trained on the
                                                       first seed, copied to the others (``share_instruments``)
    biart_<arm>.pt                                     one BiART per arm of ``BIART_ARMS``
    measures_<arm>.json                                what each arm measured (reused while its provenance matches)

Measures are taken on the first ``claims.eval_images`` test images (captions) and their first captions (prompts);
a measure that averages over them also keeps its per-item values under ``<key>_items`` (the same item order in every
arm of a seed), and a measure that cannot be computed is NaN with ``<key>_why``. ``claims.only`` runs the arms of
some claims only.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import torch

from lverse_core.config import Config, derive
from lverse_core.data.pixels import signed_from_uint8, uint8_from_signed
from lverse_core.report import write_json_atomic

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


def parse_claims(value: Any) -> list[int]:
    """The notebook parameter ``CLAIMS`` as a list of claim numbers: ``""`` / None (all), an int, a string such as
    ``"1 3"`` or ``"1,3"``, or a list; a ConfigError names what could not be read."""
    from lverse_core.config import ConfigError

    if value is None or value == "":
        return []
    if isinstance(value, bool):
        raise ConfigError(f"CLAIMS={value!r}: give claim numbers 1-6, e.g. \"1 3\"")
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        parts = value.replace(",", " ").split()
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ConfigError(f"CLAIMS={value!r}: give claim numbers 1-6, e.g. \"1 3\" (got a {type(value).__name__})")
    out = []
    for p in parts:
        try:
            out.append(int(p))
        except (TypeError, ValueError):
            raise ConfigError(f"CLAIMS={value!r}: {p!r} is not a claim number; give numbers 1-6, e.g. \"1 3\"") \
                from None
    return out


def arms_selected(cfg: Config) -> list[str]:
    """The arms the selected claims need, in ``AUGVAE_ARMS`` + ``BIART_ARMS`` order."""
    need = {arm for c in claims_selected(cfg) for arm in ARMS_OF_CLAIM[c]}
    return [arm for arm in (*AUGVAE_ARMS, *BIART_ARMS) if arm in need]


def claim_number(claim: str) -> int:
    """The claim number a ``CLAIM_ROWS`` claim text starts with ("1a cross-level ..." -> 1)."""
    digits = ""
    for ch in claim:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits)


def budgets(cfg: Config) -> dict[str, int]:
    """The step counts and sizes every arm of a claim shares (``claims.*``, 0 = the profile's own)."""
    c = cfg.claims
    return {"ml_steps": c.ml_steps or cfg.augvae_train.ml_steps, "sl_steps": c.sl_steps or cfg.augvae_train.sl_steps,
            "biart_steps": c.biart_steps or cfg.biart_train.steps, "eval_images": c.eval_images,
            "n_candidates": c.n_candidates or cfg.sampling.n_candidates}


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
    if cfg.data.source == "shapes" and seed != cfg.seed:
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


# -- per-seed preparation -----------------------------------------------------------------------------------------

def prepare_seed(cfg_s: Config, log: Callable[[str], None] = print, arms: Sequence[str] = AUGVAE_ARMS) -> None:
    """Data, the AugVAE family the selected ``arms`` need (ML and SL always: BiART trains on the SL's codes; SL
    from scratch, and ML with per-level codebooks with the SL finetuned from it, for claim 1), the SL codes, the
    tokenizer and the CLIP reranker of one seed; each is skipped when already finished. (Seeds after the first get
    the first seed's reranker and judge instead: ``share_instruments``.)"""
    from lverse_core.data.shapes_dataset import ensure_dataset
    from lverse_core.data.tokenizer import ensure_tokenizer
    from lverse_core.sampling.clip_reranker import ensure_reranker
    from lverse_core.training.augvae_train import train_augvae
    from lverse_core.training.pretokenize import pretokenize

    if cfg_s.data.source == "shapes":
        ensure_dataset(cfg_s)
    for variant in ("ml", "sl", "baseline"):
        if variant in ("ml", "sl") or variant in arms:
            log(f"seed {cfg_s.seed}: AugVAE {variant}")
            train_augvae(cfg_s, variant, progress=False)
    if "ml_per_level" in arms or "sl_per_level" in arms:
        for variant in ("ml", "sl"):
            log(f"seed {cfg_s.seed}: AugVAE-{variant.upper()} with one codebook per level")
            train_augvae(per_level_config(cfg_s), variant, progress=False)
    pretokenize(cfg_s)
    ensure_tokenizer(cfg_s)
    ensure_reranker(cfg_s)


def per_level_config(cfg_s: Config) -> Config:
    return derive(cfg_s, **{"augvae.codebook": "per_level", "runs_dir": f"{cfg_s.runs_dir}/ml_per_level"})


def _main_artefacts(c: Config) -> list[tuple[str, Any, Any, list[Any]]]:
    """(name, file, what it is made from, companion files) of every model of a run folder that a claims arm can
    reuse, in the order they are made (a later one's record names the earlier ones' ids)."""
    from lverse_core.data.tokenizer import tokenizer_made_from, tokenizer_path
    from lverse_core.evaluation.judge import judge_made_from, judge_path
    from lverse_core.sampling.clip_reranker import reranker_made_from, reranker_path
    from lverse_core.training.augvae_train import augvae_made_from, checkpoint_path
    from lverse_core.training.biart_train import biart_made_from
    from lverse_core.training.pretokenize import codes_dir, codes_made_from

    out = [(f"AugVAE-{v.upper()}", checkpoint_path(c, v), augvae_made_from(c, v),
            [c.runs_root / "logs" / f"augvae_{v}.csv"]) for v in ("ml", "sl")]
    out += [(f"codes ({split})", codes_dir(c) / f"{split}_codes.npy", codes_made_from(c, split),
             [codes_dir(c) / f"{split}_index.json"]) for split in ("train", "test")]
    out += [("tokenizer", tokenizer_path(c), tokenizer_made_from(c), []),
            ("CLIP reranker", reranker_path(c), reranker_made_from(c), []),
            ("judge", judge_path(c), judge_made_from(c), []),
            ("BiART", checkpoint_path(c, "biart"), biart_made_from(biart_arm_config(c, "bidirectional")),
             [c.runs_root / "logs" / "biart.csv"])]
    return out


def adopt_main_run(cfg: Config, cfg_s: Config, log: Callable[[str], None] = print, instruments: bool = True
                   ) -> list[str]:
    """Copy into the claims folder of the main run's seed every model of the main run (``runs/<profile>/``) that
    was made from exactly this seed's settings and inputs (``lverse_core.provenance``: the resolved configuration,
    precision included, and the content ids of the data set, codes and upstream checkpoints; not the kit's code
    version). The main run's BiART becomes the ``bidirectional`` arm. The main run's files are only read; what is
    absent or stale there is trained by the claims in their own folder. ``instruments``: the judge and the reranker
    too (only for the first seed: every seed is scored by the first seed's, ``share_instruments``). Returns the
    names copied."""
    import shutil

    from lverse_core import provenance

    if cfg_s.seed != cfg.seed:
        return []
    main_view = derive(cfg_s, runs_dir=cfg.runs_dir, reports_dir=cfg.reports_dir)  # this seed's settings, main files
    if main_view.runs_root == cfg_s.runs_root:
        return []
    adopted = []
    for (name, src, made, extra), (_, dst, _, extra_dst) in zip(_main_artefacts(main_view), _main_artefacts(cfg_s)):
        if name in ("judge", "CLIP reranker") and not instruments:
            continue
        if name == "BiART":
            dst, extra_dst = cfg_s.runs_root / "biart_bidirectional.pt", [cfg_s.runs_root / "logs" /
                                                                        "biart_bidirectional.csv"]
        d = provenance.decide(src, made)
        if not d.ok:
            if d.state != "missing":
                log(f"seed {cfg_s.seed}: the main run's {name} is not reused ({d.summary()}); the claims train "
                    f"their own")
            continue
        if not (dst.exists() and provenance.input_id(dst) == provenance.file_id(src)):
            for a, b in ((src, dst), (provenance.sidecar(src), provenance.sidecar(dst)), *zip(extra, extra_dst)):
                if a.exists():
                    b.parent.mkdir(parents=True, exist_ok=True)
                    tmp = b.with_name(f".{b.name}.tmp-{os.getpid()}")
                    shutil.copy2(a, tmp)  # mtime kept: the record's content cache stays valid
                    os.replace(tmp, b)
        adopted.append(name)
    if adopted:
        log(f"seed {cfg_s.seed}: reusing the main run's {', '.join(adopted)} ({cfg.runs_root})")
    return adopted


# -- measures -----------------------------------------------------------------------------------------------------

def _measures_made_from(cfg_s: Config, arm: str):
    """What the measures of ``arm`` are made from (``lverse_core.provenance``): the budgets and the resolved
    settings of the arm's model (precision included) and of the sampling, and the content ids of every file they
    read or that the arm's model is trained from (its checkpoint, the AugVAE-SL, codes and tokenizer a BiART arm
    trains on, the judge and the reranker). The kit's code version is not part of it: a commit that changes no
    setting and no input keeps every finished arm."""
    from lverse_core import provenance
    from lverse_core.data.tokenizer import tokenizer_path
    from lverse_core.evaluation.judge import judge_path
    from lverse_core.sampling.clip_reranker import reranker_path
    from lverse_core.training.augvae_train import checkpoint_path
    from lverse_core.training.pretokenize import codes_dir

    tree = cfg_s.to_dict()
    # flat dotted keys, so that a stale record names the setting that changed (``biart_train.precision fp32 -> bf16``)
    config: dict[str, Any] = {**{f"claims budget.{k}": v for k, v in budgets(cfg_s).items()}, "seed": cfg_s.seed,
                              "judge and reranker": f"seed {cfg_s.claims.seeds[0]}",
                              **{f"eval.{k}": v for k, v in tree["eval"].items()}}
    files = {"judge": judge_path(cfg_s)}
    if arm in AUGVAE_ARMS:
        cfg_m, variant = _augvae_arm(cfg_s, arm)
        files[arm] = checkpoint_path(cfg_m, variant)
        config.update(provenance.config_values(cfg_m, "augvae-sl"))
    else:
        files.update({f"BiART {arm}": cfg_s.runs_root / f"biart_{arm}.pt", "AugVAE-SL": checkpoint_path(cfg_s, "sl"),
                      "codes (train)": codes_dir(cfg_s) / "train_codes.npy",
                      "codes (test)": codes_dir(cfg_s) / "test_codes.npy", "tokenizer": tokenizer_path(cfg_s),
                      "CLIP reranker": reranker_path(cfg_s)})
        config.update(provenance.config_values(biart_arm_config(cfg_s, arm), "biart"))
        config.update({f"sampling.{k}": v for k, v in tree["sampling"].items()})
    return provenance.MadeFrom("claims-measures", provenance.plain(config),
                               {k: provenance.input_id(p) for k, p in files.items()}, f"claims measures ({arm})")


def _cached(cfg_s: Config, arm: str, compute: Callable[[], dict[str, Any]], log: Callable[[str], None] = print
            ) -> tuple[dict[str, Any], bool]:
    """``(compute(), True)`` once per arm, then ``(the saved measures, False)``: runs/.../measures_<arm>.json is
    reused only while its provenance record matches (``_measures_made_from``); when it does not, one line with
    ``log`` says what changed (e.g. ``biart_train.precision fp32 -> bf16``). Each arm is saved as soon as it is
    measured, so a run stopped after any arm resumes with the next."""
    from lverse_core import provenance

    path = cfg_s.runs_root / f"measures_{arm}.json"
    if provenance.retrain_reason(path, _measures_made_from(cfg_s, arm), log=log) is None:
        return _nan_from_null(json.loads(path.read_text())["measures"]), False
    measures = compute()
    write_json_atomic(path, {"measures": _json_safe(measures)})  # strict JSON: NaN is stored as null
    provenance.record(path, _measures_made_from(cfg_s, arm))  # the ids as they are now: a BiART arm just trained
    return _nan_from_null(json.loads(path.read_text())["measures"]), True


def _nan_from_null(value: Any) -> Any:
    """The measures as read back from strict JSON: a null number is NaN again."""
    if isinstance(value, dict):
        return {k: _nan_from_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_from_null(v) for v in value]
    return math.nan if value is None else value


def _json_safe(value: Any) -> Any:
    """NaN and infinities as JSON ``NaN`` (Python's json reads them back as floats), tensors and numpy numbers as
    plain floats and lists."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if torch.is_tensor(value):
        return _json_safe(value.tolist())
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _test_set(cfg_s: Config) -> dict[str, Any]:
    """The first ``claims.eval_images`` test images (uint8), their ids, ground-truth objects and first captions:
    the items every per-item measure of the seed follows, in this order."""
    from lverse_core import data

    ds = data.CaptionImageDataset(cfg_s, "test", train=False)
    attrs = data.load_attributes(cfg_s)
    items = [ds[i] for i in range(min(cfg_s.claims.eval_images, len(ds)))]
    ids = [int(it["image_id"]) for it in items]
    return {"images": torch.stack([uint8_from_signed(it["image"]) for it in items]), "ids": ids,
            "objects": [attrs[i] for i in ids], "captions": [it["captions"][0] for it in items]}


def _items(out: dict[str, Any], key: str, values: Sequence[float]) -> None:
    """``out[key]`` = the mean of ``values`` and ``out[key + "_items"]`` = the values (one per test item)."""
    v = [float(x) for x in values]
    out[f"{key}_items"] = v
    out[key] = sum(v) / len(v) if v else math.nan


def _nan(out: dict[str, Any], key: str, why: str) -> None:
    out[key], out[f"{key}_why"] = math.nan, why


def _augvae_arm(cfg_s: Config, arm: str) -> tuple[Config, str]:
    """The configuration and variant of an AugVAE arm's checkpoint."""
    variant = {"ml": "ml", "ml_per_level": "ml", "sl": "sl", "sl_per_level": "sl", "baseline": "baseline"}[arm]
    return (per_level_config(cfg_s) if arm.endswith("_per_level") else cfg_s), variant


def reconstruction_measures(cfg_s: Config, model, test: Mapping[str, Any], judge) -> dict[str, Any]:
    """Table 1's PSNR and SSIM (per test image, and their means), FID, judged right (per image and the share), and
    for ML the share of codes several levels use (a description of the model, compared by no row)."""
    from lverse_core.evaluation.fid import compute_fid
    from lverse_core.evaluation.reconstruction import psnr, reconstruct, sharing_summary, shared_code_matrix, ssim
    from lverse_core.evaluation.verdicts import judged_correct

    real = signed_from_uint8(test["images"])
    recon, codes = reconstruct(model, real)
    recon = recon.clamp(-1, 1)
    out: dict[str, Any] = {}
    _items(out, "psnr_db", psnr(real, recon).tolist())
    _items(out, "ssim", ssim(real, recon).tolist())
    out["fid"] = compute_fid(test["images"], uint8_from_signed(recon), cfg_s)
    _items(out, "judged_right", judged_correct(judge, uint8_from_signed(recon), test["captions"])["per_image"])
    if model.variant == "ml":
        K = model.quantizer.codebook_size
        out["codes_shared_by_levels"] = float(sharing_summary(shared_code_matrix(codes, K), codes, K)
                                              ["shared_by_2_or_more"])
    return out


def _own_quality(cfg_m: Config, model, steps: int, log_csv) -> dict[str, Any]:
    """What every arm reports beside its measures: parameters, steps and training seconds (``_train_seconds``)."""
    return {"parameters": int(sum(p.numel() for p in model.parameters())), "steps": int(steps),
            "train_seconds": _train_seconds(log_csv)}


def _train_seconds(log_csv) -> float:
    """The wall time of a training from its CSV log's ``elapsed_s`` column (summed over the runs a resumed training
    took: each restarts its clock), NaN when there is no log."""
    import csv
    from pathlib import Path

    path = Path(log_csv)
    if not path.exists():
        return math.nan
    total, last = 0.0, 0.0
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    t = float(row.get("elapsed_s") or "nan")
                except ValueError:
                    continue
                if math.isnan(t):
                    continue
                if t < last:  # a resumed run: a new clock
                    total += last
                last = t
    except OSError:
        return math.nan
    return total + last


def augvae_measures(cfg_s: Config, arm: str, test: Mapping[str, Any], judge, log: Callable[[str], None] = print
                    ) -> dict[str, Any]:
    from lverse_core.training.augvae_train import load_augvae

    cfg_m, variant = _augvae_arm(cfg_s, arm)
    steps = {"ml": cfg_m.augvae_train.ml_steps, "sl": cfg_m.augvae_train.sl_steps,
             "baseline": cfg_m.augvae_train.baseline_steps}[variant]
    started = time.monotonic()

    def compute() -> dict[str, Any]:
        model = load_augvae(cfg_m, variant)
        out = reconstruction_measures(cfg_s, model, test, judge)
        out.update(_own_quality(cfg_m, model, steps, cfg_m.runs_root / "logs" / f"augvae_{variant}.csv"))
        return out

    out, fresh = _cached(cfg_s, arm, compute, log)
    progress(f"seed {cfg_s.seed} · AugVAE {arm} · {_trained(out, fresh, started)} · PSNR {out['psnr_db']:.2f} dB · "
             f"judged right {out['judged_right']:.2f}", log)
    return out


def _trained(out: Mapping[str, Any], fresh: bool, started: float) -> str:
    secs = out.get("train_seconds", math.nan)
    took = "" if secs is None or math.isnan(secs) else f" in {secs:,.0f} s"
    how = "measured" if fresh else "reused"
    return f"{how}: {out.get('steps', 0):,} steps{took}" + (f" (this run {time.monotonic() - started:,.0f} s)"
                                                             if fresh else "")


def progress(line: str, log: Callable[[str], None] = print) -> None:
    """One progress line: with ``log`` (the notebook's output) and, inside a Jupyter kernel, also on the terminal
    that runs it (``python -m lverse_core run`` does not forward cell output): the kernel's original stderr."""
    log(line)
    fd = getattr(sys.stderr, "_original_stdstream_copy", None)
    if isinstance(fd, int):
        try:
            os.write(fd, (line + "\n").encode())
        except OSError:
            pass


def _bleu_cider(preds: Mapping[int, str], refs: Mapping[int, Sequence[str]]) -> dict[str, Any]:
    """BLEU-4 and CIDEr (pycocoevalcap's scorers) on lower-cased text with the full stop split off: the same
    tokenization for every arm, no Java needed. The corpus values, and per caption (``_items``, in the order of
    ``preds``) the scorers' own per-sentence scores (BLEU-4's corpus value is not their mean; CIDEr's is)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    def tok(s: str) -> str:
        return " ".join(s.lower().replace(".", " ").split())

    gts = {k: [tok(r) for r in refs[k]] for k in preds}
    res = {k: [tok(p) or "empty"] for k, p in preds.items()}
    bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
    cider, cider_items = Cider().compute_score(gts, res)
    return {"bleu4": 100 * float(bleu[3]), "bleu4_items": [100 * float(x) for x in bleu_items[3]],
            "cider": 100 * float(cider), "cider_items": [100 * float(x) for x in cider_items]}


def biart_measures(cfg_s: Config, arm: str, test: Mapping[str, Any], judge, log: Callable[[str], None] = print
                   ) -> dict[str, Any]:
    """Train BiART ``arm`` (or load it) and measure: captions naming every object right, BLEU-4 and CIDEr of the
    truncated and the full-length samples, images judged right and their FID (top-1 of the profile's candidates
    under its reranking rule), the same from a single sample, the held-out NLL of each direction per test pair, and
    for the bidirectional model KID of generated images and of SL reconstructions over ``eval.blur_radii``."""
    cfg_a = biart_arm_config(cfg_s, arm)
    started = time.monotonic()

    def compute() -> dict[str, Any]:
        log(f"seed {cfg_s.seed}: BiART {arm}")
        model, parts = _train_arm(cfg_s, arm)
        out: dict[str, Any] = _own_quality(cfg_a, model, cfg_a.biart_train.steps,
                                           cfg_s.runs_root / "logs" / f"biart_{arm}.csv")
        out.update(_nll_measures(cfg_s, model, parts, test, arm))
        if arm != "t2i_only":
            out.update(_caption_measures(cfg_s, model, parts, test))
        if arm != "i2t_only":
            out.update(_image_measures(cfg_s, model, parts, test, judge, blur=arm == "bidirectional"))
        return out

    out, fresh = _cached(cfg_s, arm, compute, log)
    shown = [f"{name} {out[key]:.2f}" for name, key in (("captions", "captions_right"), ("images", "images_right"))
             if key in out]
    progress(" · ".join([f"seed {cfg_s.seed} · BiART {arm} · {_trained(out, fresh, started)}", *shown]), log)
    return out


def _train_arm(cfg_s: Config, arm: str):
    from lverse_core.data.tokenizer import TextTokenizer
    from lverse_core.sampling.candidates import load_augvae_decoder
    from lverse_core.sampling.clip_reranker import load_reranker
    from lverse_core.training.biart_train import paired_tokens, train_biart

    device = cfg_s.resolved_device()
    tok = TextTokenizer.load(cfg_s.runs_root / "tokenizer.json")
    cfg_a = biart_arm_config(cfg_s, arm)
    model = train_biart(cfg_a, paired_tokens(cfg_s, tok, "train"), text_vocab_size=tok.vocab_size,
                        pad_id=tok.pad_id, path=cfg_s.runs_root / f"biart_{arm}.pt", log_name=f"biart_{arm}")
    parts = {"tokenizer": tok, "scorer": load_reranker(cfg_s, device), "decode": load_augvae_decoder(cfg_s, device)}
    return model.to(device), parts


def _test_codes(cfg_s: Config, test: Mapping[str, Any]):
    from lverse_core.training.pretokenize import load_codes

    codes, ids = load_codes(cfg_s, "test")
    row = {int(i): k for k, i in enumerate(ids)}
    return codes[[row[i] for i in test["ids"]]]


def _nll_measures(cfg_s, model, parts, test, arm: str) -> dict[str, Any]:
    """Held-out NLL (nats per target token, teacher-forced) of each test item's first caption and its image codes:
    image->text (``nll_i2t``) and text->image (``nll_t2i``), per item and their means; a one-direction model has
    no value for the direction it never trained (NaN with the reason)."""
    from lverse_core.evaluation.likelihood import heldout_nll_per_pair
    from lverse_core.training.biart_train import PairedTokens

    codes = torch.from_numpy(_test_codes(cfg_s, test).reshape(len(test["ids"]), -1).astype("int64"))
    pairs = PairedTokens(parts["tokenizer"].encode(list(test["captions"])), torch.arange(len(codes)), codes)
    per = heldout_nll_per_pair(model, pairs, cfg_s.resolved_device())
    out: dict[str, Any] = {}
    for d in ("i2t", "t2i"):
        if arm == f"{'t2i' if d == 'i2t' else 'i2t'}_only":
            _nan(out, f"nll_{d}", f"the {arm} control is never trained in the {d} direction")
        else:
            _items(out, f"nll_{d}", per[d].tolist())
    return out


def caption_rights(preds: Mapping[int, str], test: Mapping[str, Any]) -> list[float]:
    """1.0 / 0.0 per test item (``test["ids"]`` order): does the caption name exactly the image's objects?"""
    from lverse_core.data.shapes import caption_correct

    return [float(caption_correct(preds[i], list(objs))) for i, objs in zip(test["ids"], test["objects"])]


def _caption_measures(cfg_s, model, parts, test) -> dict[str, Any]:
    from lverse_core.data import caption_records
    from lverse_core.sampling.generate import generate_captions

    codes = _test_codes(cfg_s, test)
    refs = {int(r["image_id"]): r["captions"] for r in caption_records(cfg_s, "test")}
    out: dict[str, Any] = {}
    real = signed_from_uint8(test["images"])  # what the reranker scores the captions against
    reranked = generate_captions(cfg_s, model, parts["tokenizer"], codes, test["ids"], parts["scorer"], images=real)
    truncated = {int(r["image_id"]): r["caption"] for r in reranked}
    full = {int(r["image_id"]): r["caption_untruncated"] for r in reranked}
    _items(out, "captions_right", caption_rights(truncated, test))
    for name, preds in (("truncated", truncated), ("untruncated", full)):
        ordered = {i: preds[i] for i in test["ids"]}
        for k, v in _bleu_cider(ordered, refs).items():
            key = k.replace("_items", "")
            out[f"{key}_{name}" + ("_items" if k.endswith("_items") else "")] = v
    single = generate_captions(_single_sample(cfg_s), model, parts["tokenizer"], codes, test["ids"], None)
    _items(out, "captions_right_single", caption_rights({int(r["image_id"]): r["caption"] for r in single}, test))
    return out


def _single_sample(cfg_s: Config) -> Config:
    """The same sampling with one candidate per prompt in both directions (claim 5's control: nothing to rerank)."""
    return derive(cfg_s, **{"sampling.n_candidates": 1, "sampling.caption_candidates": 1})


def _image_measures(cfg_s, model, parts, test, judge, blur: bool) -> dict[str, Any]:
    from lverse_core.evaluation.fid import compute_fid
    from lverse_core.evaluation.verdicts import judged_correct
    from lverse_core.sampling.generate import generate_images

    prompts, pids = test["captions"], [i * 100 for i in test["ids"]]
    out: dict[str, Any] = {}
    runs = {"": (cfg_s, parts["scorer"]), "_single": (_single_sample(cfg_s), None)}
    for suffix, (cfg_r, scorer) in runs.items():
        codes, _ = generate_images(cfg_r, model, parts["tokenizer"], prompts, pids, scorer, parts["decode"])
        with torch.no_grad():
            images = uint8_from_signed(torch.cat([parts["decode"](codes[i: i + 64, 0]).cpu()
                                                  for i in range(0, len(codes), 64)]))
        _items(out, f"images_right{suffix}", judged_correct(judge, images, prompts)["per_image"])
        out[f"image_fid{suffix}"] = compute_fid(test["images"], images, cfg_s)
        if suffix == "" and blur:
            out.update(_blur_measures(cfg_s, test, images))
    return out


def kid(real_features: torch.Tensor, fake_features: torch.Tensor, subsets: int = 100, seed: int = 0) -> float:
    """KID (torch-fidelity's subset estimator: the polynomial-kernel MMD averaged over ``subsets`` random subsets of
    ``min(n_real, n_fake, 1000)`` images each), unbiased at any sample size, unlike FID's covariances."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

    size = min(len(real_features), len(fake_features), 1000)
    if size < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(real_features)} and {len(fake_features)}")
    return float(kid_features_to_metric(real_features.double().cpu(), fake_features.double().cpu(),
                                        kid_subsets=subsets, kid_subset_size=size, rng_seed=seed,
                                        verbose=False)[KEY_METRIC_KID_MEAN])


def relative_fall(values: Mapping[float, float]) -> tuple[float, str]:
    """``(1 - value(largest radius) / value(smallest radius), "")``; NaN with the reason when the smallest radius's
    value is not positive (a fall relative to it means nothing) or a value is not finite."""
    radii = sorted(values)
    first, last = values[radii[0]], values[radii[-1]]
    if not (math.isfinite(first) and math.isfinite(last)):
        return math.nan, f"KID at radius {radii[0]:g} or {radii[-1]:g} is not finite ({first}, {last})"
    if first <= 0:
        return math.nan, (f"KID at radius {radii[0]:g} is {first:.3g} (not positive: the sets cannot be told apart "
                          f"at this sample size), so a relative fall is undefined")
    return 1.0 - last / first, ""


def _blur_measures(cfg_s, test, generated) -> dict[str, Any]:
    """KID of generated images and of SL reconstructions of the same real images (the decoder's ceiling) against
    the real ones, every set blurred alike by each of ``eval.blur_radii``, and the relative fall from the smallest
    to the largest radius (paper §4.3, Table 3, there with FID-k)."""
    from lverse_core.evaluation.fid import FeatureExtractor, blur_batch
    from lverse_core.evaluation.reconstruction import reconstruct
    from lverse_core.training.augvae_train import load_augvae

    radii = sorted(float(r) for r in cfg_s.eval.blur_radii)
    recon, _ = reconstruct(load_augvae(cfg_s, "sl"), signed_from_uint8(test["images"]))
    extractor = FeatureExtractor(cfg_s)

    def features(images: torch.Tensor, r: float) -> torch.Tensor:
        return torch.cat([extractor(blur_batch(images[i: i + 64], r)).cpu() for i in range(0, len(images), 64)])

    out: dict[str, Any] = {}
    sets = {"generated": generated, "reconstructions": uint8_from_signed(recon.clamp(-1, 1))}
    for name, fake in sets.items():
        values = {}
        for r in radii:
            try:
                values[r] = kid(features(test["images"], r), features(fake, r))
            except ValueError as e:
                values[r] = math.nan
                out[f"kid_{name}_blur{r:g}_why"] = str(e)
            out[f"kid_{name}_blur{r:g}"] = values[r]
        fall, why = relative_fall(values)
        out[f"kid_fall_{name}"] = fall
        if why:
            out[f"kid_fall_{name}_why"] = why
    return out


# -- the claims -------------------------------------------------------------------------------------------------------

_RECON = (("PSNR (dB)", "psnr_db", "higher"), ("SSIM", "ssim", "higher"), ("FID", "fid", "lower"),
          ("reconstructions judged right", "judged_right", "higher"))
_CLAIM4 = "4 caption truncation: truncated vs full-length samples (paper: BLEU-4 up, CIDEr down)"
_CLAIM5 = "5 CLIP reranking: top-1 of N vs one sample (the profile's reranking rule)"
# (claim, measure label, (method arm, key), (control arm, key), the direction the paper predicts). The sharing of
# codes across levels is no row (0 for the per-level control by construction): ``codes_shared_by_levels`` in the
# ML arms' measures describes it.
CLAIM_ROWS: list[tuple[str, str, tuple[str, str], tuple[str, str], str]] = [
    *[("1a cross-level augmentation: SL from the shared-codebook ML vs SL from the per-level ML (same steps)", label,
       ("sl", key), ("sl_per_level", key), better) for label, key, better in _RECON],
    *[("1a' the same at the ML level: one shared codebook vs one per level (AugVAE-ML)", label, ("ml", key),
       ("ml_per_level", key), better) for label, key, better in _RECON],
    *[("1b AugVAE-SL finetuned from ML vs the same SL from scratch (ML + SL steps)", label, ("sl", key),
       ("baseline", key), better) for label, key, better in _RECON],
    *[(f"2 segment embedding vs none ({scheme})", label, (arm, key), (f"{arm}_no_segment" if arm != "bidirectional"
                                                                       else "no_segment", key), better)
      for scheme, arm in (("per-modality positions", "bidirectional"), ("one position table", "shared_positions"))
      for label, key, better in (("captions right", "captions_right", "higher"),
                                 ("images judged right", "images_right", "higher"),
                                 ("held-out NLL image->text", "nll_i2t", "lower"),
                                 ("held-out NLL text->image", "nll_t2i", "lower"))],
    *[("3 one bidirectional model vs one-direction models (equal steps per direction)", label, ("bidirectional", key),
       (control, key), better) for label, key, control, better in (
        ("captions right", "captions_right", "i2t_only", "higher"),
        ("BLEU-4", "bleu4_truncated", "i2t_only", "higher"),
        ("held-out NLL image->text", "nll_i2t", "i2t_only", "lower"),
        ("images judged right", "images_right", "t2i_only", "higher"),
        ("image FID", "image_fid", "t2i_only", "lower"),
        ("held-out NLL text->image", "nll_t2i", "t2i_only", "lower"))],
    (_CLAIM4, "BLEU-4", ("bidirectional", "bleu4_truncated"), ("bidirectional", "bleu4_untruncated"), "higher"),
    (_CLAIM4, "CIDEr", ("bidirectional", "cider_truncated"), ("bidirectional", "cider_untruncated"), "lower"),
    (_CLAIM5, "captions right", ("bidirectional", "captions_right"), ("bidirectional", "captions_right_single"),
     "higher"),
    (_CLAIM5, "images judged right", ("bidirectional", "images_right"), ("bidirectional", "images_right_single"),
     "higher"),
    ("6 blur: generated images' KID falls faster than the reconstructions' (relative fall, smallest to largest "
     "radius)", "relative KID fall", ("bidirectional", "kid_fall_generated"),
     ("bidirectional", "kid_fall_reconstructions"), "higher"),
]


def claim_rows(cfg: Config) -> list[tuple[str, str, tuple[str, str], tuple[str, str], str]]:
    """The rows of ``CLAIM_ROWS`` of the claims this run measures (``claims.only``)."""
    chosen = set(claims_selected(cfg))
    return [row for row in CLAIM_ROWS if claim_number(row[0]) in chosen]


def run_claims(cfg: Config, log: Callable[[str], None] = print) -> dict[int, dict[str, dict[str, Any]]]:
    """Every arm of the selected claims (``claims.only``) of every seed: prepared, trained and measured, each arm
    saved as soon as it is measured (a stopped run resumes with the next arm; finished ones are reused). One
    progress line per arm (``progress``)."""
    from lverse_core.evaluation.judge import ensure_judge

    if cfg.data.source != "shapes":
        raise ValueError(f"the claims notebook measures with the embedded data set's ground truth (the attribute "
                         f"judge, captions naming every object); data.source is {cfg.data.source!r}. Run it on the "
                         f"ci, smoke or gpu profile; on real data its judged measures have no ground truth yet")
    arms = arms_selected(cfg)
    out: dict[int, dict[str, dict[str, Any]]] = {}
    first = seed_config(cfg, cfg.claims.seeds[0])
    for seed in cfg.claims.seeds:
        cfg_s = seed_config(cfg, seed)
        if seed != first.seed:
            share_instruments(first, cfg_s)
        adopt_main_run(cfg, cfg_s, log, instruments=seed == first.seed)
        prepare_seed(cfg_s, log, arms)
        judge, test = ensure_judge(cfg_s), _test_set(cfg_s)
        out[seed] = {}
        for arm in arms:
            if arm in AUGVAE_ARMS:
                out[seed][arm] = augvae_measures(cfg_s, arm, test, judge, log)
            else:
                out[seed][arm] = biart_measures(cfg_s, arm, test, judge, log)
    return out


SHARED = ("judge.pt", "clip_reranker.pt")


def share_instruments(first: Config, cfg_s: Config) -> None:
    """Give seed ``cfg_s`` the first seed's attribute judge and CLIP reranker (copied into its run folder, where
    every measure looks for them). Both are fixed instruments, trained once on the first seed's draw: the seeds
    draw from the same scene generator, every arm of a seed is scored by the same two, and a run trains each once
    instead of once per seed (~2 min of a 2-core run)."""
    import filecmp
    import os
    import shutil

    from lverse_core import provenance
    from lverse_core.evaluation.judge import judge_made_from
    from lverse_core.sampling.clip_reranker import reranker_made_from

    made_from_of = {"judge.pt": judge_made_from, "clip_reranker.pt": reranker_made_from}

    cfg_s.runs_root.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        src, dst = first.runs_root / name, cfg_s.runs_root / name
        if not src.exists():
            raise FileNotFoundError(f"{src} does not exist: seed {first.seed}, the first of claims.seeds, trains "
                                    f"the {name} every seed shares; run its seed first")
        if not (dst.exists() and filecmp.cmp(src, dst, shallow=False)):
            tmp = dst.with_name(f".{name}.tmp-{os.getpid()}")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        # the copy stands for this seed's instrument by design: its record says so (and where it came from), so the
        # seed's ensure_judge / ensure_reranker reuse it instead of training their own
        provenance.record(dst, made_from_of[name](cfg_s), made_by="shared", shared_from=str(src),
                          shared_from_id=provenance.file_id(src))
