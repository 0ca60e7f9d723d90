"""What a SIGKILL leaves behind is cleaned up the next time, and unreadable parts name their file."""
from __future__ import annotations

import os

import pytest
import torch

from lverse_core.config import load_profile
from lverse_core.data.shapes_dataset import ensure_dataset
from lverse_core.sampling.generate import ShardStore
from lverse_core.training.loop import CheckpointError, DistInfo, save_checkpoint

DEAD_PID = 2**22 + 12345  # above Linux's largest pid_max: no such process


def test_checkpoint_temps_of_killed_writers_are_removed_on_the_next_save(tmp_path):
    path = tmp_path / "augvae_ml.pt"
    dead = tmp_path / f"augvae_ml.pt.{DEAD_PID}.k2j4x9.tmp"  # a writer SIGKILLed before its rename
    old_style = tmp_path / "augvae_ml.pt.abc_1x2y.tmp"  # earlier kits' names hold no pid
    live = tmp_path / f"augvae_ml.pt.{os.getpid()}.q8w7e6.tmp"  # a write in progress
    other = tmp_path / f"biart.pt.{DEAD_PID}.zz.tmp"  # another checkpoint's: left to its own next save
    for p in (dead, old_style, live, other):
        p.write_bytes(b"half a checkpoint")
    save_checkpoint(path, {"kind": "x", "model": {}})
    assert not dead.exists() and not old_style.exists()
    assert live.exists() and other.exists() and path.exists()
    assert sorted(p.name for p in tmp_path.glob("augvae_ml.pt.*")) == [live.name]  # no temp of its own left


def test_data_temp_folders_of_killed_generations_are_removed(tmp_path):
    # a real-data profile: ensure_dataset only checks the (zero) out-of-domain photos, so no generation runs
    cfg = load_profile("ci", **{"data.root": str(tmp_path / "data" / "ci"), "data.source": "coco",
                                "data.ood_images": 0})
    parent = cfg.data_root.parent
    dead = [parent / f".ci.tmp-{DEAD_PID}", parent / f".ci.ood.tmp-{DEAD_PID}", parent / f".ci.old-{DEAD_PID}"]
    live = parent / f".ci.tmp-{os.getpid()}"
    for d in dead + [live]:
        (d / "images").mkdir(parents=True)
    ensure_dataset(cfg)
    assert live.exists() and not any(d.exists() for d in dead)


def test_an_unreadable_shard_part_names_the_file(tmp_path):
    store = ShardStore(tmp_path / "shards", {"task": "images"}, DistInfo())
    store.write({0: torch.zeros(4, dtype=torch.long), 1: torch.ones(4, dtype=torch.long)})
    (part,) = store.parts()
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=rf"shard part {part}.*truncated.*Delete that file and rerun"):
        store.done()
    with pytest.raises(CheckpointError, match=part.name):
        store.read_all()
