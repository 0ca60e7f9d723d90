"""AugVAE's per-step decoding (``augvae_train.decode: per_step``) in DataLoader workers: the batches are a function
of (seed, step, position), not of the workers' random state, so 0 or 2 workers, a resume and a DDP layout see the
same data; the kit's loader and its bad-input policy apply inside the workers."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from lverse_core.config import load_profile
from lverse_core.data.loaders import BadInputError, ImageFolderDataset, train_transform
from lverse_core.data.step_batches import step_batches
from lverse_core.training.augvae_train import checkpoint_path, train_augvae
from lverse_core.training.loop import StepSampler


def _cfg(tmp_path, name, **over):
    return load_profile("ci", **{"runs_dir": str(tmp_path / name / "runs"), "reports_dir": str(tmp_path / "reports"),
                                 "augvae_train.decode": "per_step", "augvae_train.batch_size": 4,
                                 "augvae_train.ml_steps": 6, "augvae_train.log_every": 1,
                                 "augvae_train.ckpt_every": 2, "augvae.ema_update": "per_level", **over})


def _folder(tmp_path, n: int = 10, bad: int | None = None):
    """An ImageFolder of ``n`` 44x36 PNGs (not square: the crop's fallback and bounds matter), a gradient plus a
    coloured square each, so that every crop of every image is different; image ``bad`` truncated."""
    root = tmp_path / "folder" / "train"
    (root / "a").mkdir(parents=True)
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[0:36, 0:44]
    for i in range(n):
        a = np.stack([xx * 5, yy * 7, (xx + yy) * 3], -1).astype(np.float64)
        s, r, c = g.integers(6, 14), g.integers(0, 20), g.integers(0, 28)
        a[r:r + s, c:c + s] = g.integers(0, 256, 3)
        path = root / "a" / f"img{i:02d}.png"
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path)
        if i == bad:
            path.write_bytes(path.read_bytes()[:60])
    return root


def _dataset(cfg, root):
    return ImageFolderDataset(root, cfg, train_transform(cfg.data.image_size))


def _batches(dataset, sampler, start, total, workers, seed=0, bad_input="error"):
    gen = step_batches(dataset, sampler, start, total, seed=seed, num_workers=workers, bad_input=bad_input)
    return {step: (x, skipped) for step, x, skipped in gen}


def test_batches_do_not_depend_on_workers_resume_layout_or_the_global_generator(tmp_path):
    cfg = _cfg(tmp_path, "x")
    ds = _dataset(cfg, _folder(tmp_path))
    sampler = StepSampler(len(ds), 4, cfg.seed)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    zero = _batches(ds, sampler, 0, 6, workers=0)
    assert torch.equal(torch.get_rng_state(), before)  # the model's random stream is left alone
    two = _batches(ds, sampler, 0, 6, workers=2)
    assert torch.equal(torch.get_rng_state(), before)
    resumed = _batches(ds, sampler, 3, 6, workers=2)
    assert sorted(zero) == sorted(two) == list(range(6)) and sorted(resumed) == [3, 4, 5]
    for s in range(6):
        assert zero[s][0].shape == (4, 3, 32, 32)
        assert torch.equal(zero[s][0], two[s][0]), s
        if s >= 3:
            assert torch.equal(zero[s][0], resumed[s][0]), s
    # the crops are random: an image met in two epochs (10 images, batch 4) is cropped differently (seeded: a fixed outcome)
    seen: dict[int, list[torch.Tensor]] = {}
    for s in range(5):
        for i, x in zip(sampler.indices(s), zero[s][0]):
            seen.setdefault(i, []).append(x)
    twice = [v for v in seen.values() if len(v) > 1]
    assert len(twice) >= 2 and sum(not torch.equal(v[0], v[1]) for v in twice) >= len(twice) - 1
    # two processes with batch 2 each see the one-process batch of 4, split by position (rank k takes k, k+2)
    ranks = [_batches(ds, StepSampler(len(ds), 4, cfg.seed, r, 2), 0, 3, workers=1) for r in range(2)]
    for s in range(3):
        assert torch.equal(ranks[0][s][0], zero[s][0][0::2]) and torch.equal(ranks[1][s][0], zero[s][0][1::2])
    # another seed, other crops
    other = _batches(ds, sampler, 0, 1, workers=0, seed=1)
    assert not torch.equal(other[0][0], zero[0][0])


def test_training_with_two_workers_killed_and_resumed_equals_one_process_decoding(tmp_path):
    root = _folder(tmp_path)
    a = _cfg(tmp_path, "a", **{"data.num_workers": 0})
    train_augvae(a, "ml", dataset=_dataset(a, root), progress=False)
    b = _cfg(tmp_path, "b", **{"data.num_workers": 2})
    train_augvae(b, "ml", dataset=_dataset(b, root), progress=False, stop_after=3)  # "killed": checkpoint at 2
    assert torch.load(checkpoint_path(b, "ml"), weights_only=True)["step"] == 2
    train_augvae(b, "ml", dataset=_dataset(b, root), progress=False)
    sa = torch.load(checkpoint_path(a, "ml"), weights_only=True)
    sb = torch.load(checkpoint_path(b, "ml"), weights_only=True)
    assert sa["step"] == sb["step"] == 6 and sb["finished"]
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    assert sa["optimizer"]["param_groups"][0]["lr"] == sb["optimizer"]["param_groups"][0]["lr"]


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_image_in_the_workers_follows_data_bad_input(tmp_path, caplog, workers):
    root = _folder(tmp_path, bad=3)
    cfg = _cfg(tmp_path, "err", **{"data.num_workers": workers, "augvae_train.ml_steps": 3})
    with pytest.raises(BadInputError, match=r"img03\.png.*data\.bad_input = skip"):  # raised in a worker: named
        train_augvae(cfg, "ml", dataset=_dataset(cfg, root), progress=False)
    cfg = _cfg(tmp_path, "skip", **{"data.num_workers": workers, "data.bad_input": "skip"})
    ds = _dataset(cfg, root)
    with caplog.at_level(logging.WARNING, logger="lverse_core.training.augvae_train"):
        train_augvae(cfg, "ml", dataset=ds, progress=False)
    reports = [r.getMessage() for r in caplog.records if "img03.png" in r.getMessage()]
    assert len(reports) == 1 and "data.bad_input = skip" in reports[0]  # reported by the training process, once
    # the bad image's place in a batch is taken by the next image of the listing, cropped with that place's key
    sampler = StepSampler(len(ds), 4, cfg.seed)
    step, k = next((s, k) for s in range(6) for k, i in enumerate(sampler.indices(s)) if i == 3)
    got = _batches(ds, sampler, step, step + 1, workers=workers, bad_input="skip")[step]
    assert len(got[1]) == 1 and "img03.png" in got[1][0]
    swapped = StepSampler(len(ds), 4, cfg.seed)
    swapped.indices = lambda s: [4 if i == 3 else i for i in sampler.indices(s)]
    swapped.rank, swapped.world = 0, 1
    assert torch.equal(got[0], _batches(ds, swapped, step, step + 1, workers=0)[step][0])
