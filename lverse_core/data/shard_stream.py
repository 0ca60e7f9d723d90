"""Streaming tar shards with ``webdataset``, each sample read by exactly one (torchrun rank, DataLoader worker).

``shard_stream(cfg, split)`` is an IterableDataset over the split's shards (``lverse_core.data.shards``), split by
shard first across ranks (``webdataset.split_by_node``: torchrun's ``RANK``/``WORLD_SIZE``, else
torch.distributed) and then across the DataLoader workers of each rank (``webdataset.split_by_worker``). It keeps
exactly the samples ``caption_records(cfg, split, source="wds")`` lists (so missing captions or images and truncated
shards have already met ``data.bad_input``), by position inside each shard, and decodes images with the kit's
loader (``loaders.decode_image``: mode conversions, ``data.min_image_side``), an undecodable one following
``data.bad_input`` with its shard and key named. Map-style consumers (``CaptionImageDataset``, pre-tokenization) read
the same records by byte offset instead.
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import webdataset as wds

from lverse_core.config import Config
from lverse_core.data.loaders import caption_records, decode_image, eval_transform
from lverse_core.data.records import BadInputError
from lverse_core.data.shards import (IMAGE_EXTS, caption_list, numeric_keys, shard_listing, tail_splits, wds_index_dir,
                                     wds_root)

log = logging.getLogger(__name__)


class _SplitSamples:
    """The webdataset stage after the tar reader: keeps the split's samples (by position inside each shard, less
    the ones ``caption_records`` dropped), decodes them with the kit's loader and applies ``data.bad_input``."""

    def __init__(self, plan: dict[str, tuple], numeric_ids: bool, policy: str, min_side: int, transform):
        self.plan, self.numeric_ids, self.policy = plan, numeric_ids, policy
        self.min_side, self.transform = min_side, transform

    def __call__(self, samples):
        url, pos = None, 0
        for s in samples:
            if s["__url__"] != url:
                url, pos = s["__url__"], 0
            first, lo, hi, dropped = self.plan[url]
            key, i = s["__key__"], pos  # i: the sample's position inside its shard
            pos += 1
            if not lo <= i < hi or key in dropped:
                continue
            ext = next(e for e in IMAGE_EXTS if e in s)  # samples without one were dropped by caption_records
            try:
                image = decode_image(s[ext], f"{url}#{key}.{ext}", self.min_side)
            except BadInputError as e:
                if self.policy == "error":
                    raise BadInputError(f"{e}; fix the shard or set data.bad_input = skip") from None
                log.warning("skipping bad image (data.bad_input = skip): %s", e)
                continue
            captions, _ = caption_list(Path(url), key, s.get("txt"), s.get("json"))
            yield {"image": self.transform(image), "captions": [c for c in captions if c],
                   "image_id": int(key) if self.numeric_ids else first + i}


def _tar_problem(policy: str, exn: Exception) -> bool:
    """webdataset's exception handler: a tar that breaks while streaming (truncated, rewritten since it was indexed)
    stops the run under ``error``; under ``skip`` the rest of that shard is dropped."""
    where = next((a for a in reversed(exn.args) if isinstance(a, str) and a.endswith(".tar")), "a shard")
    if policy == "error":
        what = exn.args[0] if exn.args else exn
        raise BadInputError(f"{where}: unreadable tar data while streaming ({type(exn).__name__}: {what}); "
                            f"re-download or re-write the shard, or set data.bad_input = skip") from exn
    log.warning("skipping the rest of %s (data.bad_input = skip): %s", where, exn)
    return True


def shard_stream(cfg: Config, split: str, transform=None) -> wds.DataPipeline:
    """An IterableDataset of the split's items {"image": (3, S, S) in [-1, 1], "captions", "image_id"} read from
    the shards by webdataset, split across torchrun ranks (``split_by_node``) and DataLoader workers
    (``split_by_worker``) by shard: wrap it in a DataLoader with ``loaders.collate_captions``.

    It streams what ``caption_records(cfg, split, source="wds")`` lists (which applies ``data.bad_input`` to
    missing captions/images and truncated shards first), in shard order within each (rank, worker); with
    ``data.train_source: wds`` the train split is every sample, as there. With fewer
    shards than ranks x workers some get none; under DDP give every rank the same number of shards.
    """
    whole_train = cfg.data.train_source == "wds" and split in ("train", "restval")  # L-Verse-CC: all samples
    records = caption_records(cfg, split) if whole_train else caption_records(cfg, split, source="wds")
    kept = {(r["path"].shard, r["path"].key) for r in records}
    root, cache_dir = wds_root(cfg), wds_index_dir(cfg)
    listing = shard_listing(root, cache_dir)
    positions = tail_splits(len(listing), cfg.data.n_val, cfg.data.n_test, root, whole_train)[split]
    first: dict[Path, int] = {}  # shard -> position of its first sample in the listing
    inside: dict[Path, list[int]] = {}  # shard -> positions inside it that belong to the split
    dropped: dict[Path, set] = {}  # shard -> keys of the split that caption_records dropped (bad input)
    for i, (shard, entry) in enumerate(listing):
        first.setdefault(shard, i)
        if i in positions:
            inside.setdefault(shard, []).append(i - first[shard])
            if (shard, entry[0]) not in kept:
                dropped.setdefault(shard, set()).add(entry[0])
    plan = {str(s): (first[s], p[0], p[-1] + 1, frozenset(dropped.get(s, ()))) for s, p in inside.items()}
    stage = _SplitSamples(plan, numeric_keys(listing), cfg.data.bad_input, cfg.data.min_image_side,
                          transform or eval_transform(cfg.data.image_size))
    handler = partial(_tar_problem, cfg.data.bad_input)
    return wds.DataPipeline(wds.SimpleShardList(list(plan)), wds.split_by_node, wds.split_by_worker,
                            wds.tarfile_to_samples(handler=handler), stage)


__all__ = ["shard_stream"]
