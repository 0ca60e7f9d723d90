"""Webdataset tar shards in img2dataset's layout (Conceptual Captions, LAION-style sets; paper §4 trains on CC3M).

A shard is an uncompressed tar (``00000.tar``, ``00001.tar``, ...) whose members ``{key}.jpg``, ``{key}.txt`` and
optionally ``{key}.json`` form one sample: consecutive members that share the name before the first dot, as
webdataset groups them. The ``.txt`` is the caption; a ``.json`` with a ``"captions"`` list (the kit writes one for
its embedded set, whose images have several captions) gives all of an image's captions. Image ids are the keys as
integers when every key is a decimal number (img2dataset's keys are), else positions in the listing. Shards are
read in file-name order; as for the CC3M TSV, the last ``data.n_test`` samples are test, the ``data.n_val`` before
them val and the rest train.

Two ways in, one bad-input policy:

- random access (``shard_records``): each shard's member headers are scanned once (``tarfile``, seeking over the
  data) into an index of byte offsets and captions, cached under ``<data root>/wds_index`` and rebuilt when the
  shard's size or mtime changes. A record's ``path`` is a ``ShardMember`` (shard, key, byte range), which
  ``loaders.load_image`` decodes like a file, so ``CaptionImageDataset``, pre-tokenization and every other consumer
  of records work unchanged.
- streaming (``shard_stream.shard_stream``): a ``webdataset`` pipeline over the split's shards, split by
  ``webdataset.split_by_node`` (torchrun's ``RANK``/``WORLD_SIZE`` or torch.distributed) and then
  ``split_by_worker`` (DataLoader workers), so each sample is read by exactly one (rank, worker); it keeps the
  samples of the split that ``caption_records`` keeps.

A sample without an image or a ``.txt``, an empty caption, an undecodable image or a truncated tar (the sample
whose data is cut, or the last one before missing end-of-archive blocks) follows ``data.bad_input`` with the shard
and key named. Samples after a cut are lost, which moves the position-based split boundaries: re-write the shard.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from lverse_core.config import Config, require_asset
from lverse_core.data.records import BadInputError, check_records

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # img2dataset's encode_format choices, in order of preference
INDEX_VERSION = 1  # bump when the index layout changes: cached indexes of another version are rebuilt
END_BLOCK = 512  # a tar ends with zero blocks of this size
META_MEMBER = r"__[^/]*__($|/)"  # members webdataset's tar reader skips (its skip_meta), so positions agree


@dataclass(frozen=True)
class ShardMember:
    """One image inside a tar shard: the member's data is ``size`` bytes at ``offset`` (read without a scan)."""

    shard: Path
    key: str
    ext: str
    offset: int
    size: int

    @property
    def name(self) -> str:
        return f"{self.key}.{self.ext}"

    def __str__(self) -> str:
        return f"{self.shard}#{self.name}"

    def is_file(self) -> bool:
        return self.offset >= 0 and self.shard.is_file()

    def read_bytes(self) -> bytes:
        try:
            with open(self.shard, "rb") as f:
                f.seek(self.offset)
                data = f.read(self.size)
        except FileNotFoundError:
            raise BadInputError(f"{self}: the shard is missing (it was listed when the shards were indexed)") from None
        if len(data) != self.size:
            raise BadInputError(f"{self}: the shard ends inside this image ({len(data)} of {self.size} bytes; "
                                f"truncated or rewritten since it was indexed)")
        return data


def wds_root(cfg: Config) -> Path:
    """The shards of ``cfg``: ``assets.wds_shards`` (a directory of .tar files), or the embedded set's shards
    (written on first use by ``shapes_dataset.ensure_shards``) when the data source is the embedded one."""
    if cfg.data.source == "shapes":
        from lverse_core.data.shapes_dataset import ensure_shards

        return ensure_shards(cfg)
    return require_asset(cfg, "wds_shards")


def wds_index_dir(cfg: Config) -> Path:
    """Where shard indexes are cached: beside the profile's data (the shards' own folder may be read-only)."""
    return cfg.data_root / "wds_index"


# -- listing and indexing ------------------------------------------------------------------------------------------

def shard_paths(root: Path) -> list[Path]:
    """The ``.tar`` shards of a directory in file-name order (or ``root`` itself if it is one shard)."""
    root = Path(root)
    shards = [root] if root.is_file() else sorted(root.glob("*.tar"))
    if not shards:
        raise BadInputError(f"{root}: no .tar shards there (expected img2dataset output: 00000.tar, 00001.tar, ...)")
    return shards


def caption_list(shard: Path, key: str, txt: bytes | None, meta: bytes | None) -> tuple[list[str] | None, str | None]:
    """(captions, problem) of one sample from its ``.txt`` and optional ``.json`` bytes."""
    where = f"{shard}#{key}"
    if txt is None:
        return None, f"{where}: sample has no caption member ({key}.txt)"
    try:
        captions = [txt.decode("utf-8").strip()]
        if meta is not None:
            tree = json.loads(meta.decode("utf-8"))
            many = tree.get("captions") if isinstance(tree, dict) else None
            if isinstance(many, list) and all(isinstance(c, str) for c in many) and many:
                captions = [c.strip() for c in many]
    except UnicodeDecodeError:
        return None, f"{where}: caption or metadata is not UTF-8 text"
    except ValueError as e:
        return None, f"{where}: {key}.json is not valid JSON ({e})"
    return captions, None


def scan_shard(shard: Path) -> dict:
    """Index one shard: per sample [key, image ext or None, data offset, size, captions or None, problem or None]."""
    from webdataset.tariterators import base_plus_ext  # the same key/extension split webdataset groups by

    size = shard.stat().st_size
    samples: list[dict] = []
    try:
        with open(shard, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for m in tar:
                key, ext = base_plus_ext(m.name)
                if not m.isreg() or key is None or re.match(META_MEMBER, m.name):
                    continue
                if not samples or samples[-1]["key"] != key:
                    samples.append({"key": key, "members": {}, "problem": None})
                s = samples[-1]
                if m.offset_data + m.size > size:
                    s["problem"] = (f"{shard}#{m.name}: the shard is truncated inside this member (needs bytes up to "
                                    f"{m.offset_data + m.size}, the file has {size}); re-download or re-write the "
                                    f"shard (samples after it are lost)")
                    break
                s["members"][ext.lower()] = (m.offset_data, m.size)
            end = tar.offset
    except tarfile.TarError as e:
        if not samples:
            raise BadInputError(f"{shard}: not a readable tar file ({type(e).__name__}: {e}); re-download or re-write "
                                f"the shard or remove it") from None
        end = -1
    f_end = _read(shard, end, END_BLOCK) if end >= 0 else b""
    if samples and samples[-1]["problem"] is None and f_end != bytes(END_BLOCK):
        samples[-1]["problem"] = (f"{shard}#{samples[-1]['key']}: the shard ends without tar end-of-archive blocks "
                                  f"after this sample (truncated or damaged; members of it may be lost); re-download "
                                  f"or re-write the shard")
    return {"version": INDEX_VERSION, "size": size, "mtime_ns": shard.stat().st_mtime_ns,
            "samples": [_index_entry(shard, s) for s in samples]}


def _read(shard: Path, offset: int, n: int) -> bytes:
    with open(shard, "rb") as f:
        f.seek(offset)
        return f.read(n)


def _index_entry(shard: Path, s: dict) -> list:
    key, members = s["key"], s["members"]
    ext = next((e for e in IMAGE_EXTS if e in members), None)
    txt, meta = (_read(shard, *members[e]) if e in members else None for e in ("txt", "json"))
    captions, problem = caption_list(shard, key, txt, meta)
    if ext is None:
        problem = f"{shard}#{key}: sample has no image member ({'/'.join(IMAGE_EXTS)})"
    problem = s["problem"] or problem
    offset, size = members[ext] if ext else (-1, 0)
    return [key, ext, offset, size, captions, problem]


def shard_index(shard: Path, cache_dir: Path | None) -> dict:
    """``scan_shard(shard)``, cached in ``cache_dir`` (a file per shard, keyed by its path, size and mtime)."""
    st = shard.stat()
    cache = None
    if cache_dir is not None:
        tag = hashlib.sha256(str(shard.resolve()).encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"{shard.stem}-{tag}.json"
        try:
            index = json.loads(cache.read_text())
            if (index.get("version"), index.get("size"), index.get("mtime_ns")) == (INDEX_VERSION, st.st_size,
                                                                                    st.st_mtime_ns):
                return index
        except (OSError, ValueError):
            pass
    index = scan_shard(shard)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(index, separators=(",", ":"), ensure_ascii=False))
            os.replace(tmp, cache)
        except OSError as e:  # a read-only data root: the index is rebuilt next time, nothing is lost
            log.info("cannot cache the index of %s in %s (%s)", shard, cache_dir, e)
    return index


def tail_splits(n: int, n_val: int, n_test: int, listing: Path | str, whole_train: bool = False) -> dict[str, range]:
    """Positions of each split in a listing without splits (CC3M, shards): the last ``n_test`` are test, the
    ``n_val`` before them val, the rest train; with ``whole_train`` (the listing is ``data.train_source`` only: val
    and test come from ``data.source``) all are train."""
    if whole_train:
        return {"train": range(n), "restval": range(0), "val": range(0), "test": range(0)}
    if n <= n_val + n_test:
        raise BadInputError(f"{listing}: {n} samples are not enough for n_val={n_val} + n_test={n_test} + train")
    cut_val, cut_test = n - n_val - n_test, n - n_test
    return {"train": range(cut_val), "restval": range(0), "val": range(cut_val, cut_test), "test": range(cut_test, n)}


def shard_listing(root: Path, cache_dir: Path | None) -> list[tuple[Path, list]]:
    """Every sample of the shards under ``root`` in order, as (shard, index entry)."""
    return [(shard, entry) for shard in shard_paths(root) for entry in shard_index(shard, cache_dir)["samples"]]


def numeric_keys(listing: list[tuple[Path, list]]) -> bool:
    """Whether every key is a decimal number (img2dataset's are): then the keys are the image ids."""
    return all(entry[0].isascii() and entry[0].isdigit() for _, entry in listing)


def _ids(listing: list[tuple[Path, list]]) -> list[int]:
    return [int(e[0]) for _, e in listing] if numeric_keys(listing) else list(range(len(listing)))


def shard_records(root: Path, split: str, n_val: int, n_test: int, cache_dir: Path | None,
                  whole_train: bool = False) -> list[dict]:
    """Records {image_id, path: ShardMember, captions} of one split; a sample with a problem (no image, no
    caption, truncated) carries it under ``"problem"`` for ``caption_records``' bad-input policy. Ids are checked
    to be unique, as for every listing (``records.check_records``)."""
    listing = shard_listing(root, cache_dir)
    ids = _ids(listing)
    records = []
    for (shard, (key, ext, offset, size, captions, problem)), image_id in zip(listing, ids):
        rec = {"image_id": image_id, "path": ShardMember(shard, key, ext or "jpg", offset, size),
               "captions": captions or []}
        if problem:
            rec["problem"] = problem
        records.append(rec)
    check_records(root, records, [f"{shard.name} key {entry[0]}" for shard, entry in listing])
    return [records[i] for i in tail_splits(len(records), n_val, n_test, root, whole_train)[split]]


__all__ = ["IMAGE_EXTS", "ShardMember", "caption_list", "numeric_keys", "scan_shard", "shard_index", "shard_listing",
           "shard_paths", "shard_records", "tail_splits", "wds_index_dir", "wds_root"]
