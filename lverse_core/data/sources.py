"""Where the files of the profile's data source lie (``lverse_core.config.sources`` says what each source is): the
embedded set's views under ``cfg.data_root`` (which must have been made by notebook 00: a reader never makes it), or
the real data's ``assets.*`` paths. The loaders read both alike."""
from __future__ import annotations

import json
from pathlib import Path

from lverse_core.config import Config, require_asset
from lverse_core.config.sources import data_source


def _embedded_root(cfg: Config) -> Path | None:
    """The embedded set's folder (``DataSetMissingError`` naming notebook 00 when absent), or None for real data."""
    if not data_source(cfg).embedded:
        return None
    from lverse_core.data.shapes_dataset import require_dataset

    return require_dataset(cfg)


def karpathy_files(cfg: Config) -> tuple[Path, Path]:
    """(``dataset_coco.json``, image root) of the Karpathy view: the embedded set's, or MS-COCO's assets."""
    root = _embedded_root(cfg)
    if root is not None:
        return root / "dataset_coco.json", root / "images"
    return require_asset(cfg, "coco_karpathy_json"), require_asset(cfg, "coco_root")


def cc3m_tsv(cfg: Config) -> Path:
    """The CC3M-format TSV (caption, image path)."""
    root = _embedded_root(cfg)
    return root / "cc3m_train.tsv" if root is not None else require_asset(cfg, "cc3m_tsv")


def tsv_image_id(cfg: Config, path: str, row: int) -> int:
    """A TSV row's image id: the embedded set's TSV keeps the set's ids (its file names), so its ground truth and
    codes line up with the Karpathy view; a real TSV numbers its rows."""
    return int(Path(path).stem) if data_source(cfg).embedded else row


def imagefolder(cfg: Config, split: str) -> Path:
    """The ImageFolder split AugVAE trains on: the embedded set's view, or ImageNet's (its ``val`` as test)."""
    root = _embedded_root(cfg)
    if root is not None:
        return root / "imagefolder" / split
    return require_asset(cfg, "imagenet_root") / ("val" if split == "test" else split)


def shards(cfg: Config) -> Path:
    """The folder of webdataset tar shards: ``assets.wds_shards``, or the embedded set's shard view (written on first
    use from the set, which must be there)."""
    if data_source(cfg).embedded:
        from lverse_core.data.shapes_dataset import ensure_shards

        return ensure_shards(cfg, make_dataset=False)
    return require_asset(cfg, "wds_shards")


def attributes(cfg: Config) -> dict[int, list[dict]]:
    """image_id -> ground-truth objects [{shape, colour, size, x, y, bbox}]; an error for a source without them."""
    data_source(cfg).require_ground_truth("attributes.json (the objects of every image)")
    tree = json.loads((_embedded_root(cfg) / "attributes.json").read_text())
    return {int(k): v["objects"] for k, v in tree["images"].items()}
