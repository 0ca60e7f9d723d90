"""What each arm of the claims experiment (``claims_experiment``) measures, saved arm by arm.

A measure that averages over the test items (the first ``claims.eval_images`` test images and their first captions,
``test_set``) also keeps its per-item values under ``<key>_items``, in the same item order in every arm of a seed, so
that a comparison can pair them; a measure that cannot be computed is NaN with ``<key>_why``, never an exception
that loses the other arms. Every arm also reports its parameters, steps and training seconds. Claim 6 uses KID
(torch-fidelity's subset estimator), defined at a hundred images where FID's covariances are rank-deficient, on the
first ``claims.blur_images`` test items (``kid_images``: how many it compared).
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
from lverse_core.evaluation.claims_arms import AUGVAE_ARMS, _augvae_arm, biart_arm_config, blur_images, budgets
from lverse_core.report import write_json_atomic


# the arm whose generated images claim 6 follows under blur
BLUR_ARM = "bidirectional"


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
        if arm == BLUR_ARM:  # claim 6's image count shapes this arm's measures only
            config["claims budget.blur_images"] = blur_images(cfg_s)
    return provenance.MadeFrom("claims-measures", provenance.plain(config),
                               {k: provenance.input_id(p) for k, p in files.items()}, f"claims measures ({arm})")


def _cached(cfg_s: Config, arm: str, compute: Callable[[], dict[str, Any]], log: Callable[[str], None] = print
            ) -> dict[str, Any]:
    """``measure_once``'s measures alone."""
    return measure_once(cfg_s, arm, compute, log)[0]


def measure_once(cfg_s: Config, arm: str, compute: Callable[[], dict[str, Any]], log: Callable[[str], None] = print
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


def test_set(cfg_s: Config, n: int | None = None) -> dict[str, Any]:
    """The first ``n`` (default ``claims.eval_images``; at most the split's size) test images (uint8), their ids,
    ground-truth objects and first captions: the items every per-item measure of the seed follows, in this order."""
    from lverse_core import data

    ds = data.CaptionImageDataset(cfg_s, "test", train=False)
    attrs = data.load_attributes(cfg_s)
    items = [ds[i] for i in range(min(cfg_s.claims.eval_images if n is None else n, len(ds)))]
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

    out, fresh = measure_once(cfg_s, arm, compute, log)
    progress(f"seed {cfg_s.seed} · AugVAE {arm} · {_trained(out, fresh, started, 'its measures')} · "
             f"PSNR {out['psnr_db']:.2f} dB · judged right {out['judged_right']:.2f}", log)
    return out


def _trained(out: Mapping[str, Any], fresh: bool, started: float, here: str) -> str:
    """``measured: <steps> steps in <training time>`` or ``reused: ...``; a fresh measure adds the time this run
    spent on the arm since ``started``, named by ``here`` (what that time covers)."""
    secs = out.get("train_seconds", math.nan)
    took = "" if secs is None or math.isnan(secs) else f" in {secs:,.0f} s"
    how = "measured" if fresh else "reused"
    return f"{how}: {out.get('steps', 0):,} steps{took}" + (f" ({here} {time.monotonic() - started:,.0f} s)"
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
            out.update(_image_measures(cfg_s, model, parts, test, judge, blur=arm == BLUR_ARM))
        return out

    out, fresh = measure_once(cfg_s, arm, compute, log)
    shown = [f"{name} {out[key]:.2f}" for name, key in (("captions", "captions_right"), ("images", "images_right"))
             if key in out]
    trained = _trained(out, fresh, started, "training and measures this run")
    progress(" · ".join([f"seed {cfg_s.seed} · BiART {arm} · {trained}", *shown]), log)
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

    out: dict[str, Any] = {}
    runs = {"": (cfg_s, parts["scorer"]), "_single": (_single_sample(cfg_s), None)}
    for suffix, (cfg_r, scorer) in runs.items():
        images = _drawn_images(cfg_r, model, parts, scorer, test)
        _items(out, f"images_right{suffix}", judged_correct(judge, images, test["captions"])["per_image"])
        out[f"image_fid{suffix}"] = compute_fid(test["images"], images, cfg_s)
        if suffix == "" and blur:
            wide, generated = _blur_sets(cfg_s, model, parts, scorer, test, images)
            out["kid_images"] = len(generated)
            out.update(_blur_measures(cfg_s, wide, generated))
    return out


def _drawn_images(cfg_r: Config, model, parts, scorer, test: Mapping[str, Any]) -> torch.Tensor:
    """One image (uint8) per test item, drawn from its first caption under ``cfg_r``'s sampling (top-1 of its
    candidates by ``scorer``). Each prompt's random draws are seeded by its own id (``row_sampler``), whichever
    other items are drawn with it."""
    from lverse_core.sampling.generate import generate_images

    pids = [i * 100 for i in test["ids"]]
    codes, _ = generate_images(cfg_r, model, parts["tokenizer"], test["captions"], pids, scorer, parts["decode"])
    with torch.no_grad():
        return uint8_from_signed(torch.cat([parts["decode"](codes[i: i + 64, 0]).cpu()
                                            for i in range(0, len(codes), 64)]))


def _blur_sets(cfg_s: Config, model, parts, scorer, test: Mapping[str, Any], generated: torch.Tensor
               ) -> tuple[dict[str, Any], torch.Tensor]:
    """Claim 6's sets: the first ``blur_images`` test items and one generated image per item. The images already
    drawn for the first ``eval_images`` items are those; only the items after them are drawn here, the same way."""
    n = blur_images(cfg_s)
    have = len(test["ids"])
    if n <= have:
        return {"images": test["images"][:n], "ids": test["ids"][:n]}, generated[:n]
    wide = test_set(cfg_s, n)
    more = {k: v[have:] for k, v in wide.items()}
    if not more["ids"]:  # the split holds no more items than the other measures use
        return wide, generated
    return wide, torch.cat([generated, _drawn_images(cfg_s, model, parts, scorer, more)])


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


def relative_fall(values: Mapping[float, float], scale: Mapping[float, float] | None = None) -> tuple[float, str]:
    """``((value(smallest radius) - value(largest radius)) / scale(smallest radius), "")``, ``scale`` defaulting to
    ``values`` themselves; NaN with the reason when the scale at the smallest radius is not positive (a fall
    relative to it means nothing) or a value is not finite."""
    scale = values if scale is None else scale
    radii = sorted(values)
    first, last, base = values[radii[0]], values[radii[-1]], scale[radii[0]]
    if not (math.isfinite(first) and math.isfinite(last) and math.isfinite(base)):
        return math.nan, f"KID at radius {radii[0]:g} or {radii[-1]:g} is not finite ({first}, {last}, {base})"
    if base <= 0:
        return math.nan, (f"KID at radius {radii[0]:g} is {base:.3g} (not positive: the sets cannot be told apart "
                          f"at this sample size), so a relative fall is undefined")
    return (first - last) / base, ""


# the sets whose KID to the real test images claim 6 follows over the blur radii
BLUR_SETS = ("generated", "reconstructions")


def blur_falls(m: Mapping[str, Any]) -> dict[str, Any]:
    """Claim 6's falls from one arm's KIDs (``kid_<set>_blur<r>``, every radius both sets have), each a share of the
    *generated* images' KID at the smallest radius: ``kid_fall_generated`` (their own relative fall) and
    ``kid_fall_ceiling`` (the AugVAE-SL reconstructions' fall on that scale). Their difference is the share of the
    generated images' distance to the real ones that blur removes beyond what it removes from the decoder's own
    images: defined when the reconstructions' KID is at zero (it is, at 100 embedded images: they cannot be told
    from the real ones), unlike the reconstructions' fall relative to themselves. {} without the KIDs."""
    def radii(name: str) -> set[str]:
        head = f"kid_{name}_blur"
        return {k[len(head):] for k in m if k.startswith(head) and not k.endswith("_why")}

    common = radii("generated") & radii("reconstructions")
    if len(common) < 2:
        return {}
    values = {name: {float(r): float(m[f"kid_{name}_blur{r}"]) for r in common} for name in BLUR_SETS}
    out: dict[str, Any] = {}
    for name, key in (("generated", "kid_fall_generated"), ("reconstructions", "kid_fall_ceiling")):
        fall, why = relative_fall(values[name], values["generated"])
        out[key] = fall
        if why:
            out[f"{key}_why"] = why
    return out


def _blur_measures(cfg_s, test, generated) -> dict[str, Any]:
    """KID of generated images and of SL reconstructions of the same real images (the decoder's ceiling) against
    the real ones, every set blurred alike by each of ``eval.blur_radii``, and their falls from the smallest to the
    largest radius (``blur_falls``; paper §4.3, Table 3, there with FID-k)."""
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
        for r in radii:
            try:
                out[f"kid_{name}_blur{r:g}"] = kid(features(test["images"], r), features(fake, r))
            except ValueError as e:
                out[f"kid_{name}_blur{r:g}"] = math.nan
                out[f"kid_{name}_blur{r:g}_why"] = str(e)
    out.update(blur_falls(out))
    return out


def blur_kid_figure(measures: Mapping[int, Mapping[str, Mapping[str, Any]]], radii: Sequence[float]):
    """Claim 6 as a picture: KID of the bidirectional arm's generated images and of AugVAE-SL reconstructions (the
    decoder's ceiling) over the blur radius, one line per seed; None when no seed has the bidirectional arm."""
    import matplotlib.pyplot as plt

    runs = [m["bidirectional"] for m in measures.values() if "bidirectional" in m]
    if not runs:
        return None
    radii = sorted(float(r) for r in radii)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for what, colour in (("generated", "tab:blue"), ("reconstructions", "tab:orange")):
        for i, m in enumerate(runs):
            ax.plot(radii, [m.get(f"kid_{what}_blur{r:g}", math.nan) for r in radii], "o-", color=colour, alpha=0.8,
                    label=what if i == 0 else None)
    ax.set_xlabel("blur radius (px)")
    ax.set_ylabel("KID to the real test images")
    ax.legend()
    fig.tight_layout()
    return fig
