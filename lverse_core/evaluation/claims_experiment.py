"""The experiment behind the claims notebook (07): every claim's method and control, trained per seed, measured alike.

Per seed ``s`` (``claims.seeds``) everything is redrawn: the embedded data set (``data/<profile>+claims-s<s>``, a
real data set keeps its files), initialisation and batch order. The runs of a seed live in
``runs/<profile>/claims/s<s>/``:

    augvae_ml.pt, augvae_sl.pt, vqvae_baseline.pt      AugVAE-ML (one shared codebook), SL finetuned from it, and
                                                       the same SL trained from scratch for ML + SL steps
    ml_per_level/augvae_ml.pt                          AugVAE-ML with one codebook per level (same total codes)
    codes/, tokenizer.json                             the SL codes BiART trains on, its tokenizer
    clip_reranker.pt, judge.pt                         the CLIP reranker and the attribute judge: trained on the
                                                       first seed, copied to the others (``share_instruments``)
    biart_<arm>.pt                                     one BiART per arm of ``BIART_ARMS``
    measures_<arm>.json                                what each arm measured (reused while its budget is the same)

Budgets (``claims.*``) default to the profile's own step counts; the smoke profile uses smaller ones and says so.
Measures are taken on the first ``claims.eval_images`` test images (captions) and their first captions (prompts).
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping, Sequence

import torch

from lverse_core.config import Config, derive
from lverse_core.data.pixels import signed_from_uint8, uint8_from_signed
from lverse_core.report import write_json_atomic

AUGVAE_ARMS = ("ml", "ml_per_level", "sl", "baseline")
BIART_ARMS = ("bidirectional", "no_segment", "shared_positions", "shared_positions_no_segment", "t2i_only",
              "i2t_only")


def budgets(cfg: Config) -> dict[str, int]:
    """The step counts and sizes every arm of a claim shares (``claims.*``, 0 = the profile's own)."""
    c = cfg.claims
    return {"ml_steps": c.ml_steps or cfg.augvae_train.ml_steps, "sl_steps": c.sl_steps or cfg.augvae_train.sl_steps,
            "biart_steps": c.biart_steps or cfg.biart_train.steps, "eval_images": c.eval_images,
            "n_candidates": c.n_candidates or cfg.sampling.n_candidates}


def seed_config(cfg: Config, seed: int) -> Config:
    """The configuration of one seed's runs: its own data draw and run folder, the claims' budgets."""
    b = budgets(cfg)
    over: dict[str, Any] = {
        "seed": seed, "runs_dir": f"{cfg.runs_dir}/claims/s{seed}",
        "reports_dir": f"{cfg.runs_dir}/claims/s{seed}/reports",
        "augvae_train.ml_steps": b["ml_steps"], "augvae_train.sl_steps": b["sl_steps"],
        "augvae_train.baseline_steps": b["ml_steps"] + b["sl_steps"], "biart_train.steps": b["biart_steps"],
        # the paper's reranking for both directions: claims.n_candidates candidates, clip-score alone
        "sampling.n_candidates": b["n_candidates"], "sampling.caption_candidates": 0,
        "sampling.caption_likelihood_weight": 0.0, "sampling.image_likelihood_weight": 0.0,
        # the tokenizer recipe the claims' short budgets were measured with (README, "The claims scorecard"): no
        # edge term, no unquantized start (sized for the main run's 1,300 SL steps, not the claims' 280)
        "augvae_train.edge_weight": 0.0, "augvae_train.unquantized_steps": 0}
    if cfg.data.source == "shapes":
        over["data.root"] = f"{cfg.data.root}+claims-s{seed}"
    return derive(cfg, **over)


def biart_arm_config(cfg_s: Config, arm: str) -> Config:
    """BiART of ``arm``: the paper's model, an ablation of the segment embedding / position scheme, or a
    one-direction control with half the steps (equal steps per direction and equal total compute)."""
    steps = cfg_s.biart_train.steps
    arms: dict[str, dict[str, Any]] = {
        "bidirectional": {},
        "no_segment": {"biart.segment_embedding": False},
        "shared_positions": {"biart.positions": "shared"},
        "shared_positions_no_segment": {"biart.positions": "shared", "biart.segment_embedding": False},
        "t2i_only": {"biart_train.direction": "t2i", "biart_train.steps": max(1, steps // 2)},
        "i2t_only": {"biart_train.direction": "i2t", "biart_train.steps": max(1, steps // 2)},
    }
    if arm not in arms:
        raise ValueError(f"unknown BiART arm {arm!r}; choose from {', '.join(arms)}")
    return derive(cfg_s, **arms[arm])


# -- per-seed preparation -----------------------------------------------------------------------------------------

def prepare_seed(cfg_s: Config, log: Callable[[str], None] = print) -> None:
    """Data, the AugVAE family (ML, SL from ML, SL from scratch, ML with per-level codebooks), the SL codes, the
    tokenizer and the CLIP reranker of one seed; each is skipped when already finished. (Seeds after the first
    get the first seed's reranker and judge instead: ``share_instruments``.)"""
    from lverse_core.data.shapes_dataset import ensure_dataset
    from lverse_core.data.tokenizer import ensure_tokenizer
    from lverse_core.sampling.clip_reranker import ensure_reranker
    from lverse_core.training.augvae_train import train_augvae
    from lverse_core.training.pretokenize import pretokenize

    if cfg_s.data.source == "shapes":
        ensure_dataset(cfg_s)
    for variant in ("ml", "sl", "baseline"):
        log(f"seed {cfg_s.seed}: AugVAE {variant}")
        train_augvae(cfg_s, variant, progress=False)
    log(f"seed {cfg_s.seed}: AugVAE-ML with one codebook per level")
    train_augvae(per_level_config(cfg_s), "ml", progress=False)
    pretokenize(cfg_s)
    ensure_tokenizer(cfg_s)
    ensure_reranker(cfg_s)


def per_level_config(cfg_s: Config) -> Config:
    return derive(cfg_s, **{"augvae.codebook": "per_level", "runs_dir": f"{cfg_s.runs_dir}/ml_per_level"})


# -- measures -----------------------------------------------------------------------------------------------------

def _measures_made_from(cfg_s: Config, arm: str):
    """What the measures of ``arm`` are made from (``lverse_core.provenance``): the budgets and the settings of the
    arm's model, and the ids of every file they read or that the arm's model is trained from (its checkpoint, the
    AugVAE-SL, codes and tokenizer a BiART arm trains on, the judge and the reranker)."""
    from lverse_core import provenance
    from lverse_core.data.tokenizer import tokenizer_path
    from lverse_core.evaluation.judge import judge_path
    from lverse_core.sampling.clip_reranker import reranker_path
    from lverse_core.training.augvae_train import checkpoint_path
    from lverse_core.training.pretokenize import codes_dir

    config: dict[str, Any] = {"budgets": budgets(cfg_s), "seed": cfg_s.seed,
                              "judge and reranker": f"seed {cfg_s.claims.seeds[0]}"}
    files = {"judge": judge_path(cfg_s)}
    if arm in AUGVAE_ARMS:
        files[arm] = checkpoint_path(per_level_config(cfg_s), "ml") if arm == "ml_per_level" \
            else checkpoint_path(cfg_s, arm)
        config["augvae"] = provenance.config_values(cfg_s, "augvae-sl")
    else:
        files.update({f"BiART {arm}": cfg_s.runs_root / f"biart_{arm}.pt", "AugVAE-SL": checkpoint_path(cfg_s, "sl"),
                      "codes (train)": codes_dir(cfg_s) / "train_codes.npy",
                      "codes (test)": codes_dir(cfg_s) / "test_codes.npy", "tokenizer": tokenizer_path(cfg_s),
                      "CLIP reranker": reranker_path(cfg_s)})
        config["biart"] = provenance.config_values(biart_arm_config(cfg_s, arm), "biart")
        config["sampling"] = cfg_s.to_dict()["sampling"]
    return provenance.MadeFrom("claims-measures", provenance.plain(config),
                               {k: provenance.input_id(p) for k, p in files.items()}, f"claims measures ({arm})")


def _cached(cfg_s: Config, arm: str, compute: Callable[[], dict[str, float]]) -> dict[str, float]:
    """``compute()`` once per arm: runs/.../measures_<arm>.json is reused only while its provenance record matches
    (the same budgets and settings, and the same checkpoints, codes and instruments: ``_measures_made_from``)."""
    from lverse_core import provenance

    path = cfg_s.runs_root / f"measures_{arm}.json"
    if provenance.retrain_reason(path, _measures_made_from(cfg_s, arm)) is None:
        return json.loads(path.read_text())["measures"]
    measures = compute()
    write_json_atomic(path, {"measures": measures})
    provenance.record(path, _measures_made_from(cfg_s, arm))  # the ids as they are now: a BiART arm just trained
    return measures


def _test_set(cfg_s: Config) -> dict[str, Any]:
    """The first ``claims.eval_images`` test images (uint8), their ids, ground-truth objects and first captions."""
    from lverse_core import data

    ds = data.CaptionImageDataset(cfg_s, "test", train=False)
    attrs = data.load_attributes(cfg_s)
    items = [ds[i] for i in range(min(cfg_s.claims.eval_images, len(ds)))]
    ids = [int(it["image_id"]) for it in items]
    return {"images": torch.stack([uint8_from_signed(it["image"]) for it in items]), "ids": ids,
            "objects": [attrs[i] for i in ids], "captions": [it["captions"][0] for it in items]}


def reconstruction_measures(cfg_s: Config, model, test: Mapping[str, Any], judge) -> dict[str, float]:
    """Table 1's PSNR, SSIM and FID (``reconstruction.evaluate_reconstructions``), judged right, and for ML the codes
    several levels use."""
    from lverse_core.evaluation.verdicts import judged_correct
    from lverse_core.evaluation.reconstruction import evaluate_reconstructions, sharing_summary, shared_code_matrix

    real = signed_from_uint8(test["images"])
    res, kept = evaluate_reconstructions(cfg_s, {"model": model}, real, keep=len(real))
    out = {k: res["model"][k] for k in ("psnr_db", "ssim", "fid")}
    out["judged_right"] = judged_correct(judge, uint8_from_signed(kept["model"]), test["captions"])["judged_correct"]
    if model.variant == "ml":
        with torch.no_grad():
            codes = model.encode(real.to(next(model.parameters()).device))
        codes = [c.cpu() for c in codes]
        K = model.quantizer.codebook_size
        out["codes_shared_by_levels"] = float(sharing_summary(shared_code_matrix(codes, K), codes, K)
                                              ["shared_by_2_or_more"])
    return out


def augvae_measures(cfg_s: Config, arm: str, test: Mapping[str, Any], judge) -> dict[str, float]:
    from lverse_core.training.augvae_train import load_augvae

    def compute() -> dict[str, float]:
        if arm == "ml_per_level":
            model = load_augvae(per_level_config(cfg_s), "ml")
        else:
            model = load_augvae(cfg_s, arm)
        return reconstruction_measures(cfg_s, model, test, judge)

    return _cached(cfg_s, arm, compute)


def _bleu_cider(preds: Mapping[int, str], refs: Mapping[int, Sequence[str]]) -> dict[str, float]:
    """BLEU-4 and CIDEr (pycocoevalcap's scorers) on lower-cased text with the full stop split off: the same
    tokenization for every arm, no Java needed."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    def tok(s: str) -> str:
        return " ".join(s.lower().replace(".", " ").split())

    gts = {k: [tok(r) for r in refs[k]] for k in preds}
    res = {k: [tok(p) or "empty"] for k, p in preds.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": 100 * float(bleu[3]), "cider": 100 * float(cider)}


def biart_measures(cfg_s: Config, arm: str, test: Mapping[str, Any], judge, log: Callable[[str], None] = print
                   ) -> dict[str, float]:
    """Train BiART ``arm`` (or load it) and measure: captions naming every object right, BLEU-4 and CIDEr of the
    truncated and the full-length samples, images judged right and their FID (CLIP top-1 of
    ``claims.n_candidates``), the same from a single sample, and FID-k of generated images and of SL
    reconstructions over ``eval.blur_radii``."""

    def compute() -> dict[str, float]:
        log(f"seed {cfg_s.seed}: BiART {arm}")
        model, parts = _train_arm(cfg_s, arm)
        out: dict[str, float] = {}
        if arm != "t2i_only":
            out.update(_caption_measures(cfg_s, model, parts, test))
        if arm != "i2t_only":
            out.update(_image_measures(cfg_s, model, parts, test, judge, blur=arm == "bidirectional"))
        return out

    return _cached(cfg_s, arm, compute)


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


def _caption_measures(cfg_s, model, parts, test) -> dict[str, float]:
    from lverse_core.evaluation.metrics import caption_accuracy
    from lverse_core.sampling.generate import generate_captions
    from lverse_core.training.pretokenize import load_codes
    from lverse_core.data import caption_records

    codes, ids = load_codes(cfg_s, "test")
    row = {int(i): k for k, i in enumerate(ids)}
    pick = [row[i] for i in test["ids"]]
    objects = dict(zip(test["ids"], test["objects"]))
    refs = {int(r["image_id"]): r["captions"] for r in caption_records(cfg_s, "test")}
    out = {}
    real = signed_from_uint8(test["images"])  # what the reranker scores the captions against
    reranked = generate_captions(cfg_s, model, parts["tokenizer"], codes[pick], test["ids"], parts["scorer"],
                                 images=real)
    truncated = {int(r["image_id"]): r["caption"] for r in reranked}
    full = {int(r["image_id"]): r["caption_untruncated"] for r in reranked}
    out["captions_right"] = caption_accuracy(truncated, objects)
    for name, preds in (("truncated", truncated), ("untruncated", full)):
        for k, v in _bleu_cider(preds, refs).items():
            out[f"{k}_{name}"] = v
    single = generate_captions(derive(cfg_s, **{"sampling.n_candidates": 1}), model, parts["tokenizer"],
                               codes[pick], test["ids"], None)
    out["captions_right_single"] = caption_accuracy({int(r["image_id"]): r["caption"] for r in single}, objects)
    return out


def _image_measures(cfg_s, model, parts, test, judge, blur: bool) -> dict[str, float]:
    from lverse_core.evaluation.fid import compute_fid
    from lverse_core.evaluation.verdicts import judged_correct
    from lverse_core.sampling.generate import generate_images

    prompts, pids = test["captions"], [i * 100 for i in test["ids"]]
    out = {}
    runs = {"": (cfg_s, parts["scorer"]), "_single": (derive(cfg_s, **{"sampling.n_candidates": 1}), None)}
    for suffix, (cfg_r, scorer) in runs.items():
        codes, _ = generate_images(cfg_r, model, parts["tokenizer"], prompts, pids, scorer, parts["decode"])
        with torch.no_grad():
            images = uint8_from_signed(torch.cat([parts["decode"](codes[i: i + 64, 0]).cpu()
                                                  for i in range(0, len(codes), 64)]))
        out[f"images_right{suffix}"] = judged_correct(judge, images, prompts)["judged_correct"]
        if suffix == "" and blur:
            out.update(_blur_measures(cfg_s, test, images))
        fid0 = out.get("fid_generated_blur0") if suffix == "" else None  # the sweep's radius 0, not computed twice
        out[f"image_fid{suffix}"] = fid0 if fid0 is not None else compute_fid(test["images"], images, cfg_s)
    return out


def _blur_measures(cfg_s, test, generated) -> dict[str, float]:
    """Relative fall of FID-k from the smallest to the largest blur radius, for generated images and for SL
    reconstructions of the same real images (the decoder's ceiling): paper §4.3, Table 3."""
    from lverse_core.evaluation.fid import compute_fid_sweep
    from lverse_core.evaluation.reconstruction import reconstruct
    from lverse_core.training.augvae_train import load_augvae

    radii = sorted(cfg_s.eval.blur_radii)
    recon, _ = reconstruct(load_augvae(cfg_s, "sl"), signed_from_uint8(test["images"]))
    out = {}
    for name, fake in (("generated", generated), ("reconstructions", uint8_from_signed(recon))):
        fids = compute_fid_sweep(test["images"], fake, cfg_s, radii)
        for r, f in fids.items():
            out[f"fid_{name}_blur{r:g}"] = f
        out[f"fid_fall_{name}"] = 1.0 - fids[radii[-1]] / fids[radii[0]] if fids[radii[0]] > 0 else math.nan
    return out


# -- the claims -------------------------------------------------------------------------------------------------------

# (claim, measure label, (method arm, key), (control arm, key), the direction the paper predicts)
CLAIM_ROWS: list[tuple[str, str, tuple[str, str], tuple[str, str], str]] = [
    *[("1a cross-level augmentation: one shared codebook vs one per level (AugVAE-ML)", label, ("ml", key),
       ("ml_per_level", key), better) for label, key, better in (
        ("PSNR (dB)", "psnr_db", "higher"), ("SSIM", "ssim", "higher"), ("FID", "fid", "lower"),
        ("reconstructions judged right", "judged_right", "higher"),
        ("codes used by 2+ levels", "codes_shared_by_levels", "higher"))],
    *[("1b AugVAE-SL finetuned from ML vs the same SL from scratch (ML + SL steps)", label, ("sl", key),
       ("baseline", key), better) for label, key, better in (
        ("PSNR (dB)", "psnr_db", "higher"), ("SSIM", "ssim", "higher"), ("FID", "fid", "lower"),
        ("reconstructions judged right", "judged_right", "higher"))],
    *[(f"2 segment embedding vs none ({scheme})", label, (arm, key), (f"{arm}_no_segment" if arm != "bidirectional"
                                                                       else "no_segment", key), better)
      for scheme, arm in (("per-modality positions", "bidirectional"), ("one position table", "shared_positions"))
      for label, key, better in (("captions right", "captions_right", "higher"),
                                 ("images judged right", "images_right", "higher"))],
    *[("3 one bidirectional model vs one-direction models (equal steps per direction)", label, ("bidirectional", key),
       (control, key), better) for label, key, control, better in (
        ("captions right", "captions_right", "i2t_only", "higher"),
        ("BLEU-4", "bleu4_truncated", "i2t_only", "higher"),
        ("images judged right", "images_right", "t2i_only", "higher"),
        ("image FID", "image_fid", "t2i_only", "lower"))],
    ("4 caption truncation: truncated vs full-length samples (paper: BLEU-4 up, CIDEr down)", "BLEU-4",
     ("bidirectional", "bleu4_truncated"), ("bidirectional", "bleu4_untruncated"), "higher"),
    ("4 caption truncation: truncated vs full-length samples (paper: BLEU-4 up, CIDEr down)", "CIDEr",
     ("bidirectional", "cider_truncated"), ("bidirectional", "cider_untruncated"), "lower"),
    ("5 CLIP reranking: top-1 of N vs one sample", "captions right", ("bidirectional", "captions_right"),
     ("bidirectional", "captions_right_single"), "higher"),
    ("5 CLIP reranking: top-1 of N vs one sample", "images judged right", ("bidirectional", "images_right"),
     ("bidirectional", "images_right_single"), "higher"),
    ("6 FID under blur: generated images' FID falls faster than the reconstructions' (relative fall, smallest to "
     "largest radius)", "relative FID fall", ("bidirectional", "fid_fall_generated"),
     ("bidirectional", "fid_fall_reconstructions"), "higher"),
]


def run_claims(cfg: Config, log: Callable[[str], None] = print) -> dict[int, dict[str, dict[str, float]]]:
    """Every arm of every seed (prepared, trained and measured; finished parts are reused)."""
    from lverse_core.evaluation.judge import ensure_judge

    if cfg.data.source != "shapes":
        raise ValueError(f"the claims notebook measures with the embedded data set's ground truth (the attribute "
                         f"judge, captions naming every object); data.source is {cfg.data.source!r}. Run it on the "
                         f"ci, smoke or gpu profile; on real data its judged measures have no ground truth yet")
    out: dict[int, dict[str, dict[str, float]]] = {}
    first = seed_config(cfg, cfg.claims.seeds[0])
    for seed in cfg.claims.seeds:
        cfg_s = seed_config(cfg, seed)
        if seed != first.seed:
            share_instruments(first, cfg_s)
        prepare_seed(cfg_s, log)
        judge, test = ensure_judge(cfg_s), _test_set(cfg_s)
        out[seed] = {arm: augvae_measures(cfg_s, arm, test, judge) for arm in AUGVAE_ARMS}
        out[seed].update({arm: biart_measures(cfg_s, arm, test, judge, log) for arm in BIART_ARMS})
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
