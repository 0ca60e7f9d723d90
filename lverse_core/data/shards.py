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
  data; in ``data.num_workers`` processes) into an index of byte offsets and captions, cached under
  ``<data root>/wds_index`` and rebuilt when the shard's size or mtime changes; each read re-checks the member's
  tar header against the index (a shard rewritten with the same size and mtime is refused). A record's ``path`` is a ``ShardMember`` (shard, key, byte range), which
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

from lverse_core.config import Config
from lverse_core.data.records import BadInputError, check_records

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # img2dataset's encode_format choices, in order of preference
# bump when the index layout or what it refuses changes: cached indexes of another version are rebuilt (2: a key
# with two members of one extension makes the whole shard a problem)
INDEX_VERSION = 2
INT64_MAX = 2**63 - 1  # numeric keys above it are not image ids (torch collates ids as int64)
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

    def _check_header(self, f) -> None:
        """The tar header right before the data must still name this member with this size. The index is cached
        by the shard's size and mtime; a shard rewritten with both unchanged (members reordered, say) would
        otherwise hand out another sample's bytes under this key. One 512-byte read, no scan."""
        block = b""
        if self.offset >= tarfile.BLOCKSIZE:
            f.seek(self.offset - tarfile.BLOCKSIZE)
            block = f.read(tarfile.BLOCKSIZE)
        try:
            info = tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
        except tarfile.HeaderError:
            info = None
        want = self.name.lower()
        got = info.name.lower() if info is not None else ""
        # a name longer than the header's 100-byte field (GNU long names, pax) is cut there: compare the prefix
        same_name = got == want or (len(info.name.encode()) >= 99 and want.startswith(got)) if info else False
        if not same_name or info.size != self.size:
            now = f"{info.name!r} of {info.size} bytes" if info is not None else "no member header"
            raise BadInputError(
                f"{self}: the shard changed since it was indexed (at byte {self.offset} it now holds {now}, the "
                f"index says {self.name!r} of {self.size} bytes); delete the cached index (the wds_index folder "
                f"beside the data) or touch the shard, so that it is scanned again")

    def is_file(self) -> bool:
        return self.offset >= 0 and self.shard.is_file()

    def read_bytes(self) -> bytes:
        try:
            with open(self.shard, "rb") as f:
                self._check_header(f)
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
    (a view of the set, written on first use by ``shapes_dataset.ensure_shards``; the set itself must be there) when
    the data source is the embedded one."""
    from lverse_core.data.sources import shards

    return shards(cfg)


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
    """Index one shard: per sample [key, image ext or None, data offset, size, captions or None, problem or None];
    a shard without one readable member header has no samples and says why under ``"problem"``."""
    size = shard.stat().st_size
    index = {"version": INDEX_VERSION, "size": size, "mtime_ns": shard.stat().st_mtime_ns, "samples": []}
    with open(shard, "rb") as f:
        try:
            samples, end = _member_headers(f, shard, size)
        except tarfile.TarError as e:
            index["problem"] = (f"{shard}: not a readable tar file ({type(e).__name__}: {e}); re-download or re-write "
                                f"the shard, or remove it")
            return index
        except DuplicateMemberError as e:  # webdataset refuses the shard as a whole, so the index does too
            index["problem"] = str(e)
            return index
        if samples and samples[-1]["problem"] is None and _read(f, end, END_BLOCK) != bytes(END_BLOCK):
            samples[-1]["problem"] = (f"{shard}#{samples[-1]['key']}: the shard ends without tar end-of-archive "
                                      f"blocks after this sample (truncated or damaged; members of it may be lost); "
                                      f"re-download or re-write the shard")
        index["samples"] = [_index_entry(f, shard, s) for s in samples]
    return index


class DuplicateMemberError(BadInputError):
    """A shard with two members of one key and extension (which of them is the sample's is not defined)."""


def _member_headers(f, shard: Path, size: int) -> tuple[list[dict], int]:
    """The members of an open shard grouped into samples as webdataset groups them (consecutive members sharing a
    key), with their data's byte ranges, and where the member headers end. The data is seeked over, not read."""
    from webdataset.tariterators import base_plus_ext  # the same key/extension split webdataset groups by

    samples: list[dict] = []
    with tarfile.open(fileobj=f, mode="r:") as tar:
        try:
            for m in tar:
                key, ext = base_plus_ext(m.name)
                if not m.isreg() or key is None or re.match(META_MEMBER, m.name):
                    continue
                if not samples or samples[-1]["key"] != key:
                    samples.append({"key": key, "members": {}, "problem": None})
                if ext.lower() in samples[-1]["members"]:
                    raise DuplicateMemberError(
                        f"{shard}#{m.name}: a second member for key {key} with extension .{ext} (a sample holds one "
                        f"of each); the streaming reader refuses such a shard, so the index does too: re-write the "
                        f"shard with one member per key and extension, or remove it")
                if m.offset_data + m.size > size:
                    samples[-1]["problem"] = (
                        f"{shard}#{m.name}: the shard is truncated inside this member (needs bytes up to "
                        f"{m.offset_data + m.size}, the file has {size}); re-download or re-write the shard (samples "
                        f"after it are lost)")
                    break
                samples[-1]["members"][ext.lower()] = (m.offset_data, m.size)
        except tarfile.TarError:  # damaged after some samples: the last one is flagged by the end-block check
            if not samples:
                raise
            return samples, size
        return samples, tar.offset


def _read(f, offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def _index_entry(f, shard: Path, s: dict) -> list:
    key, members = s["key"], s["members"]
    ext = next((e for e in IMAGE_EXTS if e in members), None)
    txt, meta = (_read(f, *members[e]) if e in members else None for e in ("txt", "json"))
    captions, problem = caption_list(shard, key, txt, meta)
    if ext is None:
        problem = f"{shard}#{key}: sample has no image member ({'/'.join(IMAGE_EXTS)})"
    problem = s["problem"] or problem
    offset, size = members[ext] if ext else (-1, 0)
    return [key, ext, offset, size, captions, problem]


def _cache_path(shard: Path, cache_dir: Path) -> Path:
    return Path(cache_dir) / f"{shard.stem}-{hashlib.sha256(str(shard.resolve()).encode()).hexdigest()[:16]}.json"


def _cached_index(shard: Path, cache_dir: Path | None) -> dict | None:
    """The cached index of ``shard`` if it was made from the shard as it is now (same size and mtime)."""
    if cache_dir is None:
        return None
    st = shard.stat()
    try:
        index = json.loads(_cache_path(shard, cache_dir).read_text())
    except (OSError, ValueError):
        return None
    same = (index.get("version"), index.get("size"), index.get("mtime_ns")) == (INDEX_VERSION, st.st_size,
                                                                              st.st_mtime_ns)
    return index if same else None


def _save_index(shard: Path, cache_dir: Path | None, index: dict) -> None:
    if cache_dir is None:
        return
    cache = _cache_path(shard, cache_dir)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(index, separators=(",", ":"), ensure_ascii=False))
        os.replace(tmp, cache)
    except OSError as e:  # a read-only data root: the index is rebuilt next time, nothing is lost
        log.info("cannot cache the index of %s in %s (%s)", shard, cache_dir, e)


def shard_indexes(shards: list[Path], cache_dir: Path | None, workers: int = 0) -> list[dict]:
    """``scan_shard`` of each shard, from the cache in ``cache_dir`` (a file per shard, keyed by its path, size and
    mtime) where it is current; the others are scanned in ``workers`` processes (0 or 1: here) and cached.
    Scanning costs about a Python tar-header parse per member: seconds per img2dataset shard of 10,000 samples."""
    indexes = [_cached_index(shard, cache_dir) for shard in shards]
    todo = [i for i, index in enumerate(indexes) if index is None]
    if workers > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
            scanned = list(pool.map(scan_shard, [shards[i] for i in todo]))
    else:
        scanned = [scan_shard(shards[i]) for i in todo]
    for i, index in zip(todo, scanned):
        _save_index(shards[i], cache_dir, index)
        indexes[i] = index
    return indexes


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


def shard_listing(root: Path, cache_dir: Path | None, problems: list[str] | None = None,
                  workers: int = 0) -> list[tuple[Path, list]]:
    """Every sample of the shards under ``root`` in order, as (shard, index entry); the problem of each shard that
    holds no readable sample at all (e.g. an empty file left by a killed download) is appended to ``problems``."""
    listing = []
    shards = shard_paths(root)
    for shard, index in zip(shards, shard_indexes(shards, cache_dir, workers)):
        if "problem" in index and problems is not None:
            problems.append(index["problem"])
        listing += [(shard, entry) for entry in index["samples"]]
    return listing


def numeric_keys(listing: list[tuple[Path, list]]) -> bool:
    """Whether every key is a decimal number (img2dataset's are) that fits an int64: then the keys are the image
    ids (a larger one would overflow when a batch collates its ids), else positions are."""
    return all(entry[0].isascii() and entry[0].isdigit() and len(entry[0]) <= 19 and int(entry[0]) <= INT64_MAX
               for _, entry in listing)


def _ids(listing: list[tuple[Path, list]]) -> list[int]:
    return [int(e[0]) for _, e in listing] if numeric_keys(listing) else list(range(len(listing)))


def shard_records(root: Path, split: str, n_val: int, n_test: int, cache_dir: Path | None,
                  whole_train: bool = False, bad_input: str = "error", workers: int = 0) -> list[dict]:
    """Records {image_id, path: ShardMember, captions} of one split; a sample with a problem (no image, no
    caption, truncated) carries it under ``"problem"`` for ``caption_records``' bad-input policy. A shard without
    any readable sample follows ``bad_input`` here (``skip``: left out, with a warning). Ids are checked to be
    unique, as for every listing (``records.check_records``)."""
    problems: list[str] = []
    listing = shard_listing(root, cache_dir, problems, workers)
    for problem in problems:
        if bad_input == "error":
            raise BadInputError(f"{problem}; or set data.bad_input = skip")
        log.warning("skipping a whole shard (data.bad_input = skip): %s", problem)
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


__all__ = ["IMAGE_EXTS", "ShardMember", "caption_list", "numeric_keys", "scan_shard", "shard_indexes",
           "shard_listing", "shard_paths", "shard_records", "tail_splits", "wds_index_dir", "wds_root"]
