"""Training BiART on pre-tokenized image codes and tokenized captions (paper §3.4-3.5).

No VAE in the loop: the images were encoded once by AugVAE-SL (``lverse_core.training.pretokenize``), the captions by the
run's ``TextTokenizer``. Each optimizer step takes one global batch of (caption, image) pairs from ``StepSampler``
(``biart_train.batch_size`` per process, as AugVAE's batch) and trains one direction, text->image on even steps
and image->text on odd steps (§3.4: "alternately for each iteration"); ``biart_train.direction: mixed`` instead
trains both directions on every batch (two forward passes, one optimizer step), and ``t2i`` / ``i2t`` train one
direction only (the one-direction controls of the claims notebook). The loss is
``ref_loss_weight * NLL[REF] + gen_loss_weight * NLL[GEN]``, logged per direction and part.

Optimisation follows minGPT (AdamW(0.9, 0.95), weight decay 0.1 on Linear weights only, grad-norm clip 1.0) with
linear warmup and cosine decay; ``precision: auto`` trains in bf16 autocast on GPUs and on CPUs with native bf16
matmuls (AMX / AVX512-BF16, ~2x faster than FP32 there), in FP32 on other CPUs (lverse_core/hardware.py); fp16 with
a GradScaler (the paper trains in FP16, §3.5) needs a GPU. DDP under
torchrun. Checkpoints are atomic and hold the optimizer, scaler and every rank's RNG states, so a killed run resumes
bit-exactly on the same number of processes (the learning rate is a pure function of the step).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lverse_core.models.biart import I2T, T2I, BiART, BiARTArgs
from lverse_core.config import Config
from lverse_core.hardware import resolve_precision as _resolve
from lverse_core.training.loop import (CheckpointError, CSVLog, DistInfo, StepSampler, all_rng_states, autocast,
                                       check_model_args, load_checkpoint, restore_rng_states,
                                       run_steps, save_checkpoint, seed_everything, setup_distributed)
from lverse_core.training.loop import load_model_state
from lverse_core.training.checkpoint_paths import checkpoint_path

CKPT_KIND = "biart"
LOG_FIELDS = ["loss", "t2i_ref", "t2i_gen", "i2t_ref", "i2t_gen", "lr", "tokens_per_s"]


@dataclass
class PairedTokens:
    """Training pairs: caption ``m`` (text[m], (L,) ids) belongs to image ``owner[m]`` (codes[owner[m]], (N,))."""

    text: torch.Tensor  # (M, L) long
    owner: torch.Tensor  # (M,) long, index into codes
    codes: torch.Tensor  # (n_images, N) int16/int32/long image codes
    # what the pairs were made from, as provenance ids (``paired_tokens``: code file, tokenizer, AugVAE-SL); a
    # BiART trained on them records these. None: pairs made in memory (tests, benchmarks)
    inputs: dict[str, str] | None = None

    def __post_init__(self):
        if len(self.text) != len(self.owner):
            raise ValueError(f"{len(self.text)} captions but {len(self.owner)} owners")
        if len(self.owner) and (self.owner.min() < 0 or self.owner.max() >= len(self.codes)):
            raise ValueError("caption owners point outside the image codes")

    def batch(self, idx: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.as_tensor(idx)
        return self.text[i].to(device), self.codes[self.owner[i]].long().to(device)


def paired_tokens(cfg: Config, tokenizer, split: str = "train") -> PairedTokens:
    """Captions of ``split`` (encoded with ``tokenizer``) paired with the AugVAE-SL codes of their images."""
    from lverse_core.data.loaders import caption_records
    from lverse_core.training.pretokenize import load_codes

    codes, image_ids = load_codes(cfg, split)
    row = {int(i): r for r, i in enumerate(image_ids)}
    texts, owners = [], []
    missing = []
    for rec in caption_records(cfg, split):
        if rec["image_id"] not in row:
            missing.append(rec["image_id"])
            continue
        for c in rec["captions"]:
            texts.append(c)
            owners.append(row[rec["image_id"]])
    if missing:
        raise ValueError(f"{len(missing)} {split} images have captions but no codes (e.g. {missing[:3]}); re-run "
                         f"the pre-tokenization (notebook 01) for profile {cfg.profile}")
    flat = torch.from_numpy(codes.reshape(len(codes), -1).astype("int32"))
    return PairedTokens(tokenizer.encode(texts), torch.tensor(owners), flat, biart_inputs(cfg, split))


def biart_inputs(cfg: Config, split: str = "train") -> dict[str, str]:
    """The provenance ids of what this run's BiART trains on: the code file of ``split``, the tokenizer, and the
    AugVAE-SL checkpoint whose codebook the codes index (and whose decoder turns generated codes into images)."""
    from lverse_core import provenance
    from lverse_core.data.tokenizer import tokenizer_path
    from lverse_core.training.pretokenize import codes_dir

    return {f"codes ({split})": provenance.input_id(codes_dir(cfg) / f"{split}_codes.npy"),
            "tokenizer": provenance.input_id(tokenizer_path(cfg)),
            "AugVAE-SL checkpoint": provenance.input_id(checkpoint_path(cfg, "sl"))}


def biart_made_from(cfg: Config, inputs: dict[str, str] | None = None):
    """What a BiART checkpoint of ``cfg`` is made from (``lverse_core.provenance``); ``inputs`` default: this run's
    code file, tokenizer and AugVAE-SL (``biart_inputs``)."""
    from lverse_core import provenance

    return provenance.made_from(cfg, "biart", biart_inputs(cfg) if inputs is None else inputs, "BiART checkpoint")


def synthetic_pairs(n_images: int, captions_per_image: int, text_len: int, text_vocab: int, image_tokens: int,
                    image_vocab: int, seed: int = 0, pad_id: int = 0) -> PairedTokens:
    """A learnable toy task for tests and benchmarks: each image's codes are a fixed function of its first
    caption's tokens, and its other captions are noisy copies of that one (no VAE, no data set needed)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(1, text_vocab, (n_images, text_len), generator=g)
    lengths = torch.randint(text_len // 2, text_len + 1, (n_images,), generator=g)
    base[torch.arange(text_len)[None] >= lengths[:, None]] = pad_id
    mix = torch.randint(0, image_vocab, (text_len, image_tokens), generator=g)
    codes = (base @ mix.clamp(max=7) + base[:, :1]) % image_vocab  # (n_images, N)
    text = base.repeat_interleave(captions_per_image, 0)
    flip = torch.rand(text.shape, generator=g) < 0.1
    text = torch.where(flip & (text != pad_id), torch.randint(1, text_vocab, text.shape, generator=g), text)
    return PairedTokens(text, torch.arange(n_images).repeat_interleave(captions_per_image), codes)


def lr_at(step: int, cfg: Config) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine decay to ``lr * min_lr_ratio`` at ``steps``."""
    t = cfg.biart_train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    progress = min(1.0, (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps))
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def resolve_precision(cfg: Config, device: torch.device) -> str:
    """The precision BiART trains in on ``device`` (``biart_train.precision``; ``auto``: lverse_core/hardware.py)."""
    return _resolve(cfg.biart_train.precision, device, what="biart_train.precision")


def load_biart(cfg: Config, path: str | Path | None = None, *, tokenizer=None, text_vocab_size: int | None = None,
               pad_id: int | None = None, map_location="cpu") -> BiART:
    """The trained BiART of this run (``runs/<profile>/biart.pt``) in eval mode; a checkpoint whose architecture
    differs from ``cfg`` (layers, width, text_len, grid, vocabularies) is a CheckpointError listing each difference.
    The run's own checkpoint (no ``path``) must also have been made from this run's settings, codes, tokenizer and
    AugVAE-SL (its provenance record), else it is refused as stale; a ``path`` given is the caller's to vouch for."""
    own = path is None
    path = Path(path) if path is not None else checkpoint_path(cfg, "biart")
    state = load_checkpoint(path, CKPT_KIND, map_location=map_location)
    saved = dict(state["model_args"])
    if tokenizer is not None:
        text_vocab_size, pad_id = tokenizer.vocab_size, tokenizer.pad_id
    expected = BiART.args_from_config(cfg, text_vocab_size if text_vocab_size is not None else saved.get("text_vocab"),
                                      pad_id if pad_id is not None else saved.get("pad_id")).arch()
    check_model_args(path, {k: v for k, v in saved.items() if k != "dropout"}, expected)
    if own:
        from lverse_core import provenance

        provenance.require(path, biart_made_from(cfg), CheckpointError)
    try:
        model = BiART(BiARTArgs(**saved))
    except TypeError as e:  # an argument BiARTArgs does not know
        raise CheckpointError(f"checkpoint {path}: model_args do not describe a BiART ({e}); delete it and re-run "
                              f"notebooks/02_train_biart.ipynb") from None
    load_model_state(path, model, state["model"])
    return model.eval()


def train_biart(cfg: Config, data: PairedTokens, *, text_vocab_size: int, pad_id: int,
                path: str | Path | None = None, resume: bool = True, log_name: str = "biart",
                stop_after: int | None = None, dist_info: DistInfo | None = None) -> BiART:
    """Train (or resume) BiART for ``cfg.biart_train.steps`` optimizer steps; returns the model in eval mode.

    Checkpoint: ``path`` (default runs/<profile>/biart.pt); log: runs/<profile>/logs/<log_name>.csv.
    """
    t = cfg.biart_train
    info = dist_info or setup_distributed(cfg.device)
    dev = info.device
    path = Path(path) if path is not None else checkpoint_path(cfg, "biart")
    seed_everything(cfg.seed + info.rank)
    model = BiART.from_config(cfg, text_vocab_size=text_vocab_size, pad_id=pad_id).to(dev)
    if data.text.size(1) != model.args.text_len:
        raise ValueError(f"captions are encoded to {data.text.size(1)} tokens but biart.text_len is "
                         f"{model.args.text_len}; rebuild the tokenizer with this profile")
    if data.codes.size(1) != model.args.image_tokens:
        raise ValueError(f"image codes have {data.codes.size(1)} positions but the profile's grid gives "
                         f"{model.args.image_tokens}; re-run pre-tokenization for profile {cfg.profile}")
    opt = torch.optim.AdamW(model.param_groups(t.weight_decay), lr=t.lr, betas=tuple(t.betas),
                            fused=dev.type == "cuda")
    precision = resolve_precision(cfg, dev)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    start = 0
    from lverse_core import provenance

    made = biart_made_from(cfg, data.inputs or {})
    # resumed (or reused when finished) only when made from these settings and pairs; else trained from step 0
    if resume and provenance.retrain_reason(path, made, log=print if info.is_main else None) is None:
        state = load_checkpoint(path, CKPT_KIND, map_location=dev)
        check_model_args(path, {k: v for k, v in state["model_args"].items() if k != "dropout"},
                         model.args.arch())
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        restore_rng_states(path, state["rng"], info)
        start = int(state["step"])
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if info.distributed else model
    # batch_size is per process, as AugVAE's: the global batch is batch_size x world size
    sampler = StepSampler(len(data.text), t.batch_size * info.world_size, cfg.seed, info.rank, info.world_size)
    log = CSVLog(cfg.runs_root / "logs" / f"{log_name}.csv", LOG_FIELDS, resume_step=start if start else None) \
        if info.is_main else None
    seq_len = model.args.text_len + model.args.image_tokens + 1
    w = {"ref": t.ref_loss_weight, "gen": t.gen_loss_weight}

    def step_fn(step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        model.train()
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        text, image = data.batch(sampler.indices(step), dev)
        if t.direction == "alternate":
            jobs = [(T2I if step % 2 == 0 else I2T, text, image)]
        elif t.direction in (T2I, I2T):  # one direction only: the control of the bidirectional claim (notebook 07)
            jobs = [(t.direction, text, image)]
        else:  # mixed: each direction on half of the batch
            h = len(text) // 2
            jobs = [(T2I, text[:h], image[:h]), (I2T, text[h:], image[h:])]
        # the losses stay on the device (run_steps reads them when it writes a log line)
        metrics, total = {}, None
        for direction, tx, im in jobs:
            with autocast(precision, dev):
                parts = net(tx, im, direction)
            loss = (w["ref"] * parts["ref"] + w["gen"] * parts["gen"]) * len(tx) / len(text)
            scaler.scale(loss).backward()
            value = loss.detach().double()
            total = value if total is None else total + value
            metrics[f"{direction}_ref"], metrics[f"{direction}_gen"] = parts["ref"].detach(), parts["gen"].detach()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        tokens = len(text) * seq_len * info.world_size
        return {"loss": total, **metrics, "lr": lr, "tokens_per_s": tokens / (time.perf_counter() - t0)}

    def save_fn(next_step: int) -> None:
        rngs = all_rng_states(info)  # every rank's stream (a collective under DDP)
        if info.is_main:
            save_checkpoint(path, {"kind": CKPT_KIND, "model_args": {**model.args.arch(), "dropout": model.args.dropout},
                                   "config": cfg.to_dict(), "step": next_step, "model": model.state_dict(),
                                   "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "rng": rngs})
            provenance.record(path, made)

    if start >= t.steps:
        return model.eval()
    run_steps(step_fn, start=start, total=t.steps, save_fn=save_fn, ckpt_every=t.ckpt_every, log=log,
              log_every=t.log_every, timeout_s=t.timeout_s, desc="BiART", is_main=info.is_main,
              stop_after=stop_after)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    """``torchrun --nproc_per_node=K -m lverse_core.training.biart_train --profile P``: train BiART on the pre-tokenized codes
    (notebook 01 writes them) with DDP; a re-run resumes from runs/<profile>/biart.pt."""
    import argparse

    from lverse_core.data.tokenizer import ensure_tokenizer
    from lverse_core.config import load_profile
    from lverse_core.training.loop import cleanup_distributed

    ap = argparse.ArgumentParser(description=main.__doc__.split(";")[0])
    ap.add_argument("--profile", default="smoke")
    args = ap.parse_args(argv)
    cfg = load_profile(args.profile)
    info = setup_distributed(cfg.resolved_device())
    try:
        if info.is_main:  # one process builds the tokenizer file, the others read it after the barrier
            tok = ensure_tokenizer(cfg)
        if info.distributed:
            torch.distributed.barrier()
        if not info.is_main:
            tok = ensure_tokenizer(cfg)
        train_biart(cfg, paired_tokens(cfg, tok, "train"), text_vocab_size=tok.vocab_size, pad_id=tok.pad_id,
                    dist_info=info)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()


__all__ = ["PairedTokens", "biart_inputs", "biart_made_from", "paired_tokens", "synthetic_pairs", "lr_at", "train_biart",
           "load_biart", "CheckpointError", "LOG_FIELDS"]
