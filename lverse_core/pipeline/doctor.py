"""``python -m lverse_core doctor --profile P``: is this machine ready to run profile P, and what to do if not.

Checks, each printed as ``[ok]`` or ``[problem]`` with the fix:
- the work directory (``LVERSE_WORKDIR`` or the repo) is a folder this user can write in (``run`` refuses one that
  is not, before it starts);
- Java, which METEOR (pycocoevalcap) runs a jar with;
- the real assets the profile needs (``assets.*`` / their environment variables) exist and are readable;
- every artefact of the run (data set, decoded images, tokenizer, checkpoints, code files, reranker, judge): ok,
  missing, stale (what changed: settings old -> new, or which input) or unknown (no record of what it was made
  from), by the one provenance decision the trainers and readers take (lverse_core/provenance.py);
- free disk under the work directory against a rough need per profile;
- the CPU class and the precision the run will use (lverse_core/hardware.py), a pinned bf16 on a CPU that only
  emulates it being a problem; the memory the profile needs against what the machine has;
- the expected time of the run from a few timed training steps (lverse_core/pipeline/estimate.py).
Nothing is changed and nothing is downloaded. The exit status is 1 when there is a problem.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lverse_core.evaluation.metrics import JAVA_FIX, JAVA_MISSING, java_version, needs_java
from lverse_core.config import ASSET_ENV, ASSET_HELP, Config, MissingAssetError, data_source, require_asset, workdir
from lverse_core.hardware import (available_memory_bytes, cpu_class, cpu_model, describe_plan, precision_plan,
                                  torch_capability, total_memory_bytes)

# Rough free space a run writes (data set, checkpoints, codes, generations, reports), GB. The paper profile's data
# sets are read in place (assets), so its need is checkpoints (AugVAE-ML/SL, BiART with optimizer state) and codes.
DISK_NEED_GB = {"ci": 1, "smoke": 2, "gpu": 10, "paper": 40}
# Peak resident memory of a run's largest notebook kernel, GiB, as measured on 2-core CPU VMs (the manifests'
# peak_rss_mib; docs/results.md); profiles without a measurement are not listed
MEMORY_NEED_GIB = {"ci": 1.5, "smoke": 2.0, "paper-dry": 18.4}  # paper-dry: 18,883 MiB in fp32 (AVX2 VM, 0bb0d65)


@dataclass
class Finding:
    check: str
    ok: bool
    message: str
    fix: str = ""

    def __str__(self) -> str:
        return f"[{'ok' if self.ok else 'problem'}] {self.check}: {self.message}" + (f"\n    -> {self.fix}" if self.fix else "")


def needed_assets(cfg: Config) -> list[str]:
    """The ``assets.*`` entries a run of ``cfg`` reads."""
    need = data_source(cfg).assets(cfg)  # ImageNet and the data's own; the training set's for L-Verse-CC
    if cfg.clip.train_steps == 0:
        need.append("clip_vit_b32")
    if cfg.eval.fid_extractor == "inception":
        need.append("inception_fid")
    if cfg.augvae_train.lpips_weight > 0:
        need.append("vgg16_lpips")
    return need


def _java_version() -> str | None:
    return java_version()


def workdir_problem(where: Path | None = None) -> str:
    """Why the work directory cannot hold a run's data/, runs/ and reports/ ("" when it can): it, or a folder above
    it, is a file, or the nearest existing folder cannot be written in (read-only, or not this user's). Tried by
    creating and removing a file, so a read-only file system counts, and so does what permissions allow root."""
    where = workdir() if where is None else where
    probe = where
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return (f"{where} is a file, not a folder" if probe == where
                else f"{where} cannot be created: {probe} is a file")
    try:
        fd, name = tempfile.mkstemp(prefix=".lverse-write-check-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        return f"{probe} cannot be written in ({e.strerror or type(e).__name__})" + (
            f", so {where} cannot be created" if probe != where else "")
    return ""


def check_workdir() -> Finding:
    where = workdir()
    problem = workdir_problem(where)
    if problem:
        return Finding("work directory", False, problem,
                       "set LVERSE_WORKDIR to a folder this user can write in (or fix the permissions there)")
    return Finding("work directory", True, f"{where} can be written in")




def check_java(cfg: Config | None = None) -> Finding:
    """Java for Table 2's caption metrics; not needed where ``cfg`` scores without it (``metrics.needs_java``)."""
    v = _java_version()
    if v:
        return Finding("java", True, v)
    if cfg is not None and not needs_java(cfg):
        return Finding("java", True, "none on PATH, and not needed: this profile scores captions with nlg-eval and "
                                     "eval.meteor false")
    return Finding("java", False, JAVA_MISSING, JAVA_FIX)


def check_assets(cfg: Config) -> list[Finding]:
    out = []
    for name in needed_assets(cfg):
        try:
            path = require_asset(cfg, name)
        except MissingAssetError as e:
            out.append(Finding(f"asset {name}", False, str(e).split(". ")[0],
                               f"set assets.{name} in configs/{cfg.profile}.yaml or {ASSET_ENV[name]} to a local "
                               f"copy of {ASSET_HELP[name]}"))
            continue
        readable = os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0))
        if path.is_file():
            try:
                with open(path, "rb") as f:
                    f.read(1)
            except OSError:
                readable = False
        if readable:
            out.append(Finding(f"asset {name}", True, str(path)))
        else:
            out.append(Finding(f"asset {name}", False, f"{path} exists but cannot be read by this user",
                               f"fix its permissions, or copy it somewhere readable and point {ASSET_ENV[name]} there"))
    if not out:
        out.append(Finding("assets", True, f"profile {cfg.profile} reads no external assets (embedded data)"))
    return out


def artefact_decisions(cfg: Config) -> list[tuple[str, object]]:
    """Every artefact of a run of ``cfg`` with its provenance decision (``lverse_core.provenance.decide``: ok, stale
    and what changed, unknown, missing), in the order the notebooks make them: the same decision the trainers and
    readers take."""
    from lverse_core import provenance
    from lverse_core.data.tokenizer import tokenizer_made_from, tokenizer_path
    from lverse_core.training.augvae_train import augvae_made_from, checkpoint_path, control_enabled
    from lverse_core.training.biart_train import biart_made_from
    from lverse_core.training.pretokenize import SPLITS, codes_dir, codes_made_from

    items: list[tuple[str, Callable[[], object]]] = []
    if data_source(cfg).embedded:
        items.append(("data set", lambda: _dataset_decision(cfg)))
    from lverse_core.data import decoded_store

    if decoded_store.enabled(cfg):
        for split in decoded_store.SPLITS:
            items.append((f"decoded images {split}", lambda sp=split: provenance.decide(
                decoded_store.store_path(cfg, sp), decoded_store.made_from(cfg, sp))))
    items.append(("tokenizer", lambda: provenance.decide(tokenizer_path(cfg), tokenizer_made_from(cfg))))
    variants = [("ml", "AugVAE-ML"), ("sl", "AugVAE-SL")] + ([("baseline", "VQ-VAE control")]
                                                             if control_enabled(cfg) else [])
    for variant, label in variants:
        items.append((label, lambda v=variant: provenance.decide(checkpoint_path(cfg, v), augvae_made_from(cfg, v))))
    for split in SPLITS:
        items.append((f"codes {split}", lambda sp=split: provenance.decide(codes_dir(cfg) / f"{sp}_codes.npy",
                                                                           codes_made_from(cfg, sp))))
    items.append(("BiART", lambda: provenance.decide(checkpoint_path(cfg, "biart"), biart_made_from(cfg))))
    if cfg.clip.train_steps:
        from lverse_core.sampling.clip_reranker import reranker_made_from, reranker_path

        items.append(("CLIP reranker", lambda: provenance.decide(reranker_path(cfg), reranker_made_from(cfg))))
    if data_source(cfg).ground_truth:
        from lverse_core.evaluation.judge import judge_made_from, judge_path

        items.append(("judge", lambda: provenance.decide(judge_path(cfg), judge_made_from(cfg))))
    out = []
    for label, decide in items:
        try:
            out.append((label, decide()))
        except Exception as e:  # one unreadable artefact must not hide the others
            out.append((label, e))
    return out


def _dataset_decision(cfg: Config):
    """The embedded data set's decision: its COMPLETE.json holds the generation parameters it was made with."""
    from lverse_core import provenance
    from lverse_core.data.shapes_dataset import generation_params, read_marker

    root = cfg.data_root
    expected = provenance.MadeFrom("data set", provenance.plain(generation_params(cfg)), {}, "embedded data set")
    marker = read_marker(root)
    if marker is None:
        if root.exists() and any(root.iterdir()):
            return provenance.Decision("unknown", root, expected, reason="it holds no COMPLETE.json")
        return provenance.Decision("missing", root, expected)
    params = marker.get("params") if isinstance(marker, dict) else None
    return provenance.compare({"config": params, "inputs": {}}, expected, root)


def check_artefacts(cfg: Config) -> list[Finding]:
    """One finding per artefact of the run: ok, missing (the run makes it), stale (what changed) or unknown (no
    record of what it was made from); the last two are problems whose fix is the notebook that rebuilds them."""
    out = []
    for label, d in artefact_decisions(cfg):
        if isinstance(d, Exception):
            out.append(Finding(label, False, f"cannot be checked ({type(d).__name__}: {str(d)[:200]})",
                               "delete it and re-run the notebook that makes it"))
        elif d.state == "ok":
            out.append(Finding(label, True, f"ok: {d.path} was made from this run's settings and inputs"))
        elif d.state == "missing":
            out.append(Finding(label, True, f"missing: {d.path} is made by {d.expected.notebook}"))
        else:
            out.append(Finding(label, False, f"{d.summary()} ({d.path})",
                               f"re-run {d.expected.notebook} (it rebuilds it), then the notebooks after it"))
    return out


def check_disk(cfg: Config) -> Finding:
    where = workdir()
    while not where.exists():
        where = where.parent
    free_gb = shutil.disk_usage(where).free / 1e9
    need = DISK_NEED_GB.get(cfg.profile, DISK_NEED_GB["smoke"])
    if free_gb >= need:
        return Finding("disk", True, f"{free_gb:.1f} GB free under {where} (profile {cfg.profile} needs about {need} GB)")
    return Finding("disk", False, f"{free_gb:.1f} GB free under {where}; profile {cfg.profile} writes about {need} GB",
                   "free space there, or set LVERSE_WORKDIR to a folder on a larger disk")


def check_precision(cfg: Config) -> Finding:
    """The CPU class and the precision each trainer will use; bf16 pinned on a CPU that emulates it is a problem."""
    plan = precision_plan(cfg)
    msg = f"{cpu_model()}, class {cpu_class()} (torch kernels {torch_capability()}); {describe_plan(plan)}"
    pinned = [f"{k}_train.precision" for k in ("augvae", "biart")
              if plan[k] == "bf16" and plan["device"] == "cpu" and plan["cpu_class"] not in ("amx", "avx512-bf16")]
    if pinned:
        return Finding("precision", False, msg + f"; {' and '.join(pinned)} pinned to bf16, which this CPU emulates "
                       "(~16x slower than fp32)", f"set {' and '.join(pinned)}: auto in configs/{cfg.profile}.yaml")
    return Finding("precision", True, msg)


def check_memory(cfg: Config) -> Finding:
    need = MEMORY_NEED_GIB.get(cfg.profile)
    total, avail = total_memory_bytes() / 2**30, available_memory_bytes() / 2**30
    if need is None:
        return Finding("memory", True, f"{total:.1f} GiB in all, {avail:.1f} GiB available (no measured need for "
                       f"profile {cfg.profile})")
    msg = f"profile {cfg.profile} peaks at about {need:.1f} GiB; this machine has {total:.1f} GiB, {avail:.1f} available"
    if total and total < need:
        return Finding("memory", False, msg, "use a machine with more memory, or a smaller profile (smoke)")
    if avail and avail < need:
        return Finding("memory", False, msg, "close other programs before the run, or it may be killed for memory")
    return Finding("memory", True, msg)


def check_time(cfg: Config) -> Finding:
    from lverse_core.pipeline.estimate import MIN_STEPS, estimate_run

    try:
        est = estimate_run(cfg)
    except Exception as e:  # an estimate must never hide the other findings
        return Finding("expected time", True, f"no estimate ({type(e).__name__}: {e})")
    if est is None:
        return Finding("expected time", True, f"no estimate: fewer than {MIN_STEPS} training steps in all, or no "
                       "device for the profile here")
    return Finding("expected time", True, f"make reproduce (PROFILE={cfg.profile}): {est.describe()}")


def diagnose(cfg: Config, timing: bool = True) -> list[Finding]:
    place = check_workdir()
    artefacts = check_artefacts(cfg) if place.ok else []  # nothing can be read under a file or an unusable folder
    found = [place, check_java(cfg), *check_assets(cfg), *artefacts, check_disk(cfg), check_precision(cfg),
             check_memory(cfg)]
    return found + [check_time(cfg)] if timing else found


def doctor(cfg: Config, log=print) -> int:
    """Print every finding; 0 when all are fine, else 1."""
    findings = diagnose(cfg)
    for f in findings:
        log(str(f))
    problems = [f for f in findings if not f.ok]
    log(f"{len(problems)} problem(s) for profile {cfg.profile}" if problems else f"ready to run profile {cfg.profile}")
    return 1 if problems else 0


__all__ = ["DISK_NEED_GB", "JAVA_FIX", "MEMORY_NEED_GIB", "Finding", "artefact_decisions", "check_artefacts",
           "check_assets", "check_disk", "check_java", "check_memory", "check_precision", "check_time", "check_workdir",
           "diagnose", "doctor", "needed_assets", "workdir_problem"]
