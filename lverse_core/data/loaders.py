"""Loaders for the real data formats, used for both the embedded shapes set and the paper's data (paper §4).

- MS-COCO Captions through Karpathy's ``dataset_coco.json`` (splits train / restval / val / test) + image root;
  ``caption_records(cfg, "train")`` includes restval, as the Karpathy-split literature does.
- CC3M as a TSV (caption \\t image path relative to the TSV, no header); it has no Karpathy splits, so the last
  ``n_test`` rows are test, the ``n_val`` before them val, and the rest train.
- Conceptual Captions / LAION-style sets as img2dataset's webdataset tar shards (``{key}.jpg`` + ``{key}.txt``
  [+ ``.json``], ``data.source: wds``), split as the TSV is; a record's ``path`` is then a ``shards.ShardMember``
  (the image's byte range in its shard), which ``load_image`` decodes like a file (``lverse_core.data.shards``;
  ``shard_stream`` streams them across ranks and DataLoader workers with webdataset).
- ImageNet1K as an ImageFolder tree (``train/``, ``val/``; ``test`` reads ``val``, ImageNet's test set has no
  labels) for AugVAE (paper §3.5).

For the embedded set the same code reads the files ``lverse_core.data.shapes`` writes (``data.sources`` says where;
``source="cc3m"`` and ``"wds"`` read its TSV and tar-shard views), so the real loaders are the ones every profile
exercises. Images become float tensors (3, S, S) in [-1, 1]: training uses RandomResizedCrop(scale 0.75-1, ratio 1)
as in the official AugVAE code, evaluation a resize and centre crop. No horizontal flips: they would turn "left of" into
"right of" in the captions.

Bad input (an unreadable or truncated image, one smaller than ``data.min_image_side``, a listed file that is
missing, an empty caption; in shards also a sample without its ``.txt`` or image, or one cut by a truncated tar)
follows ``data.bad_input``: ``error`` raises ``BadInputError`` naming the file (shard and key) and the problem;
``skip`` drops it and logs how many were dropped with the first few names. Construction checks cheaply (file
existence, captions); ``validate=True`` also decodes every image. A bad image met while iterating follows the same
policy (under ``skip`` the next valid item is returned). The listings themselves (Karpathy JSON, CC3M TSV) are
schema-checked entry by entry in ``lverse_core.data.records``; a broken entry is always an error.
"""
from __future__ import annotations

import io
import json
import logging
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from lverse_core.config import Config
from lverse_core.data.records import BadInputError, check_records, entry_error, expect, image_path
from lverse_core.data import sources
from lverse_core.data.shards import ShardMember, shard_records, tail_splits, wds_index_dir, wds_root

log = logging.getLogger(__name__)
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is bad input, never silently half-grey


# -- images --------------------------------------------------------------------------------------------------------

def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as RGB: transparency is composited on white, CMYK/L/P/16-bit converted properly."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        scale = 257.0 if a.max() > 255 else 1.0  # 16-bit range -> 8-bit
        img = Image.fromarray(np.clip(a / scale, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "RGBa", "PA"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img).convert("RGB")
    return img.convert("RGB")


def _decode(fp, name: str, min_side: int) -> Image.Image:
    try:
        with Image.open(fp) as img:
            img.load()
            rgb = to_rgb(img)
    except FileNotFoundError:
        raise BadInputError(f"{name}: file is missing (listed in the data set but not on disk)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadInputError(f"{name}: unreadable or truncated image ({type(e).__name__}: {e})") from None
    if min(rgb.size) < min_side:
        raise BadInputError(f"{name}: image is {rgb.size[0]}x{rgb.size[1]} px, smaller than data.min_image_side = "
                            f"{min_side}")
    return rgb


def decode_image(data: bytes, name: str, min_side: int = 1) -> Image.Image:
    """Image bytes (a shard member) decoded as ``load_image`` decodes a file; ``name`` is what errors call it."""
    return _decode(io.BytesIO(data), name, min_side)


def load_image(path: Path | str | ShardMember, min_side: int = 1) -> Image.Image:
    """Decode ``path`` (a file, or a ``ShardMember``: an image inside a tar shard) fully as RGB or raise
    BadInputError saying what is wrong with it."""
    if isinstance(path, ShardMember):
        return decode_image(path.read_bytes(), str(path), min_side)
    return _decode(Path(path), str(path), min_side)


_NORMALIZE = transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])  # [0, 1] -> [-1, 1]


def eval_transform(size: int):
    """Resize the short side to ``size`` and centre crop; tensor in [-1, 1]."""
    return transforms.Compose([
        transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC, antialias=True),
        transforms.CenterCrop(size), transforms.ToTensor(), _NORMALIZE])


def train_transform(size: int):
    """RandomResizedCrop(scale 0.75-1, square) as in the official AugVAE code; tensor in [-1, 1]."""
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.75, 1.0), ratio=(1.0, 1.0),
                                     interpolation=transforms.InterpolationMode.BICUBIC, antialias=True),
        transforms.ToTensor(), _NORMALIZE])


def to_pil(x: torch.Tensor) -> Image.Image:
    """A (3, S, S) tensor in [-1, 1] back to a PIL image (for figures)."""
    a = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(a, "RGB")


# -- the bad-input policy ------------------------------------------------------------------------------------------

class _Dropped:
    """Collects skipped inputs and logs them once: a count and the first few names."""

    def __init__(self, what: str):
        self.what, self.items = what, []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def report(self) -> None:
        if self.items:
            first = "; ".join(self.items[:5])
            log.warning("%s: skipped %d bad input(s) (data.bad_input = skip). First: %s", self.what,
                        len(self.items), first)


def _policy(cfg: Config) -> str:
    return cfg.data.bad_input


# -- caption records -----------------------------------------------------------------------------------------------

SPLITS = ("train", "restval", "val", "test")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")


def karpathy_source(cfg: Config) -> tuple[Path, Path]:
    """(dataset_coco.json, image root) for the shapes set or MS-COCO."""
    return sources.karpathy_files(cfg)


def read_karpathy(json_path: Path, raw: bytes | None = None) -> list[dict]:
    """The ``images`` list of a Karpathy split file (its bytes ``raw`` when already read), with a clear error if
    the file is not Karpathy's."""
    try:
        tree = json.loads(Path(json_path).read_text() if raw is None else raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise BadInputError(f"{json_path}: cannot read a Karpathy split JSON ({type(e).__name__}: {e})") from None
    if not isinstance(tree, dict) or not isinstance(tree.get("images"), list):
        raise BadInputError(f"{json_path}: not a Karpathy split file (expected {{'images': [...], 'dataset': ...}})")
    return tree["images"]


_PARSED: dict[tuple, list[dict]] = {}  # karpathy_records' cache: the last few files parsed in this process
_PARSED_KEEP = 2


def karpathy_records(json_path: Path, image_root: Path) -> list[dict]:
    """Every entry of a Karpathy file as a record {image_id, path, captions, split}, each one schema-checked
    (``lverse_core.data.records``): an entry that breaks the schema is a BadInputError naming it.

    Parsed once per process: the records are kept, keyed by the file's resolved path and a hash of its bytes
    (reading and hashing cost a small part of parsing; size and modification time alone miss a rewrite within the
    file system's timestamp granularity), and each call gets its own copies (a pipeline parsed the gpu profile's
    115 MB of captions about 15 times before)."""
    import hashlib

    json_path = Path(json_path)
    try:
        raw = json_path.read_bytes()
    except OSError as e:
        raise BadInputError(f"{json_path}: cannot read a Karpathy split JSON ({type(e).__name__}: {e})") from None
    key = (str(json_path.resolve()), str(image_root), hashlib.blake2b(raw, digest_size=20).digest())
    if key not in _PARSED:
        records = _parse_karpathy(json_path, image_root, raw)
        while len(_PARSED) >= _PARSED_KEEP:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = records
    return [{**r, "captions": list(r["captions"])} for r in _PARSED[key]]


def _parse_karpathy(json_path: Path, image_root: Path, raw: bytes | None = None) -> list[dict]:
    records, entries = [], []
    for i, im in enumerate(read_karpathy(json_path, raw)):
        entry = f"images[{i}]"
        if not isinstance(im, dict):
            raise entry_error(json_path, entry, f"an image entry must be an object, got {im!r:.60}")
        id_key = "cocoid" if "cocoid" in im or "imgid" not in im else "imgid"
        image_id = expect(json_path, entry, im, id_key, int)
        entry = f"images[{i}] ({id_key} {image_id})"
        split = expect(json_path, entry, im, "split", str)
        if split not in SPLITS:
            raise entry_error(json_path, entry, f"split {split!r} is not one of {', '.join(SPLITS)}")
        path = image_path(json_path, entry, image_root, expect(json_path, entry, im, "filepath", str, ""),
                          expect(json_path, entry, im, "filename", str))
        captions = []
        for j, sent in enumerate(expect(json_path, entry, im, "sentences", list)):
            if not isinstance(sent, dict):
                raise entry_error(json_path, f"{entry}.sentences[{j}]", f"a sentence must be an object, got {sent!r:.60}")
            captions.append(expect(json_path, f"{entry}.sentences[{j}]", sent, "raw", str, ""))  # "" -> bad_input
        records.append({"image_id": image_id, "path": path, "captions": captions, "split": split})
        entries.append(entry)
    return check_records(json_path, records, entries)


def _karpathy_records(cfg: Config, split: str) -> list[dict]:
    json_path, image_root = karpathy_source(cfg)
    wanted = {"train", "restval"} if split == "train" else {split}
    return [{k: r[k] for k in ("image_id", "path", "captions")}
            for r in karpathy_records(json_path, image_root) if r["split"] in wanted]


def read_cc3m_tsv(tsv: Path) -> list[dict]:
    """Every row of a CC3M TSV (``caption<TAB>image path``, UTF-8, no header) as a schema-checked record.

    A UTF-8 byte-order mark is dropped and blank lines (e.g. a trailing one) are not rows. Non-UTF-8 bytes, a row
    without exactly two columns or a path outside the TSV's folder is a BadInputError naming the line.
    Image ids are row numbers (0-based, blank lines not counted).
    """
    raw = Path(tsv).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise entry_error(tsv, f"line {line}", f"byte 0x{raw[e.start]:02x} is not UTF-8 (a Latin-1 or other "
                                               f"encoded file?); re-save the TSV as UTF-8") from None
    records, entries = [], []
    for n, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 2:
            raise entry_error(tsv, f"line {n}", f"expected 2 tab-separated columns 'caption<TAB>image path', got "
                                                f"{len(cols)}: {line!r:.80}")
        path = image_path(tsv, f"line {n}", Path(tsv).parent, cols[1])
        records.append({"image_id": len(records), "path": path, "captions": [cols[0]]})
        entries.append(f"line {n}")
    return check_records(tsv, records, entries)


def _cc3m_records(cfg: Config, split: str, whole_train: bool = False) -> list[dict]:
    """A split of the CC3M TSV: the last ``n_test`` rows test, the ``n_val`` before them val, the rest train; with
    ``whole_train`` (CC3M as ``data.train_source`` only: val and test come from ``data.source``) every row is train."""
    tsv = sources.cc3m_tsv(cfg)
    rows = read_cc3m_tsv(tsv)
    for r in rows:
        r["image_id"] = sources.tsv_image_id(cfg, str(r["path"]), r["image_id"])
    return [rows[i] for i in tail_splits(len(rows), cfg.data.n_val, cfg.data.n_test, tsv, whole_train)[split]]


def _wds_records(cfg: Config, split: str, whole_train: bool = False) -> list[dict]:
    """A split of the tar shards (``lverse_core.data.shards``), cut as the CC3M TSV is; ``whole_train`` as there."""
    return shard_records(wds_root(cfg), split, cfg.data.n_val, cfg.data.n_test, wds_index_dir(cfg), whole_train,
                         cfg.data.bad_input, cfg.data.num_workers)


def caption_records(cfg: Config, split: str, validate: bool = False, source: str | None = None) -> list[dict]:
    """[{image_id, path, captions}] of a split, bad entries handled by ``data.bad_input``.

    ``source`` (default ``cfg.data.source``; "cc3m" / "wds" read the TSV / tar-shard views of the shapes set when
    the source is shapes) picks the format. With ``data.train_source`` set, the train and restval splits come from
    it (all of its rows or samples) and val/test from ``data.source``: training on CC3M, evaluating zero-shot on
    MS-COCO (L-Verse-CC). ``validate`` also decodes every image (slow on the paper's data).
    """
    _check_split(split)
    train_only = source is None and bool(cfg.data.train_source) and split in ("train", "restval")
    fmt = source or (cfg.data.train_source if train_only else cfg.data.source)
    if fmt == "cc3m":
        records = _cc3m_records(cfg, split, whole_train=train_only)
    elif fmt == "wds":
        records = _wds_records(cfg, split, whole_train=train_only)
    elif fmt in ("coco", "shapes"):
        records = _karpathy_records(cfg, split)
    else:
        raise ValueError(f"unknown caption format {fmt!r}; valid: shapes, coco, cc3m, wds")
    dropped = _Dropped(f"caption_records({fmt}, {split})")

    def bad(problem: str) -> None:
        if _policy(cfg) == "error":
            raise BadInputError(problem + "; fix the data or set data.bad_input = skip")
        dropped.add(problem)

    out = []
    for r in records:
        if "problem" in r:  # a shard sample without an image or caption, or cut by a truncated tar
            bad(r["problem"])
            continue
        good = [c for c in r["captions"] if isinstance(c, str) and c.strip()]
        if len(good) < len(r["captions"]):  # under skip the empty captions go, the image stays if any are left
            bad(f"{r['path']}: {len(r['captions']) - len(good)} empty caption(s) (image id {r['image_id']})")
            if not good:
                continue
        if not r["path"].is_file():
            bad(f"{r['path']}: file is missing (listed in the data set but not on disk)")
            continue
        if validate:
            try:
                load_image(r["path"], cfg.data.min_image_side)
            except BadInputError as e:
                bad(str(e))
                continue
        out.append({**r, "captions": good})
    dropped.report()
    if not records and split == "restval":
        return []  # Karpathy's restval may be empty (data.n_restval = 0)
    if not out:
        raise BadInputError(f"no usable records in split {split!r} of the {fmt} data ({len(records)} listed, "
                            f"{len(dropped.items)} bad)")
    return out


# -- datasets ------------------------------------------------------------------------------------------------------

class CaptionImageDataset(Dataset):
    """Items {"image": (3, S, S) float in [-1, 1], "captions": list[str], "image_id": int}."""

    def __init__(self, cfg: Config, split: str, train: bool = False, validate: bool = False,
                 records: list[dict] | None = None, transform=None):
        self.cfg = cfg
        self.records = records if records is not None else caption_records(cfg, split, validate=validate)
        size = cfg.data.image_size
        self.transform = transform or (train_transform(size) if train else eval_transform(size))
        # the split's pixels as every whole-split reader decodes them (what the run's decoded store holds)
        self.eval_pixels = transform is None and not train
        self.dropped = _Dropped(f"CaptionImageDataset({split})")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> dict:
        for k in range(len(self.records)):
            r = self.records[(idx + k) % len(self.records)]
            try:
                img = load_image(r["path"], self.cfg.data.min_image_side)
            except BadInputError as e:
                if _policy(self.cfg) == "error":
                    raise BadInputError(f"{e}; fix the file or set data.bad_input = skip") from None
                self.dropped.add(str(e))
                log.warning("skipping bad image (data.bad_input = skip): %s", e)
                continue
            return {"image": self.transform(img), "captions": list(r["captions"]), "image_id": int(r["image_id"])}
        raise BadInputError(f"every image of this split is bad (first: {self.dropped.items[:1]})")


class RecordImages(Dataset):
    """Records ``offset``.. decoded by ``load_image(record)``; a bad image comes back as its message, not an
    exception, so a worker process reports it (with the file named) instead of killing the loader."""

    def __init__(self, records, load_image, offset: int = 0):
        self.records, self.load_image, self.offset = records, load_image, offset

    def __len__(self) -> int:
        return len(self.records) - self.offset

    def __getitem__(self, i: int):
        try:
            return self.load_image(self.records[self.offset + i]), None
        except BadInputError as e:
            return None, str(e)


def decoded_batches(records, load_image, done: int, batch_size: int, num_workers: int):
    """Yield ``(start row, [(image or None, error or None), ...])`` for rows ``done``.. in order, ``batch_size`` at a
    time, decoded by ``num_workers`` DataLoader workers (0: in this process); pre-tokenization and the run's
    decoded store (``data.decoded_store``) read whole splits through it."""
    loader = torch.utils.data.DataLoader(RecordImages(records, load_image, done), batch_size=batch_size,
                                         shuffle=False, num_workers=num_workers, collate_fn=list,
                                         prefetch_factor=4 if num_workers else None)
    for b, batch in enumerate(loader):
        yield done + b * batch_size, batch


def collate_captions(batch: list[dict]) -> dict:
    """DataLoader collate for CaptionImageDataset: stacked images, lists of captions, ids as a LongTensor."""
    return {"image": torch.stack([b["image"] for b in batch]), "captions": [b["captions"] for b in batch],
            "image_id": torch.tensor([b["image_id"] for b in batch], dtype=torch.long)}


def _load_path(path: str, min_side: int) -> Image.Image:
    return load_image(Path(path), min_side)


class ImageFolderDataset(datasets.ImageFolder):
    """torchvision's ImageFolder with the kit's decoding (modes, size check) and bad-input policy."""

    def __init__(self, root: Path, cfg: Config, transform, validate: bool = False):
        self.cfg = cfg
        # a partial, not a lambda: DataLoader workers may need to pickle the dataset
        super().__init__(str(root), transform=transform, loader=partial(_load_path, min_side=cfg.data.min_image_side))
        if validate:
            dropped, keep = _Dropped(f"ImageFolder({root})"), []
            for path, label in self.samples:
                try:
                    load_image(Path(path), cfg.data.min_image_side)
                    keep.append((path, label))
                except BadInputError as e:
                    if _policy(cfg) == "error":
                        raise BadInputError(f"{e}; fix the file or set data.bad_input = skip") from None
                    dropped.add(str(e))
            dropped.report()
            self.samples = self.imgs = keep
            self.targets = [label for _, label in keep]

    def load(self, idx: int):
        """Item ``idx`` with a bad image raised as ``BadInputError``: the caller applies ``data.bad_input`` (AugVAE's
        per-step batches do, in DataLoader workers, and report skips to the training process)."""
        return super().__getitem__(idx)

    def __getitem__(self, idx: int):
        for k in range(len(self.samples)):
            try:
                return super().__getitem__((idx + k) % len(self.samples))
            except BadInputError as e:
                if _policy(self.cfg) == "error":
                    raise BadInputError(f"{e}; fix the file or set data.bad_input = skip") from None
                log.warning("skipping bad image (data.bad_input = skip): %s", e)
        raise BadInputError(f"every image under {self.root} is bad")


def image_dataset(cfg: Config, split: str, train: bool = False, validate: bool = False) -> ImageFolderDataset:
    """(image in [-1, 1], label) pairs for AugVAE: ImageNet1K on the paper profile, the shapes ImageFolder else."""
    _check_split(split)
    root = sources.imagefolder(cfg, split)
    if not root.is_dir():
        raise BadInputError(f"{root}: no such ImageFolder split directory (expected <root>/{split}/<class>/*)")
    size = cfg.data.image_size
    return ImageFolderDataset(root, cfg, train_transform(size) if train else eval_transform(size), validate)


# -- ground truth and out-of-domain photos -------------------------------------------------------------------------

def load_attributes(cfg: Config) -> dict[int, list[dict]]:
    """image_id -> ground-truth objects [{shape, colour, size, x, y, bbox}] of the embedded data set."""
    return sources.attributes(cfg)


def ood_images(cfg: Config) -> list[tuple[str, torch.Tensor]]:
    """The out-of-domain real photographs (paper Figure 5) as (name, (3, S, S) tensor in [-1, 1])."""
    from lverse_core.data.ood import OOD_SOURCES
    from lverse_core.data.shapes_dataset import require_dataset

    root = require_dataset(cfg) / "ood"
    tf = eval_transform(cfg.data.image_size)
    order = {name: i for i, name in enumerate(OOD_SOURCES)}
    paths = sorted(root.glob("*.png"), key=lambda p: (order.get(p.stem, len(order)), p.stem))
    return [(p.stem, tf(load_image(p))) for p in paths]
