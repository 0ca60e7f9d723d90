"""The id of the data set a run reads, as the provenance records keep it (``lverse_core.provenance``).

The embedded set is fixed by its generation parameters (the ones its ``COMPLETE.json`` holds), so they are its id.
A real data set is read in place from ``assets.*``: its id is its listing (each asset's path, size and mtime, and
those of every file and folder below an asset folder: ImageNet's images in their class folders, the COCO images in
their split folders, the shard files), with the settings that cut it into splits. No content is read: one ``stat`` per
file, walked once per process (the walk is kept while the assets' own sizes and mtimes stay the same); a file edited,
added or removed anywhere below changes the id a later process computes.
"""
from __future__ import annotations

from lverse_core.config import Config, MissingAssetError, require_asset
from lverse_core.config.sources import data_source
from lverse_core.provenance import listing_id, params_id


def data_assets(cfg: Config) -> list[str]:
    """The ``assets.*`` entries the data set of ``cfg`` is read from (none for the embedded set)."""
    return data_source(cfg).assets(cfg)


def dataset_id(cfg: Config) -> str:
    """``shapes:<hash of the generation parameters>`` for the embedded set, ``data:<hash of the listing>`` else."""
    d = cfg.data
    if data_source(cfg).embedded:
        from lverse_core.data.shapes_dataset import generation_params

        return params_id("shapes", {**generation_params(cfg), "train_source": d.train_source})
    paths = []
    for name in data_assets(cfg):
        try:
            paths.append(str(require_asset(cfg, name)))
        except MissingAssetError:
            paths.append(f"missing {name}: {getattr(cfg.assets, name)}")
    return params_id("data", {"source": d.source, "train_source": d.train_source, "n_val": d.n_val,
                              "n_test": d.n_test, "n_restval": d.n_restval, "listing": _listing(tuple(paths))})


_LISTINGS: dict[tuple, str] = {}


def _listing(paths: tuple[str, ...]) -> str:
    """The recursive ``listing_id`` of ``paths``, walked once per process while the paths' own stats stay put."""
    key = (paths, listing_id(paths))  # the one-level listing: cheap, and changes when the folders' entries do
    if key not in _LISTINGS:
        _LISTINGS[key] = listing_id(paths, recursive=True)
    return _LISTINGS[key]
