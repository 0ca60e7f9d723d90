"""What a notebook's results were made from, and whether that is still what the run holds.

A results JSON records ``made_from``: the ids (``lverse_core.provenance``) of the artefacts its numbers come from,
named as here. ``index.html`` (``stale_outputs``) compares them with the run's current artefacts and marks every
output of a notebook whose inputs changed since (a table of a retrained AugVAE-SL, a data set regenerated with
another seed) with what changed and the notebook to rerun.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from lverse_core import provenance
from lverse_core.config import Config, MissingAssetError


def _files(cfg: Config) -> dict[str, Callable[[], Path]]:
    from lverse_core.data.tokenizer import tokenizer_path
    from lverse_core.evaluation.judge import judge_path
    from lverse_core.sampling.clip_reranker import reranker_file
    from lverse_core.training.checkpoint_paths import checkpoint_path
    from lverse_core.training.pretokenize import SPLITS, codes_dir

    files: dict[str, Callable[[], Path]] = {
        "tokenizer": lambda: tokenizer_path(cfg),
        "augvae_ml": lambda: checkpoint_path(cfg, "ml"),
        "augvae_sl": lambda: checkpoint_path(cfg, "sl"),
        "augvae_control": lambda: checkpoint_path(cfg, "baseline"),
        "biart": lambda: checkpoint_path(cfg, "biart"),
        "clip_reranker": lambda: reranker_file(cfg),
        "judge": lambda: judge_path(cfg),
    }
    for split in SPLITS:
        files[f"codes {split}"] = lambda sp=split: codes_dir(cfg) / f"{sp}_codes.npy"
    return files


def names(cfg: Config) -> tuple[str, ...]:
    """Every name a ``made_from`` may use: ``data set`` and the run's files."""
    return ("data set", *_files(cfg))


def ids(cfg: Config, wanted: Iterable[str]) -> dict[str, str]:
    """The current id of each artefact in ``wanted``: the data set's id (``data.identity.dataset_id``), a file's
    content id, or ``"missing"`` for a file the run does not hold. An unknown name is a ``ValueError``."""
    from lverse_core.data.identity import dataset_id

    files = _files(cfg)
    out = {}
    for name in wanted:
        if name == "data set":
            out[name] = dataset_id(cfg)
        elif name in files:
            try:
                out[name] = provenance.input_id(files[name]())
            except MissingAssetError:
                out[name] = "missing"
        else:
            raise ValueError(f"unknown artefact {name!r} in made_from; known: {', '.join(names(cfg))}")
    return out


def changed(cfg: Config, recorded: Any) -> list[str]:
    """The artefacts of a ``made_from`` record whose current id differs (names the kit does not know, left over
    from another version, are not compared; a record that is not a mapping compares nothing)."""
    if not isinstance(recorded, dict):
        return []
    known_names = set(names(cfg))
    known = [k for k in recorded if k in known_names]
    now = ids(cfg, known)
    return [k for k in known if recorded[k] != now[k]]


__all__ = ["changed", "ids", "names"]
