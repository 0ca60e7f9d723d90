"""Run by tests/test_multinode.py: one process of a two-node torchrun job (two torchrun agents on this machine, one
process each, gloo on the CPU). In one process group it trains AugVAE-ML (``decode: per_step``, decoded in a
DataLoader worker), trains BiART and runs sharded generation (captions and images, shards in a shared folder),
everything under ``argv[1]``, the folder both "nodes" share (their ``LVERSE_WORKDIR``). An audit hook records every
file and folder this process creates, writes, renames or removes there, so the test can check who writes what.
The test imports the settings below to compute the one-process results it compares against."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from lverse_core.config import load_profile

# AugVAE as tests/test_augvae.py's DDP test: no data-based codebook init and no dead-code restart, which draw from
# one process's own batch and so differ between one process and two by design
AUGVAE = {"augvae_train.decode": "per_step", "augvae_train.ml_steps": 3, "augvae_train.log_every": 1,
          "augvae_train.ckpt_every": 2, "augvae.data_init": False, "augvae.dead_code_threshold": 0.0,
          "augvae.ema_update": "per_level"}
# BiART as tests/_ddp_biart_worker.py: no dropout (its random draws depend on the batch split)
BIART = {"data.image_size": 32, "augvae.codebook_size": 24, "biart.n_layer": 2, "biart.n_head": 2,
         "biart.n_embd": 32, "biart.text_len": 8, "biart.dropout": 0.0, "biart_train.steps": 4,
         "biart_train.warmup_steps": 1, "biart_train.ckpt_every": 2, "biart_train.log_every": 1,
         "biart_train.lr": 3e-3}


def augvae_cfg(runs: Path, batch: int, workers: int):
    return load_profile("ci", runs_dir=str(runs), **{**AUGVAE, "augvae_train.batch_size": batch,
                                                     "data.num_workers": workers})


def biart_cfg(runs: Path, batch: int):
    return load_profile("ci", runs_dir=str(runs), **{**BIART, "biart_train.batch_size": batch})


def biart_pairs():
    from lverse_core.training.biart_train import synthetic_pairs

    return synthetic_pairs(16, 2, 8, 30, 16, 24, seed=0)  # 16 image tokens: the 4x4 grid of 32 px


def write_images(root: Path, n: int = 12) -> Path:
    """An ImageFolder (one class) of ``n`` 40x36 PNGs, a gradient and a coloured square each."""
    from PIL import Image

    (root / "a").mkdir(parents=True)
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[0:36, 0:40]
    for i in range(n):
        a = np.stack([xx * 6, yy * 7, (xx + yy) * 3], -1).astype(np.float64)
        s, r, c = g.integers(6, 14), g.integers(0, 20), g.integers(0, 24)
        a[r:r + s, c:c + s] = g.integers(0, 256, 3)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(root / "a" / f"img{i:02d}.png")
    return root


def augvae_images(cfg, root: Path):
    from lverse_core.data.loaders import ImageFolderDataset, train_transform

    return ImageFolderDataset(root, cfg, train_transform(cfg.data.image_size))


class WriteAudit:
    """Every write-like operation on a path under ``root`` (``sys.addaudithook``), as paths relative to ``root``."""

    EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "shutil.move"}

    def __init__(self, root: Path):
        self.root, self.seen, self.active = str(root), [], True
        sys.addaudithook(self)

    def __call__(self, event: str, args) -> None:
        if not self.active:
            return
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else \
                bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            paths = [path] if writing else []
        elif event in self.EVENTS:
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
            paths = paths[1:] if event == "os.rename" else paths  # a rename writes its target
        else:
            return
        for p in paths:
            if isinstance(p, (str, os.PathLike)) and os.fspath(p).startswith(self.root):
                self.seen.append(f"{event} {os.path.relpath(os.fspath(p), self.root)}")


def main(work: Path) -> None:
    import torch

    from _generate_stubs import RecordingScorer, StubTokenizer, inputs, stub_decode, tiny_biart, tiny_cfg
    from lverse_core.sampling.generate import generate_captions, generate_images
    from lverse_core.training.augvae_train import train_augvae
    from lverse_core.training.biart_train import train_biart
    from lverse_core.training.loop import cleanup_distributed, setup_distributed

    rank = int(os.environ["RANK"])
    (work / f"pid-rank{rank}").write_text(str(os.getpid()))  # so that the test can end this process if it hangs
    audit = WriteAudit(work)
    info = setup_distributed("cpu")
    try:
        cfg = augvae_cfg(work / "runs" / "augvae", batch=2, workers=1)
        train_augvae(cfg, "ml", dataset=augvae_images(cfg, work / "images"), dist_info=info, progress=False)
        cfg = biart_cfg(work / "runs" / "biart", batch=4)
        # pad_id -100 never occurs: every rank averages its NLL over the same number of tokens (_ddp_biart_worker.py)
        train_biart(cfg, biart_pairs(), text_vocab_size=30, pad_id=-100, dist_info=info)
        gcfg = tiny_cfg(**{"sampling.n_repeats": 2})
        model, tok = tiny_biart(), StubTokenizer()
        codes, image_ids, captions, images = inputs()
        caps = generate_captions(gcfg, model, tok, codes, image_ids, RecordingScorer(), info, images=images,
                                 batch_size=4, shard_dir=work / "shards" / "captions")
        img_codes, recs = generate_images(gcfg, model, tok, captions, image_ids, RecordingScorer(), stub_decode,
                                          info, batch_size=6, shard_dir=work / "shards" / "images")
        if info.is_main:
            with open(work / "generated.pt", "wb") as f:  # a Python file: the audit sees it
                torch.save({"captions": caps, "codes": img_codes, "records": recs}, f)
    finally:
        cleanup_distributed()
    audit.active = False
    env = {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "LOCAL_WORLD_SIZE")}
    import lverse_core

    (work / f"report-rank{rank}.json").write_text(json.dumps(
        {"env": env, "device": str(info.device), "package": lverse_core.__file__, "writes": audit.seen}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
