"""The run's images decoded once, by notebook 00, and read by every later stage that needs them whole.

Four stages read every image of a split as the same uint8 pixels: AugVAE's training split (ML, SL and the control),
pre-tokenization, the CLIP reranker and the attribute judge. Each used to decode the PNGs itself, in its own
process (notebooks 01-03 run in separate kernels); on the ``gpu`` profile's 100,000 images that is most of a
minute per stage. Where ``augvae_train.decode`` is ``once`` (the images fit in memory) and the data set is the
embedded one, notebook 00 decodes each caption split (train with restval, val, test) through the kit's one loader
and the eval transform, exactly what those stages did, into ``runs/<profile>/decoded/<split>.npz``: the images
``(N, 3, S, S)`` uint8 and their ``image_id`` s, with a provenance record (``lverse_core.provenance``) naming the
data set and the image settings.

Readers (``decoded_split``) never write: a split with no store (another profile's settings, a run that has not
been through notebook 00, an image the loader refused) or a stale one (made from another data set or image size,
said in one printed line) gives None, and the stage decodes the images itself as before. The pixels are the same
either way: the store holds what ``uint8_from_signed(eval_transform(load_image(path)))`` gives, and
``signed_from_uint8`` of it equals the eval transform's floats exactly (both are ``k / 127.5 - 1``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from lverse_core.config import Config
from lverse_core.config.sources import data_source

SPLITS = ("train", "val", "test")  # caption splits; train includes Karpathy's restval
KIND = "decoded"


def enabled(cfg: Config) -> bool:
    """Whether this profile keeps a decoded store: images that fit in memory (``augvae_train.decode: once``) of the
    embedded set, whose image ids are its file names in every view (Karpathy JSON, ImageFolder, TSV)."""
    return cfg.augvae_train.decode == "once" and data_source(cfg).embedded


def store_path(cfg: Config, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"no decoded store for split {split!r}; the splits are {SPLITS}")
    return cfg.runs_root / KIND / f"{split}.npz"


def made_from(cfg: Config, split: str):
    """What the store of ``split`` is made from: the data set and the image settings (``lverse_core.provenance``)."""
    from lverse_core import provenance
    from lverse_core.data.identity import dataset_id

    return provenance.made_from(cfg, KIND, {"data set": dataset_id(cfg)}, f"decoded images ({split})")


@dataclass
class DecodedSplit:
    """One split's images, ``images`` (N, 3, S, S) uint8, and ``ids`` (N,) their image ids, in record order."""

    images: torch.Tensor
    ids: list[int]

    def __post_init__(self):
        self._row = {i: r for r, i in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def has(self, image_ids: Sequence[int]) -> bool:
        return all(int(i) in self._row for i in image_ids)

    def image(self, image_id: int) -> torch.Tensor:
        """One image, (3, S, S) uint8 (a view: do not modify it)."""
        return self.images[self._row[int(image_id)]]

    def rows(self, image_ids: Sequence[int]) -> torch.Tensor:
        """The images of ``image_ids``, in that order, as (M, 3, S, S) uint8: the stored tensor itself when that is
        the stored order (do not modify it), else a copy; KeyError for an id not held."""
        missing = [int(i) for i in image_ids if int(i) not in self._row]
        if missing:
            raise KeyError(f"{len(missing)} image ids are not in the decoded split (first: {missing[:5]})")
        if [int(i) for i in image_ids] == self.ids:
            return self.images
        return self.images[torch.as_tensor([self._row[int(i)] for i in image_ids], dtype=torch.long)]


def _eval_uint8(transform, min_side: int, record) -> np.ndarray:
    """A record's image as every whole-split stage decodes it: the kit's loader, the eval transform, uint8."""
    from lverse_core.data import loaders
    from lverse_core.data.pixels import uint8_from_signed

    return uint8_from_signed(transform(loaders.load_image(record["path"], min_side))).numpy()


def write_split(cfg: Config, split: str, log: Callable[[str], None] = print) -> Path | None:
    """Decode ``split``'s caption records into its store (kept when current), in ``data.num_workers`` DataLoader
    workers; None, with one line saying why, when an image is refused by the loader (the stages then decode,
    applying ``data.bad_input`` themselves)."""
    from lverse_core import provenance
    from lverse_core.data.loaders import caption_records, decoded_batches, eval_transform
    from lverse_core.report import atomic_write

    path, made = store_path(cfg, split), made_from(cfg, split)
    if provenance.decide(path, made).ok:
        return path
    records = caption_records(cfg, split)
    S = cfg.data.image_size
    images = np.empty((len(records), 3, S, S), np.uint8)
    load = partial(_eval_uint8, eval_transform(S), cfg.data.min_image_side)  # a partial: workers pickle it
    for start, batch in decoded_batches(records, load, 0, 256, cfg.data.num_workers):
        for k, (image, error) in enumerate(batch):
            if error is not None:
                log(f"decoded store of split {split!r} not written: {error}; the notebooks decode this split "
                    f"themselves")
                return None
            images[start + k] = image
    ids = np.asarray([int(r["image_id"]) for r in records], np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, images=images, ids=ids), binary=True)
    provenance.record(path, made, made_by="decoding")
    return path


def write_store(cfg: Config, splits: Sequence[str] = SPLITS, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Every split's store (notebook 00); {} when the profile keeps none (``enabled``)."""
    if not enabled(cfg):
        return {}
    t0, out = time.perf_counter(), {}
    for split in splits:
        path = write_split(cfg, split, log)
        if path is not None:
            out[split] = path
    if out:
        size = sum(p.stat().st_size for p in out.values())
        log(f"decoded {', '.join(out)} once into {out[next(iter(out))].parent} ({size / 2**20:.0f} MiB, "
            f"{time.perf_counter() - t0:.1f} s)")
    return out


_LOADED: dict[tuple, DecodedSplit] = {}  # one loaded split per (path, size, mtime): the stages of one process share it


def decoded_split(cfg: Config, split: str, log: Callable[[str], None] = print) -> DecodedSplit | None:
    """``split``'s stored images when the profile keeps a store and it is current; None otherwise (the caller
    decodes), with one line when a store exists but is stale or unreadable. Never writes."""
    from lverse_core import provenance

    if not enabled(cfg) or split not in SPLITS:
        return None
    path = store_path(cfg, split)
    if not path.exists():
        return None
    d = provenance.decide(path, made_from(cfg, split))
    if not d.ok:
        log(f"decoded images {path} not used ({d.summary()}): decoding the split here; notebook 00 rewrites it")
        return None
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _LOADED:
        try:
            with np.load(path) as z:
                images, ids = z["images"], z["ids"]
        except (OSError, ValueError, KeyError) as e:
            log(f"decoded images {path} not used (unreadable: {type(e).__name__}): decoding the split here; "
                f"notebook 00 rewrites it")
            return None
        S = cfg.data.image_size
        if images.dtype != np.uint8 or images.shape[1:] != (3, S, S) or ids.shape != (len(images),):
            log(f"decoded images {path} not used (holds {images.dtype} {images.shape} for {ids.shape} ids, expected "
                f"uint8 (N, 3, {S}, {S})): decoding the split here; notebook 00 rewrites it")
            return None
        _LOADED.clear()  # one split in memory at a time
        _LOADED[key] = DecodedSplit(torch.from_numpy(images), [int(i) for i in ids])
    return _LOADED[key]


def forget() -> None:
    """Drop the split this process holds (a caller that kept its own copy frees the memory)."""
    _LOADED.clear()


__all__ = ["DecodedSplit", "SPLITS", "decoded_split", "enabled", "forget", "store_path", "write_split",
           "write_store"]
