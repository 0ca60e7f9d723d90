"""Pre-tokenization: every image of a split encoded once by the trained AugVAE-SL, so BiART trains without the VAE.

    runs/<profile>/codes/<split>_codes.npy    uint16 (N, g, g), g = cfg.image_grid, rows in record order
    runs/<profile>/codes/<split>_index.json   {"image_ids": [...], "grid": g, "codebook_size": K, "checkpoint": ...}

Images are decoded by the kit's one image loader (``data.load_image``, as everywhere else, with the
``data.bad_input`` policy) and go through the evaluation transform (resize + centre crop, no augmentation) and
the SL encoder in FP32 (paper §3.5: the quantizer underflows in lower precision), in batches. Decoding runs in
``data.num_workers`` DataLoader worker processes (0: in the main process), in record order, so the GPU is not left
waiting on JPEG decoding at ImageNet/COCO scale; a bad image is reported back from the worker. A run is
resumable: codes are written into ``<split>_codes.partial.npy`` (a memory map) and the count of finished rows
into ``<split>_progress.json`` after each batch; a killed run continues from there, and a finished split (final
files present, same image ids and same checkpoint) is not redone. The final files appear by atomic rename only
when the split is complete, with its provenance record (``<split>_codes.npy.made-from.json``: the SL checkpoint's
id, a hash of its file, and the data set's). ``load_codes`` refuses codes whose record does not match the current
``augvae_sl.pt`` and data set.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from lverse_core.config import Config
from lverse_core.report import write_json_atomic
from lverse_core.training.loop import CheckpointError

SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)


def codes_dir(cfg: Config) -> Path:
    return cfg.runs_root / "codes"


def _paths(cfg: Config, split: str) -> dict[str, Path]:
    d = codes_dir(cfg)
    return {"codes": d / f"{split}_codes.npy", "index": d / f"{split}_index.json",
            "partial": d / f"{split}_codes.partial.npy", "progress": d / f"{split}_progress.json"}


def checkpoint_id(path: Path) -> str:
    """The identity of a checkpoint file: a hash of its whole content, so a retrained checkpoint (same size,
    same step count) has another id while a copied or touched one keeps its id (``lverse_core.provenance.file_id``:
    cached in the checkpoint's record while its size and mtime stay the same)."""
    from lverse_core.provenance import file_id

    return file_id(path)


def sl_checkpoint_id(cfg: Config) -> str:
    """The id of this profile's AugVAE-SL checkpoint (``runs/<profile>/augvae_sl.pt``), or a CheckpointError."""
    from lverse_core.training.augvae_train import checkpoint_path

    path = checkpoint_path(cfg, "sl")
    if not path.exists():
        raise CheckpointError(f"{path} does not exist: train AugVAE-SL first (notebooks/01_train_augvae.ipynb)")
    return checkpoint_id(path)


def codes_made_from(cfg: Config, split: str, sl_id: str | None = None):
    """What the code file of ``split`` is made from (``lverse_core.provenance``): the AugVAE-SL checkpoint that
    encoded it (``sl_id``; default the current one's id) and the data set."""
    from lverse_core import provenance
    from lverse_core.data.identity import dataset_id
    from lverse_core.training.augvae_train import checkpoint_path

    if sl_id is None:
        sl_id = provenance.input_id(checkpoint_path(cfg, "sl"))
    return provenance.made_from(
        cfg, "codes", {"AugVAE-SL checkpoint": sl_id, "data set": dataset_id(cfg)}, f"code file ({split})",
        rebuild="pre-tokenization (notebooks/01_train_augvae.ipynb or lverse_core.training.pretokenize."
                "pretokenize(cfg)), then BiART (notebooks/02_train_biart.ipynb), which was trained on the old codes")


def load_codes(cfg: Config, split: str) -> tuple[np.ndarray, list[int]]:
    """The code file of ``split``: (uint16 array (N, g, g), image ids in row order); clear errors if absent/bad.

    Codes made by another AugVAE-SL checkpoint than the current ``runs/<profile>/augvae_sl.pt`` (SL retrained
    since) are refused: BiART would otherwise train on, and generation decode, codes of another codebook.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    p = _paths(cfg, split)
    if not p["codes"].exists() or not p["index"].exists():
        hint = " (a pre-tokenization run was interrupted; re-run it to finish)" if p["partial"].exists() else ""
        raise FileNotFoundError(f"{p['codes']} or its index does not exist{hint}; run notebooks/01_train_augvae.ipynb "
                                f"or lverse_core.training.pretokenize.pretokenize(cfg) first")
    rerun = "delete it and re-run pre-tokenization (notebooks/01_train_augvae.ipynb)"
    try:
        codes = np.load(p["codes"], mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # torn (cut short), not an .npy, or an object array
        raise ValueError(f"{p['codes']} cannot be read ({type(e).__name__}: {str(e)[:120]}); {rerun}") from None
    try:
        index = json.loads(p["index"].read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{p['index']} cannot be read ({type(e).__name__}); {rerun}") from None
    ids = index.get("image_ids") if isinstance(index, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError(f"{p['index']} has no 'image_ids' list of integers (the image of each code row); {rerun}")
    g = cfg.image_grid
    if codes.dtype != np.uint16 or codes.ndim != 3 or codes.shape[1:] != (g, g):
        raise ValueError(f"{p['codes']} holds {codes.dtype} {codes.shape}, expected uint16 (N, {g}, {g}) for profile "
                         f"{cfg.profile}; delete it and re-run pre-tokenization")
    if len(ids) != codes.shape[0]:
        raise ValueError(f"{p['index']} lists {len(ids)} image ids for {codes.shape[0]} code rows; re-run "
                         f"pre-tokenization")
    top = int(codes.max()) if codes.size else 0
    if top >= cfg.augvae.codebook_size:
        raise ValueError(f"{p['codes']} holds code {top}, beyond the codebook of {cfg.augvae.codebook_size} codes "
                         f"(augvae.codebook_size) of profile {cfg.profile}; {rerun}")
    from lverse_core import provenance

    # made by the current AugVAE-SL from this data set (its record says), else refused: BiART would train on, and
    # generation decode, codes of another codebook or of other images
    provenance.require(p["codes"], codes_made_from(cfg, split, sl_checkpoint_id(cfg)), CheckpointError)
    return np.asarray(codes), [int(i) for i in ids]


@torch.no_grad()
def encode_images(model, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, 3, S, S) images in [-1, 1] -> (N, g, g) long SL codes, batched, FP32, on the model's device."""
    device = next(model.parameters()).device
    model.eval()
    out = [model.encode(images[i: i + batch_size].to(device).float()).cpu()
           for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out)


def _finished(index: dict, meta: dict) -> bool:
    """Whether a final index was made from exactly ``meta``'s images, grid, codebook and checkpoint."""
    listed = index.get("listed_ids", index.get("image_ids"))  # listed_ids is written only when images were skipped
    rest = {k: v for k, v in index.items() if k not in ("image_ids", "listed_ids", "skipped_ids")}
    return listed == meta["image_ids"] and rest == {k: v for k, v in meta.items() if k != "image_ids"}


def pretokenize_split(cfg: Config, split: str, model, checkpoint_id: str = "", batch_size: int = 64,
                      records=None, load_image=None, stop_after_batches: int | None = None) -> Path:
    """Encode all images of ``split``; resumable; returns the codes path. See the module docstring.

    ``records`` (default ``data.caption_records(cfg, split)``) and ``load_image(record) -> (3, S, S)`` tensor
    (default: the run's decoded store, ``lverse_core.data.decoded_store``, where notebook 00 wrote it; else the
    kit's image loader, ``data.load_image``, then ``data.eval_transform``: the same decoding of 16-bit, float and
    transparent images that AugVAE trained on) can be given for tests.
    An image the loader rejects (``BadInputError``) follows ``data.bad_input``: ``error`` stops with the file
    named; ``skip`` leaves it out of the code file (its id is listed under ``skipped_ids`` in the index).
    ``stop_after_batches`` stops early without finishing (tests use it to simulate a kill).
    """
    from lverse_core.data.loaders import BadInputError, decoded_batches, eval_transform
    from lverse_core.data.loaders import load_image as load_rgb

    num_workers = cfg.data.num_workers
    if records is None:
        from lverse_core.data.loaders import caption_records

        records = caption_records(cfg, split)
    ids = [int(r["image_id"]) for r in records]
    if load_image is None:
        from lverse_core.data.decoded_store import decoded_split
        from lverse_core.data.pixels import signed_from_uint8

        store = decoded_split(cfg, split)
        if store is not None and store.has(ids):  # decoded once by notebook 00: the same pixels, nothing to decode
            num_workers = 0

            def load_image(rec):
                return signed_from_uint8(store.image(rec["image_id"]))
        else:
            tf = eval_transform(cfg.data.image_size)

            def load_image(rec):
                return tf(load_rgb(rec["path"], cfg.data.min_image_side))  # a file or a tar-shard member

    n, g, K = len(ids), cfg.image_grid, model.quantizer.codebook_size
    if K > 65536:
        raise ValueError(f"codebook of {K} codes does not fit uint16 code files")
    from lverse_core import provenance

    meta = {"image_ids": ids, "grid": g, "codebook_size": K, "checkpoint": checkpoint_id}
    made = codes_made_from(cfg, split, checkpoint_id)
    p = _paths(cfg, split)
    p["codes"].parent.mkdir(parents=True, exist_ok=True)
    if p["codes"].exists() and p["index"].exists() and _finished(json.loads(p["index"].read_text()), meta) \
            and provenance.retrain_reason(p["codes"], made) is None:
        return p["codes"]  # finished with the same images, model and data set: not redone

    done, skipped = 0, []  # skipped: row numbers of bad images (data.bad_input = skip)
    meta_key = _digest(meta)
    if p["partial"].exists() and p["progress"].exists():
        prog = json.loads(p["progress"].read_text())
        if prog.get("meta_sha256") == meta_key:
            done, skipped = int(prog["done"]), [int(i) for i in prog.get("skipped", [])]
    if done == 0:
        arr = np.lib.format.open_memmap(p["partial"], mode="w+", dtype=np.uint16, shape=(n, g, g))
    else:
        arr = np.load(p["partial"], mmap_mode="r+")
    batches = 0
    for start, loaded in decoded_batches(records, load_image, done, batch_size, num_workers):
        recs = records[start: start + batch_size]
        rows, images = [], []
        for k, (image, error) in enumerate(loaded):
            if error is None:
                images.append(image)
                rows.append(start + k)
                continue
            if cfg.data.bad_input == "error":
                raise BadInputError(f"pre-tokenizing split {split!r}: {error}; fix the file or set "
                                    f"data.bad_input = skip") from None
            log.warning("pre-tokenization skips a bad image (data.bad_input = skip): %s", error)
            skipped.append(start + k)
        if images:
            codes = encode_images(model, torch.stack(images), batch_size)
            if codes.shape[1:] != (g, g):
                raise ValueError(f"model gives {tuple(codes.shape[1:])} code maps, profile expects ({g}, {g})")
            arr[rows] = codes.numpy().astype(np.uint16)
            arr.flush()  # rows on disk before the progress file says they are
        # the progress file names the run by a digest: writing every image id after every batch was quadratic
        # (100k images: ~1,600 writes of ~600 KB; the first GPU runs spent minutes here)
        write_json_atomic(p["progress"], {"meta_sha256": meta_key, "done": start + len(recs), "skipped": skipped})
        batches += 1
        if stop_after_batches is not None and batches >= stop_after_batches and start + len(recs) < n:
            return p["partial"]
    index = dict(meta)
    if skipped:
        keep = np.setdiff1d(np.arange(n), skipped)
        if not len(keep):
            raise BadInputError(f"pre-tokenizing split {split!r}: every one of its {n} images is bad")
        compact = p["partial"].with_name(p["partial"].name + ".compact.npy")
        np.save(compact, np.asarray(arr[keep]))
        del arr
        os.replace(compact, p["codes"])
        p["partial"].unlink()
        index.update(image_ids=[ids[i] for i in keep], listed_ids=ids, skipped_ids=[ids[i] for i in skipped])
    else:
        del arr
        os.replace(p["partial"], p["codes"])
    write_json_atomic(p["index"], index)
    provenance.record(p["codes"], made)
    p["progress"].unlink(missing_ok=True)
    return p["codes"]


def _digest(meta: dict) -> str:
    """SHA-256 of ``meta`` (image ids, grid, codebook size, checkpoint id): what a partial run must match to resume."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def pretokenize(cfg: Config, splits=SPLITS, device: str | None = None, batch_size: int = 64) -> dict[str, Path]:
    """Encode ``splits`` with the trained AugVAE-SL of this profile (``runs/<profile>/augvae_sl.pt``)."""
    from lverse_core.training.augvae_train import checkpoint_path, load_augvae

    model = load_augvae(cfg, "sl", device or cfg.resolved_device())
    ckpt = checkpoint_id(checkpoint_path(cfg, "sl"))
    return {s: pretokenize_split(cfg, s, model, ckpt, batch_size) for s in splits}
