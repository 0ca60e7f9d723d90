"""Training of AugVAE-ML, the AugVAE-SL finetune and the plain VQ-VAE baseline (paper §3.3, §3.5, §4.1).

    python -m lverse_core.training.augvae_train --profile smoke --variant ml        # one process
    torchrun --nproc_per_node 8 -m lverse_core.training.augvae_train --profile paper --variant ml   # DDP (NCCL / gloo)

Recipe of the official code: AdamW(0.9, 0.999, wd 1e-5), lr = base * world * batch (``lr_scaling``),
ReduceLROnPlateau(factor 0.5, patience 10; the kit reads the mean training loss of each check interval where the
official code reads the last batch's, docs/deviations.md), MSE + ``lpips_weight`` * the perceptual term
(``perceptual``; LPIPS in ``paper``) + commitment, FP32 throughout (paper §3.5: the quantizer underflows in FP16);
``edge_weight`` adds an image-gradient L1 term and ``unquantized_steps`` starts the single-level trainings as plain
autoencoders, then sets the codebook by k-means (both our additions for short runs, used by the smoke profile).

Variants (``VARIANTS``): ``ml`` trains AugVAE-ML from scratch; ``sl`` builds AugVAE-SL from the trained ML
checkpoint with ``AugVAE.ml_to_sl`` and finetunes all parameters; ``baseline`` trains the same SL-shaped model
(one H/8 level, same codebook and grid) from scratch for ``baseline_steps`` steps (ml_steps + sl_steps for the same
budget; 0 turns it off), i.e. a plain VQ-VAE without cross-level augmentation (Table 1's comparison, our addition).

A run is fixed by its step count. Its checkpoint (``runs/<profile>/<file>``) is rewritten atomically every
``ckpt_every`` steps with everything needed to resume exactly (model, optimizer, scheduler, RNG states, the data
position is the step itself); re-running a killed run continues from it, a finished one returns at once.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from lverse_core.models.augvae import AugVAE
from lverse_core.models.quantize import EMAVectorQuantizer
from lverse_core.models.perceptual import edge_loss
from lverse_core.config import Config, load_profile
from lverse_core.hardware import resolve_channels_last, resolve_precision
from lverse_core.training.loop import (CheckpointError, CSVLog, DistInfo, StepSampler, all_rng_states, autocast,
                                       check_model_args, load_checkpoint, restore_rng_states,
                                       run_steps, save_checkpoint, seed_everything, setup_distributed)
from lverse_core.training.loop import load_model_state
from lverse_core.training.checkpoint_paths import CHECKPOINT_FILES, checkpoint_path  # noqa: F401  (read from here too)

# variant -> (checkpoint file, checkpoint kind, model variant)
VARIANTS = {
    "ml": (CHECKPOINT_FILES["ml"], "augvae-ml", "ml"),
    "sl": (CHECKPOINT_FILES["sl"], "augvae-sl", "sl"),
    "baseline": (CHECKPOINT_FILES["baseline"], "vqvae-baseline", "sl"),
}
log = logging.getLogger(__name__)


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown AugVAE variant {variant!r}; valid: {', '.join(VARIANTS)}")


def planned_steps(cfg: Config, variant: str) -> int:
    t = cfg.augvae_train
    return {"ml": t.ml_steps, "sl": t.sl_steps, "baseline": t.baseline_steps}[variant]  # baseline 0: off


def control_enabled(cfg: Config) -> bool:
    """Whether this profile trains the plain VQ-VAE control (``augvae_train.baseline_steps`` > 0)."""
    return cfg.augvae_train.baseline_steps > 0


def plateau_interval(cfg: Config, n_images: int, world_size: int) -> int:
    """Optimizer steps between two ReduceLROnPlateau checks: ``augvae_train.plateau_every``, or one epoch (the
    official code's rule: ``n_images`` over the global batch) when it is 0."""
    t = cfg.augvae_train
    if t.plateau_every:
        return t.plateau_every
    return max(1, math.ceil(n_images / (t.batch_size * world_size)))


def lr_decay_factor(step: int, total: int, fraction: float) -> float:
    """The multiplier on the rate of 0-based ``step`` of ``total``: 1, then over the last ``ceil(fraction * total)``
    steps falling linearly to 1/n at the last one (``augvae_train.lr_decay_fraction``; 0 = always 1)."""
    n = math.ceil(fraction * total)
    if n <= 0:
        return 1.0
    return min(1.0, (total - step) / n)


def effective_lr(cfg: Config, world_size: int) -> float:
    """The official rule lr = base * world * per-process batch (``lr_scaling``), else the base rate."""
    t = cfg.augvae_train
    return t.lr * world_size * t.batch_size if t.lr_scaling else t.lr


def _model_args(model: AugVAE) -> dict[str, Any]:
    return {**model.args, "variant": model.variant}


NAMES = {"ml": "AugVAE-ML checkpoint", "sl": "AugVAE-SL checkpoint", "baseline": "VQ-VAE control checkpoint"}


def augvae_made_from(cfg: Config, variant: str):
    """What the ``variant`` checkpoint of this run is made from (``lverse_core.provenance``): the resolved settings
    that shape it, the data set, and for SL the AugVAE-ML checkpoint it starts from (and LPIPS weights when used)."""
    from lverse_core import provenance
    from lverse_core.data.identity import dataset_id

    _check_variant(variant)
    inputs = {"data set": dataset_id(cfg)}
    if variant == "sl":
        inputs["AugVAE-ML checkpoint"] = provenance.input_id(checkpoint_path(cfg, "ml"))
    if cfg.augvae_train.lpips_weight > 0 and cfg.augvae_train.perceptual == "lpips" and cfg.assets.vgg16_lpips:
        inputs["VGG16 LPIPS weights"] = provenance.listing_id([cfg.assets.vgg16_lpips])
    made = provenance.made_from(cfg, VARIANTS[variant][1], inputs, NAMES[variant], architecture=("augvae",))
    if cfg.augvae.dead_code_threshold <= 0:  # no restarts: the patience shapes nothing (records from before match)
        made.config.pop("augvae.restart_patience", None)
    return made


def load_augvae(cfg: Config, variant: str = "sl", device: str | torch.device | None = None,
                allow_unfinished: bool = False) -> AugVAE:
    """The trained model of ``variant`` (ml | sl | baseline) in eval mode, FP32, checked against the profile.

    ``device`` defaults to the profile's (``cfg.resolved_device()``).
    """
    _check_variant(variant)
    path = checkpoint_path(cfg, variant)
    state = load_checkpoint(path, VARIANTS[variant][1])
    model = AugVAE.from_config(cfg, VARIANTS[variant][2])
    if variant == "baseline":
        model = AugVAE("sl", **{**model.args, "sl_quantize_fine": False})
    check_model_args(path, state["model_args"], _model_args(model))
    if not allow_unfinished and not state.get("finished", False):
        raise CheckpointError(f"{path} is an unfinished run (step {state['step']}); re-run its training to finish it")
    from lverse_core import provenance

    provenance.require(path, augvae_made_from(cfg, variant), CheckpointError)
    load_model_state(path, model, EMAVectorQuantizer.complete_state(state["model"], "quantizer."))
    return model.to(device or cfg.resolved_device()).eval()


def _initial_model(cfg: Config, variant: str) -> AugVAE:
    if variant == "ml":
        return AugVAE.from_config(cfg, "ml")
    if variant == "sl":
        return AugVAE.ml_to_sl(load_augvae(cfg, "ml"))
    base = AugVAE.from_config(cfg, "sl")  # the same SL shape, from scratch, one quantized level only
    return AugVAE("sl", **{**base.args, "sl_quantize_fine": False})


_DECODED: dict[str, torch.Tensor] = {}  # the last training split decoded in this process, by what it was decoded from


def training_images(cfg: Config):
    """The training split as ``augvae_train.decode`` says: decoded once to a uint8 tensor (cropped per batch on
    the device) or an ImageFolder dataset that decodes and crops each image when a batch needs it (in
    ``data.num_workers`` worker processes, ``lverse_core.data.step_batches``).

    Decoded once per process: AugVAE-ML, AugVAE-SL and the control trained one after the other (notebook 01) share
    one tensor, kept while the data set's id and the ``data`` settings stay the same; on a CUDA device it sits in
    pinned memory, so the copy of each batch to the device overlaps the step."""
    from lverse_core import data

    if cfg.augvae_train.decode == "once":
        from lverse_core.data.decoded import DecodedImages
        from lverse_core.data.identity import dataset_id

        key = json.dumps([dataset_id(cfg), dataclasses.asdict(cfg.data), str(cfg.data_root)], sort_keys=True,
                         default=str)
        if key not in _DECODED:
            _DECODED.clear()  # one split in memory at a time
            folder = data.image_dataset(cfg, "train", train=False)
            images = _stored(cfg, folder)
            if images is None:
                images = DecodedImages.from_dataset(folder, train=True, num_workers=cfg.data.num_workers).images
            if torch.device(cfg.resolved_device()).type == "cuda" and torch.cuda.is_available():
                images = images.pin_memory()
            _DECODED[key] = images
        return DecodedImages(_DECODED[key], train=True)
    return data.image_dataset(cfg, "train", train=True)


def _stored(cfg: Config, folder) -> torch.Tensor | None:
    """The ImageFolder split's images in its order from the run's decoded store (notebook 00,
    ``lverse_core.data.decoded_store``: the embedded set's file names are its image ids), or None to decode."""
    from lverse_core.data.decoded_store import decoded_split, enabled, forget

    if not enabled(cfg):
        return None
    store = decoded_split(cfg, "train")
    samples = getattr(folder, "samples", None)  # an ImageFolder's (path, class) list
    if store is None or samples is None:
        return None
    ids = [int(Path(path).stem) for path, _ in samples]
    if not store.has(ids):
        return None
    images = store.rows(ids)
    if images is not store.images:
        forget()  # the copy in the folder's order is what training keeps
    return images


# dead: codes below the restart threshold before the step's restarts; restarted: codes restarted in the step (means
# over the logged steps)
LOG_FIELDS = ["loss", "mse", "psnr", "commit", "perceptual", "edge", "lr", "dead", "restarted"]


def train_augvae(cfg: Config, variant: str = "ml", *, dataset=None, dist_info: DistInfo | None = None,
                 stop_after: int | None = None, progress: bool = True) -> Path:
    """Train (or resume, or skip if finished) ``variant``; returns the checkpoint path.

    ``dataset`` yields ``(image in [-1, 1], label)`` items (and may offer ``batch(indices, device)``, see
    ``lverse_core.data.decoded``); default ``training_images(cfg)``. Without ``batch``, every step's batch is
    built by ``data.num_workers`` DataLoader workers, its random crops keyed by (seed, step, position)
    (``lverse_core.data.step_batches``).
    ``stop_after`` ends after that many steps without a final save (tests use it to simulate a kill).
    """
    _check_variant(variant)
    if variant == "baseline" and not control_enabled(cfg):
        raise ValueError(f"the plain VQ-VAE control is off in profile {cfg.profile} (augvae_train.baseline_steps = "
                         f"{cfg.augvae_train.baseline_steps}); set it to ml_steps + sl_steps "
                         f"({cfg.augvae_train.ml_steps + cfg.augvae_train.sl_steps}) for a control at the same budget")
    di = dist_info or setup_distributed(cfg.resolved_device())
    t = cfg.augvae_train
    total = planned_steps(cfg, variant)
    warm = unquantized_steps(cfg, variant)
    edge_weight = t.edge_weight if (variant != "ml" or t.edge_in_ml) else 0.0
    path = checkpoint_path(cfg, variant)
    kind = VARIANTS[variant][1]

    resume = None
    made = augvae_made_from(cfg, variant)
    from lverse_core import provenance

    # reused or resumed only when made from these settings and inputs; else trained again from step 0
    if provenance.retrain_reason(path, made, log=print if di.is_main else None) is None:
        resume = load_checkpoint(path, kind)
        if resume["step"] >= total:
            seed_everything(cfg.seed + di.rank)  # the state a caller saw before (the notebooks draw after this)
            return path  # finished: nothing to decode
    if dataset is None:
        dataset = training_images(cfg)
    seed_everything(cfg.seed + di.rank)  # after decoding: a DataLoader draws from the global generator
    model = AugVAE(**_strip_variant(resume["model_args"])) if resume else _initial_model(cfg, variant)
    if resume:
        expected = _model_args(_initial_model_shape(cfg, variant))
        check_model_args(path, resume["model_args"], expected)
        model.load_state_dict(EMAVectorQuantizer.complete_state(resume["model"], "quantizer."))
    model = model.to(di.device).float()  # FP32 weights (paper §3.5); bf16 precision autocasts the convolutions
    precision = resolve_precision(t.precision, di.device, what="augvae_train.precision")
    fmt = (torch.channels_last if resolve_channels_last(t.channels_last, di.device, precision)
           else torch.contiguous_format)
    model = model.to(memory_format=fmt)
    # fused AdamW on a GPU (one kernel for all parameters); the CPU keeps the default implementation
    opt = torch.optim.AdamW(model.parameters(), lr=effective_lr(cfg, di.world_size), betas=(0.9, 0.999),
                            weight_decay=t.weight_decay, **({"fused": True} if di.device.type == "cuda" else {}))
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=t.plateau_factor, patience=t.plateau_patience,
                                                       cooldown=t.plateau_cooldown, min_lr=t.plateau_min_lr)
    plateau_every = plateau_interval(cfg, len(dataset), di.world_size)
    start, plateau = 0, {"sum": 0.0, "n": 0}
    if resume:
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        start, plateau = resume["step"], dict(resume["plateau"])
        restore_rng_states(path, resume["rng"], di)
    # the plateau's running sum stays on the device (float64, the sum of the same float32 losses in the same order
    # as a Python float would be); it is read at the plateau checks and checkpoint writes only
    plateau["sum"] = torch.tensor(float(plateau["sum"]), dtype=torch.float64, device=di.device)

    perceptual = None
    if t.lpips_weight > 0:
        from lverse_core.models.perceptual import perceptual_loss_from_config

        perceptual = perceptual_loss_from_config(cfg).to(di.device)
    net = model
    if di.distributed:
        # broadcast_buffers=False also skips DDP's buffer sync at construction: give every rank rank 0's codebook
        for b in model.buffers():
            torch.distributed.broadcast(b, 0)
        # EMA statistics are all-reduced inside the quantizer, so buffers need no broadcast
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[di.device.index] if di.device.type == "cuda" else None, broadcast_buffers=False)
    sampler = StepSampler(len(dataset), t.batch_size * di.world_size, cfg.seed, di.rank, di.world_size)
    level_fields = [f"{s}_l{k}" for k in model.quantized_levels() for s in ("perplexity", "used")]
    csv_log = CSVLog(cfg.runs_root / "logs" / f"augvae_{variant}.csv", LOG_FIELDS + level_fields,
                     resume_step=start if resume else None) if di.is_main else None
    batches = None
    if not hasattr(dataset, "batch"):  # decoded per step in DataLoader workers (data/step_batches.py)
        from lverse_core.data.step_batches import step_batches

        batches = step_batches(dataset, sampler, start, total, seed=cfg.seed, num_workers=cfg.data.num_workers,
                               bad_input=cfg.data.bad_input, pin_memory=di.device.type == "cuda")
    reported: set[str] = set()
    # encoder vectors of the last unquantized steps, for the k-means start of the codebook (kept in checkpoints
    # written inside the warm-up; under DDP rank 0's vectors set every rank's codebook)
    bank: collections.deque = collections.deque(maxlen=t.kmeans_batches)
    if resume and start < warm:
        bank.extend(b.to(di.device) for b in resume.get("kmeans_bank", []))

    def step_fn(step: int) -> dict[str, float]:
        if batches is None:  # decoded once, cropped on the device (data/decoded.py)
            x = dataset.batch(sampler.indices(step), di.device)
        else:
            got, x, skipped = next(batches)
            if got != step:
                raise RuntimeError(f"AugVAE data loader gave the batch of step {got} at step {step}")
            for msg in skipped:
                if msg not in reported:  # each bad file once, not once per epoch
                    reported.add(msg)
                    log.warning("AugVAE training skips a bad image (data.bad_input = skip): %s", msg)
            x = x.to(di.device, non_blocking=True)
        x = x.contiguous(memory_format=fmt)
        model.train()
        quantize = step >= warm
        with autocast(precision, di.device):  # fp32 by default; bf16 keeps the quantizer in FP32 (quantize.py)
            recon, out = net(x) if quantize else net(x, quantize=False)
        if not quantize:
            bank.append(out.pop("vectors"))
            if step == warm - 1:  # the last unquantized step: the codebook starts from k-means of the vectors
                km = model.quantizer.init_kmeans_(torch.cat(list(bank)), batches=len(bank), seed=cfg.seed)
                bank.clear()
                log.info("AugVAE %s: codebook set by k-means after %d unquantized steps (%.0f%% of codes used, "
                         "mean squared distance %.4g)", variant, warm, 100 * km["used"], km["mse"])
        recon, loss = recon.float(), out["loss"].float()
        p_loss = x.new_zeros(())
        if perceptual is not None:
            p_loss = perceptual(recon, x)
            loss = loss + t.lpips_weight * p_loss
        e_loss = x.new_zeros(())
        if edge_weight > 0:
            e_loss = edge_loss(recon, x.float())
            loss = loss + edge_weight * e_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # the final decay scales this step's rate only: the groups keep the plateau's rate, which the scheduler
        # reads and halves and the checkpoint stores
        plateau_lr = [g["lr"] for g in opt.param_groups]
        decay = lr_decay_factor(step, total, t.lr_decay_fraction)
        for g in opt.param_groups:
            g["lr"] *= decay
        step_lr = opt.param_groups[0]["lr"]
        opt.step()
        for g, lr in zip(opt.param_groups, plateau_lr):
            g["lr"] = lr
        loss = loss.detach()
        plateau["sum"] += loss.double()
        plateau["n"] += 1
        if plateau["n"] >= plateau_every:  # a plateau check reads the mean loss (one host read per interval)
            mean = plateau["sum"] / plateau["n"]
            if di.distributed:  # every process must see the same loss, or their learning rates drift apart
                torch.distributed.all_reduce(mean)
                mean /= di.world_size
            sched.step(float(mean))
            plateau.update(sum=torch.zeros_like(plateau["sum"]), n=0)
        mse = out["mse"]  # a float64 tensor (the loss tensor is out["loss"])
        stats = {k: v for k, v in out.items() if k not in ("loss", "mse")}
        # device tensors: run_steps reads them (one host read) when it writes a log line
        return {"loss": loss, "mse": mse, "psnr": psnr_from_mse(mse),
                "perceptual": p_loss.detach(), "edge": e_loss.detach(), "lr": step_lr, **stats}

    def save_fn(step: int) -> None:
        rng = all_rng_states(di)  # every rank's stream (a collective under DDP)
        if di.is_main:
            save_checkpoint(path, {
                "kind": kind, "model_args": _model_args(model), "config": cfg.to_dict(), "step": step,
                "finished": step >= total, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "rng": rng,
                "plateau": {"sum": float(plateau["sum"]), "n": plateau["n"]},
                "world_size": di.world_size,
                # inside the unquantized warm-up: the vectors kept so far, so that a resumed run sets the same codebook
                **({"kmeans_bank": [b.cpu() for b in bank]} if step < warm else {})})
            provenance.record(path, made)
        if di.distributed:
            torch.distributed.barrier()

    try:
        run_steps(step_fn, start=start, total=total, save_fn=save_fn, ckpt_every=t.ckpt_every, log=csv_log,
                  log_every=t.log_every, timeout_s=t.timeout_s, desc=f"AugVAE {variant}", is_main=di.is_main,
                  stop_after=stop_after, progress=progress)
    finally:
        if batches is not None:
            batches.close()  # ends the loader's worker processes now (also after stop_after or an error)
    return path


def unquantized_steps(cfg: Config, variant: str) -> int:
    """Steps of the unquantized warm-up of ``variant`` (``augvae_train.unquantized_steps``): single-level trainings
    only (SL and the control), and fewer than the run's steps."""
    warm = cfg.augvae_train.unquantized_steps if variant in ("sl", "baseline") else 0
    total = planned_steps(cfg, variant)
    if warm and warm >= total:
        raise ValueError(f"augvae_train.unquantized_steps ({warm}) must be fewer than the {variant} run's {total} "
                         f"steps: the codebook would never be trained; lower it or set it to 0 (off)")
    return warm


def _strip_variant(args: dict[str, Any]) -> dict[str, Any]:
    args = dict(args)
    return {"variant": args.pop("variant"), **args}


def _initial_model_shape(cfg: Config, variant: str) -> AugVAE:
    """The architecture a checkpoint of ``variant`` must have under this profile (no weights loaded)."""
    m = AugVAE.from_config(cfg, VARIANTS[variant][2])
    return AugVAE("sl", **{**m.args, "sl_quantize_fine": False}) if variant == "baseline" else m


def psnr_from_mse(mse, peak_to_peak: float = 2.0):
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2) from their mean squared error: a float for a float, a
    float64 tensor on the same device for a tensor (no host read)."""
    if torch.is_tensor(mse):
        return 10 * torch.log10(peak_to_peak**2 / mse.double().clamp_min(1e-12))
    return 10 * math.log10(peak_to_peak**2 / max(mse, 1e-12))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train AugVAE-ML, the AugVAE-SL finetune or the VQ-VAE baseline")
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--variant", default="ml", choices=list(VARIANTS))
    args = ap.parse_args(argv)
    cfg = load_profile(args.profile)
    di = setup_distributed(cfg.resolved_device())
    try:
        print(train_augvae(cfg, args.variant, dist_info=di))
    finally:
        from lverse_core.training.loop import cleanup_distributed

        cleanup_distributed()


if __name__ == "__main__":
    main()
