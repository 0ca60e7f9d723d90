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
    measures_<arm>.json                                what each arm measured (``claims_measures``; reused while its
                                                       provenance matches)

Measures are taken on the first ``claims.eval_images`` test images (captions) and their first captions (prompts);
a measure that averages over them also keeps its per-item values under ``<key>_items`` (the same item order in every
arm of a seed), and a measure that cannot be computed is NaN with ``<key>_why``. ``claims.only`` runs the arms of
some claims only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from lverse_core.config import Config, derive
from lverse_core.config.sources import data_source
from lverse_core.evaluation import claims_measures as measure
from lverse_core.evaluation.claims_arms import (  # noqa: F401  (the arms' names, read from here by their callers)
    ARMS_OF_CLAIM, AUGVAE_ARMS, BIART_ARMS, CLAIMS, _augvae_arm, arms_selected, biart_arm_config, blur_images, budgets,
    claim_number, claims_selected, parse_claims, parse_seeds, per_level_config, seed_config, with_parameters)
# the measures' names, read from here by earlier callers
from lverse_core.evaluation.claims_measures import _cached, _measures_made_from, test_set  # noqa: F401


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

    if data_source(cfg_s).embedded:
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


# the main-run models each one is made from: reused only together with them
_MADE_FROM_MAIN = {"AugVAE-SL": ("AugVAE-ML",), "codes (train)": ("AugVAE-SL",), "codes (test)": ("AugVAE-SL",),
                   "BiART": ("AugVAE-SL", "codes (train)", "tokenizer")}


def adoptable(cfg: Config, cfg_s: Config, instruments: bool = True, log: Callable[[str], None] | None = None
              ) -> list[tuple[str, Any, Any, list[Any], list[Any]]]:
    """The models of the main run (``runs/<profile>/``) that the claims of the main run's seed reuse: every one
    made from exactly this seed's settings and inputs (``lverse_core.provenance``: the resolved configuration,
    precision included, and the content ids of the data set, codes and upstream checkpoints; not the kit's code
    version), and none made from a model the claims train anew. (name, main-run file, its companions, the claims
    copy, its companions) in the order they are made; the main run's BiART is the ``bidirectional`` arm.
    ``instruments``: the judge and the reranker too. ``log`` gets one line per model that is not reused and why.
    Reads only."""
    from lverse_core import provenance

    if cfg_s.seed != cfg.seed:
        return []
    main_view = derive(cfg_s, runs_dir=cfg.runs_dir, reports_dir=cfg.reports_dir)  # this seed's settings, main files
    if main_view.runs_root == cfg_s.runs_root:
        return []
    out: list[tuple[str, Any, Any, list[Any], list[Any]]] = []
    for (name, src, made, extra), (_, dst, _, extra_dst) in zip(_main_artefacts(main_view), _main_artefacts(cfg_s)):
        if name in ("judge", "CLIP reranker") and not instruments:
            continue
        if any(up not in {o[0] for o in out} for up in _MADE_FROM_MAIN.get(name, ())):
            continue  # made from a main-run model the claims train anew: theirs is made from their own
        if name == "BiART":
            dst, extra_dst = cfg_s.runs_root / "biart_bidirectional.pt", [cfg_s.runs_root / "logs" /
                                                                        "biart_bidirectional.csv"]
        d = provenance.decide(src, made)
        if not d.ok:
            if d.state != "missing" and log is not None:
                log(f"seed {cfg_s.seed}: the main run's {name} is not reused ({d.summary()}); the claims train "
                    f"their own")
            continue
        out.append((name, src, extra, dst, extra_dst))
    return out


def adopt_main_run(cfg: Config, cfg_s: Config, log: Callable[[str], None] = print, instruments: bool = True
                   ) -> list[str]:
    """Copy into the claims folder of the main run's seed every model of the main run that it may reuse
    (``adoptable``). The main run's files are only read; what is absent or stale there is trained by the claims in
    their own folder. ``instruments``: the judge and the reranker too (only for the first seed: every seed is
    scored by the first seed's, ``share_instruments``). Returns the names copied."""
    import shutil

    from lverse_core import provenance

    adopted: list[str] = []
    for name, src, extra, dst, extra_dst in adoptable(cfg, cfg_s, instruments, log):
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


# -- what a run will train --------------------------------------------------------------------------------------------

TO_TRAIN, FINISHED, MAIN_RUN, MEASURED = "to train", "finished", "the main run's", "measured"
# the stages whose checkpoints hold the step they were saved at (a stopped one resumes there)
STEPPED = ("AugVAE-ML", "AugVAE-SL", "VQ-VAE control", "BiART")


@dataclass(frozen=True)
class Planned:
    """One training the selected claims need for one seed. ``stage`` is the kind of step it takes, as timed by
    ``lverse_core.pipeline.estimate`` ("AugVAE-ML", "AugVAE-SL", "VQ-VAE control" for the SL from scratch,
    "BiART"; "CLIP reranker" and "judge", trained for the first seed, are not timed there); ``state`` is
    ``TO_TRAIN``, ``FINISHED`` (its checkpoint is made from these settings and inputs), ``MAIN_RUN`` (the main run's
    model, copied by ``adopt_main_run``) or ``MEASURED`` (a BiART arm whose measures are saved and current: nothing
    of it runs again). A training stopped before its last step and made from these settings and inputs is
    ``TO_TRAIN`` with ``done`` steps behind it and ``steps`` still to run: it resumes from its checkpoint."""
    seed: int
    name: str
    stage: str
    steps: int
    state: str
    done: int = 0


def training_plan(cfg: Config) -> list[Planned]:
    """Every training ``run_claims`` would start for the selected claims (``claims.only``, ``claims.primaries_only``)
    and the state each is in now, decided by the same provenance records that decide reuse during the run: a model
    made from one that is still to train is to train too. Reads only (the claims' data sets of later seeds need not
    exist yet)."""
    from lverse_core import provenance
    from lverse_core.evaluation.judge import judge_made_from, judge_path
    from lverse_core.sampling.clip_reranker import reranker_made_from, reranker_path
    from lverse_core.training.augvae_train import augvae_made_from, checkpoint_path
    from lverse_core.training.biart_train import biart_made_from
    from lverse_core.training.loop import checkpoint_step

    arms = arms_selected(cfg)
    plan: list[Planned] = []
    for seed in cfg.claims.seeds:
        cfg_s = seed_config(cfg, seed)
        main = {name for name, *_ in adoptable(cfg, cfg_s)}
        todo: set[str] = set()

        def add(name: str, stage: str, steps: int, key: str, made: Callable[[], Any], path: Any,
                upstream: Sequence[str] = ()) -> None:
            done = 0
            if key in main:
                state = MAIN_RUN
            elif any(u in todo for u in upstream) or not provenance.decide(path, made()).ok:
                state = TO_TRAIN
            else:
                saved = checkpoint_step(path) if stage in STEPPED else None
                state, done = (TO_TRAIN, saved) if saved is not None and saved < steps else (FINISHED, 0)
            if state == TO_TRAIN:
                todo.add(key)
            plan.append(Planned(seed, name, stage, steps - done, state, done))

        b = cfg_s.augvae_train
        add("AugVAE-ML", "AugVAE-ML", b.ml_steps, "AugVAE-ML", lambda: augvae_made_from(cfg_s, "ml"),
            checkpoint_path(cfg_s, "ml"))
        add("AugVAE-SL", "AugVAE-SL", b.sl_steps, "AugVAE-SL", lambda: augvae_made_from(cfg_s, "sl"),
            checkpoint_path(cfg_s, "sl"), ("AugVAE-ML",))
        if "baseline" in arms:
            add("AugVAE-SL from scratch", "VQ-VAE control", b.baseline_steps, "baseline",
                lambda: augvae_made_from(cfg_s, "baseline"), checkpoint_path(cfg_s, "baseline"))
        if "ml_per_level" in arms or "sl_per_level" in arms:
            per = per_level_config(cfg_s)
            add("AugVAE-ML per level", "AugVAE-ML", b.ml_steps, "per-level ML", lambda: augvae_made_from(per, "ml"),
                checkpoint_path(per, "ml"))
            add("AugVAE-SL per level", "AugVAE-SL", b.sl_steps, "per-level SL", lambda: augvae_made_from(per, "sl"),
                checkpoint_path(per, "sl"), ("per-level ML",))
        if seed == cfg.claims.seeds[0] and cfg_s.clip.train_steps:  # the instruments every seed shares
            add("CLIP reranker", "CLIP reranker", cfg_s.clip.train_steps, "CLIP reranker",
                lambda: reranker_made_from(cfg_s), reranker_path(cfg_s))
            add("judge", "judge", cfg_s.eval.judge_steps, "judge", lambda: judge_made_from(cfg_s), judge_path(cfg_s))
        for arm in (a for a in BIART_ARMS if a in arms):
            cfg_a = biart_arm_config(cfg_s, arm)
            if "AugVAE-SL" not in todo and provenance.decide(cfg_s.runs_root / f"measures_{arm}.json",
                                                             measure._measures_made_from(cfg_s, arm)).ok:
                plan.append(Planned(seed, f"BiART {arm}", "BiART", cfg_a.biart_train.steps, MEASURED))
                continue
            key = "BiART" if arm == "bidirectional" else f"BiART {arm}"
            add(f"BiART {arm}", "BiART", cfg_a.biart_train.steps, key, lambda: biart_made_from(cfg_a),
                cfg_s.runs_root / f"biart_{arm}.pt", ("AugVAE-SL",))
    return plan


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
    ("6 blur: generated images' KID falls more than the reconstructions' (smallest to largest radius, as shares of "
     "the generated images' KID at the smallest)", "KID fall, share of generated KID at radius 0",
     ("bidirectional", "kid_fall_generated"), ("bidirectional", "kid_fall_ceiling"), "higher"),
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

    if not data_source(cfg).ground_truth:
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
        judge, test = ensure_judge(cfg_s), measure.test_set(cfg_s)
        out[seed] = {}
        for arm in arms:
            if arm in AUGVAE_ARMS:
                out[seed][arm] = measure.augvae_measures(cfg_s, arm, test, judge, log)
            else:
                out[seed][arm] = measure.biart_measures(cfg_s, arm, test, judge, log)
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
