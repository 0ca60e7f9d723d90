"""The id of the data set a run reads, as the provenance records keep it (``lverse_core.provenance``).

The embedded set is fixed by its generation parameters (the ones its ``COMPLETE.json`` holds), so they are its id.
A real data set is read in place from ``assets.*``: its id is its listing (each asset's path, size and mtime; a
folder's entries one level deep: ImageNet's class folders, the Karpathy image folders, the shard files), with the
settings that cut it into splits. Cheap to compute on every check; a file edited in place changes its mtime.
"""
from __future__ import annotations

from lverse_core.config import Config, MissingAssetError, require_asset
from lverse_core.provenance import listing_id, params_id

# the assets each data source is read from (AugVAE trains on ImageNet when the data is real, as in the paper)
SOURCE_ASSETS = {"coco": ("coco_karpathy_json", "coco_root"), "cc3m": ("cc3m_tsv",), "wds": ("wds_shards",)}


def data_assets(cfg: Config) -> list[str]:
    """The ``assets.*`` entries the data set of ``cfg`` is read from (none for the embedded set)."""
    if cfg.data.source == "shapes":
        return []
    names = ["imagenet_root", *SOURCE_ASSETS[cfg.data.source]]
    names += [a for a in SOURCE_ASSETS.get(cfg.data.train_source, ()) if a not in names]
    return names


def dataset_id(cfg: Config) -> str:
    """``shapes:<hash of the generation parameters>`` for the embedded set, ``data:<hash of the listing>`` else."""
    d = cfg.data
    if d.source == "shapes":
        from lverse_core.data.shapes_dataset import generation_params

        return params_id("shapes", {**generation_params(cfg), "train_source": d.train_source})
    paths = []
    for name in data_assets(cfg):
        try:
            paths.append(str(require_asset(cfg, name)))
        except MissingAssetError:
            paths.append(f"missing {name}: {getattr(cfg.assets, name)}")
    return params_id("data", {"source": d.source, "train_source": d.train_source, "n_val": d.n_val,
                              "n_test": d.n_test, "n_restval": d.n_restval, "listing": listing_id(paths)})
