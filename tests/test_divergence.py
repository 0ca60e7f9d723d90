"""A training whose loss turns NaN/inf stops with TrainingDivergedError naming the step and the last finite loss,
and leaves no checkpoint marked finished (AugVAE ML, SL with its unquantized start, BiART, the CLIP reranker, the
judge). The check reads the device only at log steps, checkpoint writes and the end."""
from __future__ import annotations

import math

import pytest
import torch

from lverse_core.data.decoded import DecodedImages, to_uint8
from lverse_core.training.loop import (CheckpointError, DivergenceGuard, TrainingDivergedError, load_checkpoint,
                                       run_steps)
from tests.test_augvae import synthetic_images
from tests.test_host_syncs import augvae_cfg

HUGE_LR = 1e30  # finite (a config check may refuse inf) and far beyond any rate that trains


@pytest.mark.parametrize("as_tensor", [False, True])
def test_run_steps_stops_at_the_check_after_a_nan_and_saves_nothing_after_it(as_tensor):
    losses = [0.5, 0.4, 0.3, float("nan"), 0.2, 0.1, 0.1, 0.1]
    saved = []

    def step_fn(step):
        v = losses[step]
        return {"loss": torch.tensor(v) if as_tensor else v}
    with pytest.raises(TrainingDivergedError) as e:
        run_steps(step_fn, start=0, total=8, save_fn=saved.append, ckpt_every=3, log_every=5, progress=False,
                  desc="toy")
    # saved after step 3 (before the NaN of step 4); the check before the write after step 6 raised
    assert saved == [3]
    assert e.value.step == 4 and e.value.last_finite == pytest.approx(0.3) and e.value.last_finite_step == 3
    assert "step 4 (of 8)" in str(e.value) and "0.3 at step 3" in str(e.value) and "toy diverged" in str(e.value)


def test_guard_without_a_finite_loss_says_so():
    g = DivergenceGuard("x", 3)
    g.observe(1, torch.tensor(float("inf")))
    g.observe(2, torch.tensor(1.0))  # a finite loss after the divergence is not "the last finite loss before it"
    with pytest.raises(TrainingDivergedError, match="no step of this run had a finite loss") as e:
        g.check()
    assert e.value.step == 1 and e.value.last_finite is None


def _assert_unfinished_or_absent(path, diverged_at):
    if path.exists():
        state = load_checkpoint(path)
        assert not state.get("finished", False)
        assert state["step"] < diverged_at


def test_augvae_ml_that_diverges_stops_and_leaves_no_finished_checkpoint(tmp_path):
    import lverse_core.training.augvae_train as A

    cfg = augvae_cfg(tmp_path, **{"augvae_train.lr": HUGE_LR, "augvae_train.ckpt_every": 1,
                                  "augvae_train.ml_steps": 12})
    data = DecodedImages(to_uint8(synthetic_images(16, cfg.data.image_size)), train=True)
    with pytest.raises(TrainingDivergedError, match=r"AugVAE ml diverged: the loss of step \d+ \(of 12\)") as e:
        A.train_augvae(cfg, "ml", dataset=data, progress=False)
    assert e.value.step <= 12
    path = A.checkpoint_path(cfg, "ml")
    _assert_unfinished_or_absent(path, e.value.step)
    with pytest.raises(CheckpointError):  # the next notebook refuses it instead of using a NaN model
        A.load_augvae(cfg, "ml")


def test_augvae_sl_that_diverges_in_its_unquantized_start_stops(tmp_path):
    import lverse_core.training.augvae_train as A

    cfg = augvae_cfg(tmp_path, **{"augvae_train.sl_steps": 12, "augvae_train.unquantized_steps": 8})
    data = DecodedImages(to_uint8(synthetic_images(16, cfg.data.image_size)), train=True)
    A.train_augvae(cfg, "ml", dataset=data, progress=False)
    bad = augvae_cfg(tmp_path, **{"augvae_train.sl_steps": 12, "augvae_train.unquantized_steps": 8,
                                  "augvae_train.lr": HUGE_LR, "augvae_train.ckpt_every": 1})
    from lverse_core import provenance

    # the ML above stands in for one trained under ``bad`` (only SL's rate matters here): recorded as such, so that
    # SL starts from it instead of refusing it as made with another learning rate
    provenance.record(A.checkpoint_path(bad, "ml"), A.augvae_made_from(bad, "ml"))
    with pytest.raises(TrainingDivergedError, match="AugVAE sl diverged") as e:
        A.train_augvae(bad, "sl", dataset=data, progress=False)
    assert e.value.step <= 8  # inside the unquantized start
    _assert_unfinished_or_absent(A.checkpoint_path(cfg, "sl"), e.value.step)


def test_biart_that_diverges_stops_before_its_last_checkpoint(tmp_path):
    from lverse_core.training.biart_train import train_biart
    from tests.test_biart_train import PAD, VT, cfg_for, data_for

    cfg = cfg_for(tmp_path, **{"biart_train.lr": HUGE_LR, "biart_train.warmup_steps": 1, "biart_train.steps": 12,
                               "biart_train.ckpt_every": 1, "biart_train.log_every": 4})
    with pytest.raises(TrainingDivergedError, match="BiART diverged") as e:
        train_biart(cfg, data_for(cfg), text_vocab_size=VT, pad_id=PAD)
    path = cfg.runs_root / "biart.pt"
    if path.exists():
        assert load_checkpoint(path)["step"] < e.value.step  # never the finished step count


def test_clip_reranker_that_diverges_writes_no_file(tmp_path):
    from lverse_core.config import load_profile
    from lverse_core.sampling.clip_reranker import reranker_path, train_clip_reranker

    cfg = load_profile("ci", runs_dir=str(tmp_path), **{"clip.train_steps": 20, "clip.batch_size": 4,
                                                        "clip.lr": HUGE_LR})
    g = torch.Generator().manual_seed(0)
    ds = [{"image": torch.rand(3, 32, 32, generator=g) * 2 - 1, "captions": [f"a {i % 3} square."]}
          for i in range(8)]
    with pytest.raises(TrainingDivergedError, match="CLIP reranker diverged"):
        train_clip_reranker(cfg, ds)
    assert not reranker_path(cfg).exists()


def test_judge_that_diverges_raises():
    from lverse_core.config import load_profile
    from lverse_core.data import shapes
    from lverse_core.evaluation.judge import build_judge, fit_judge

    cfg = load_profile("ci")
    judge = build_judge(cfg, shapes.SHAPES, shapes.COLOURS, shapes.SIZES)
    x = torch.randint(0, 256, (16, 3, cfg.data.image_size, cfg.data.image_size), dtype=torch.uint8)
    objs = [[{"shape": shapes.SHAPES[0], "colour": shapes.COLOURS[0], "size": shapes.SIZES[0], "x": 9.0,
              "y": 9.0}]] * 16
    with pytest.raises(TrainingDivergedError, match="judge training diverged") as e:
        fit_judge(judge, x, objs, steps=30, batch_size=8, lr=HUGE_LR, seed=0)
    assert e.value.last_finite is None or math.isfinite(e.value.last_finite)
