"""AugVAE: quantizer maths, model shapes (paper sizes on the meta device), ML -> SL, training, resume, DDP,
checkpoint errors and resumable pre-tokenization. Tiny sizes; the whole file runs in well under a minute."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lverse_core.models.augvae import AugVAE, count_parameters
from lverse_core import provenance
from lverse_core.training.augvae_train import (augvae_made_from, checkpoint_path, effective_lr, load_augvae,
                                               train_augvae)
from lverse_core.config import MissingAssetError, derive, load_profile
from lverse_core.training.pretokenize import checkpoint_id, load_codes, pretokenize_split
from lverse_core.models.quantize import EMAVectorQuantizer
from lverse_core.data.decoded import from_uint8, to_uint8
from lverse_core.training.loop import CheckpointError, DistInfo, save_checkpoint


def tiny_cfg(tmp_path, **over):
    base = {"runs_dir": str(tmp_path / "runs"), "reports_dir": str(tmp_path / "reports"),
            "augvae.ema_update": "per_level"}
    return load_profile("ci", **{**base, **over})


def synthetic_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Flat-coloured backgrounds with one coloured square each, in [-1, 1]: a stand-in for the shapes data."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 1, 1, generator=g).expand(n, 3, size, size).clone()
    for i in range(n):
        s = int(torch.randint(size // 4, size // 2, (1,), generator=g))
        a, b = torch.randint(0, size - s, (2,), generator=g).tolist()
        x[i, :, a: a + s, b: b + s] = torch.rand(3, 1, 1, generator=g)
    return x * 2 - 1


class ImageSet(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], 0


# -- quantizer ---------------------------------------------------------------------------------------------------

def test_ema_update_matches_hand_computation():
    q = EMAVectorQuantizer(3, 2, decay=0.5, eps=1e-5)
    q.embed.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 5.0]]))
    q.embed_avg.copy_(q.embed)
    q.cluster_size.copy_(torch.tensor([1.0, 1.0, 1.0]))
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]])  # two vectors -> code 0, one -> code 1, none -> 2
    _, codes, _, flat = q(z.t().reshape(1, 2, 3, 1))
    assert codes.flatten().tolist() == [0, 0, 1]
    q.train()
    q.update_(flat, codes)
    n = torch.tensor([0.5 + 0.5 * 2, 0.5 + 0.5 * 1, 0.5])  # decay*N + (1-decay)*counts
    m = torch.tensor([[0.5 * 0 + 0.5 * 1, 0.5 * 0 + 0.5 * 1], [5 + 4.5, 5 + 4.5], [-5.0, 2.5]])
    total, eps = n.sum(), 1e-5
    smoothed = (n + eps) / (total + 3 * eps) * total
    torch.testing.assert_close(q.cluster_size, n)
    torch.testing.assert_close(q.embed_avg, m)
    torch.testing.assert_close(q.embed, m / smoothed[:, None])


def test_commitment_beta_scales_the_encoder_side_only():
    q = EMAVectorQuantizer(4, 3, beta=0.25)
    z = torch.randn(2, 3, 2, 2, requires_grad=True)
    z_q, codes, loss, _ = q(z)
    target = q.lookup(codes)
    torch.testing.assert_close(loss, 0.25 * F.mse_loss(z, target))
    (g,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(g, 0.25 * 2 * (z - target).detach() / z.numel())  # pulls z towards sg(e)
    assert not q.embed.requires_grad  # the codebook itself moves only by EMA
    torch.testing.assert_close(z_q, target)  # straight-through: forward value is the code


def test_pooled_update_equals_one_update_on_all_vectors():
    torch.manual_seed(0)
    a, b = torch.randn(6, 4), torch.randn(5, 4)
    q1, q2 = EMAVectorQuantizer(8, 4), EMAVectorQuantizer(8, 4)
    q2.load_state_dict(q1.state_dict())
    ca, cb = q1.nearest(a), q1.nearest(b)
    q1.update_(torch.cat([a, b]), torch.cat([ca, cb]))  # pooled: one decay
    q2.update_(a, ca)
    q2.update_(b, cb)  # per level: two decays in a row
    assert not torch.allclose(q1.cluster_size, q2.cluster_size)
    torch.testing.assert_close(q1.cluster_size, 0.99 * torch.zeros(8) + 0.01 * torch.bincount(
        torch.cat([ca, cb]), minlength=8).float())


def test_dead_codes_restart_from_encoder_outputs():
    torch.manual_seed(0)
    q = EMAVectorQuantizer(16, 4, dead_code_threshold=1.0, data_init=True)
    flat = torch.randn(64, 4) + 100.0  # far from the randn codebook
    q.train()
    _, codes, _, f = q(flat.view(1, 64, 4).permute(0, 2, 1).reshape(1, 4, 8, 8))
    assert bool(q.initted) and (q.embed > 50).all()  # data-based init took encoder outputs
    q.update_(f, codes.flatten())
    assert (q.embed > 50).all()  # restarted codes also come from encoder outputs, not randn


# -- model -------------------------------------------------------------------------------------------------------

def test_paper_sizes_and_level_shapes_on_meta_device():
    cfg = load_profile("paper", **{"data.n_train": 1})
    with torch.device("meta"):
        ml, sl = AugVAE.from_config(cfg, "ml"), AugVAE.from_config(cfg, "sl")
        x = torch.empty(2, 3, 256, 256)
        codes = ml.eval().encode(x)
        sl_codes = sl.eval().encode(x)
        recon = ml._decode_quantized({k: ml.quantizer.lookup(c) for k, c in enumerate(codes)})
    assert [tuple(c.shape) for c in codes] == [(2, 64, 64), (2, 32, 32), (2, 16, 16), (2, 8, 8)]
    assert tuple(sl_codes.shape) == (2, 32, 32) and sl_codes.dtype == torch.long
    assert tuple(recon.shape) == (2, 3, 256, 256)
    assert 200e6 < count_parameters(ml) < 240e6  # official code estimate ~221M
    assert 100e6 < count_parameters(sl) < 120e6  # paper "100-million parameter AugVAE-SL", estimate ~112M


def test_sl_code_grid_and_range(tmp_path):
    cfg = tiny_cfg(tmp_path)
    sl = AugVAE.from_config(cfg, "sl").eval()
    codes = sl.encode(synthetic_images(3, cfg.data.image_size))
    assert codes.shape == (3, cfg.image_grid, cfg.image_grid) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < cfg.augvae.codebook_size
    out = sl.decode(codes)
    assert out.shape == (3, 3, cfg.data.image_size, cfg.data.image_size) and out.abs().max() <= 1
    with pytest.raises(ValueError, match="codes must lie"):
        sl.decode(codes + cfg.augvae.codebook_size)


def test_one_codebook_shared_by_all_levels(tmp_path):
    cfg = tiny_cfg(tmp_path)
    ml = AugVAE.from_config(cfg, "ml").train()
    assert [k for k in ml.state_dict() if k.endswith("embed")] == ["quantizer.embed"]
    ptr = ml.quantizer.embed.data_ptr()
    before = ml.quantizer.embed.clone()
    ml(synthetic_images(4, cfg.data.image_size))
    assert ml.quantizer.embed.data_ptr() == ptr and not torch.equal(before, ml.quantizer.embed)
    assert ml.quantizer.cluster_size.sum() > 0


def test_eval_mode_leaves_codebook_unchanged(tmp_path):
    cfg = tiny_cfg(tmp_path)
    ml = AugVAE.from_config(cfg, "ml").eval()
    before = {k: v.clone() for k, v in ml.quantizer.state_dict().items()}
    ml(synthetic_images(4, cfg.data.image_size))
    for k, v in ml.quantizer.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_ml_to_sl_keeps_shared_weights(tmp_path):
    cfg = tiny_cfg(tmp_path)
    ml = AugVAE.from_config(cfg, "ml")
    sl = AugVAE.ml_to_sl(ml)
    ml_sd, sl_sd = ml.state_dict(), sl.state_dict()
    shared = [k for k in sl_sd if not k.startswith("connectors.")]
    assert shared and all(torch.equal(sl_sd[k], ml_sd[k]) for k in shared)
    assert len(sl.encoders) == 2 and len(sl.decoders) == 2 and len(sl.connectors) == 2
    x = synthetic_images(2, cfg.data.image_size)
    assert torch.equal(sl.eval().encode(x), ml.eval().encode(x)[1])  # SL codes are ML's level-1 codes


def test_loss_falls_when_overfitting_one_batch(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_cfg(tmp_path)
    model = AugVAE.from_config(cfg, "ml").train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = synthetic_images(4, cfg.data.image_size)
    losses = []
    for _ in range(60):
        _, out = model(x)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["mse"]))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_quantizer_stays_fp32_inside_a_bf16_autocast_region():
    torch.manual_seed(0)
    q = EMAVectorQuantizer(64, 8, data_init=False)
    # nearly tied codes: a bf16 distance would pick the wrong one for some vectors
    q.embed.copy_(torch.randn(64, 8) + 100.0)
    z = (q.embed[torch.randint(0, 64, (200,))] + 1e-3 * torch.randn(200, 8)).t().reshape(1, 8, 200, 1)
    ref_q, ref_codes, ref_loss, _ = q(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_q, codes, loss, flat = q(z.to(torch.bfloat16).float())
    assert z_q.dtype == torch.float32 and loss.dtype == torch.float32 and flat.dtype == torch.float32
    assert torch.equal(codes, ref_codes)


def test_bf16_training_precision_trains_and_keeps_fp32_weights(tmp_path):
    cfg = _train_cfg(tmp_path, "bf16", **{"augvae_train.precision": "bf16"})
    path = train_augvae(cfg, "ml", dataset=ImageSet(synthetic_images(16, cfg.data.image_size)), progress=False)
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["step"] == cfg.augvae_train.ml_steps
    # FP32 weights and codebook; the codebook's flag and its restart counter are a bool and whole numbers
    assert all(v.dtype in (torch.float32, torch.bool) for k, v in ckpt["model"].items()
               if k != "quantizer.idle_updates")
    assert ckpt["model"]["quantizer.idle_updates"].dtype == torch.int64
    log = (cfg.runs_root / "logs" / "augvae_ml.csv").read_text().splitlines()
    assert len(log) == 1 + cfg.augvae_train.ml_steps and "nan" not in log[-1]
    with pytest.raises(ValueError, match="augvae_train.precision"):
        tiny_cfg(tmp_path, **{"augvae_train.precision": "fp16"})


# -- training, resume, DDP, checkpoints --------------------------------------------------------------------------

def _train_cfg(tmp_path, name, **over):
    return tiny_cfg(tmp_path / name, **{"augvae_train.ml_steps": 6, "augvae_train.sl_steps": 4,
                                        "augvae_train.log_every": 1, "augvae_train.ckpt_every": 2, **over})


def _assert_same_state(a, b):
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_logging_interval_does_not_change_training_and_the_plateau_floor_holds(tmp_path):
    from lverse_core.training.augvae_train import plateau_interval

    data = ImageSet(synthetic_images(16, 32))
    states = []
    for name, every in (("log1", 1), ("log3", 3)):
        cfg = _train_cfg(tmp_path, name, **{"augvae_train.log_every": every, "augvae_train.plateau_every": 2,
                                            "augvae_train.plateau_patience": 0, "augvae_train.plateau_cooldown": 0})
        states.append(torch.load(train_augvae(cfg, "ml", dataset=data, progress=False), weights_only=False))
    _assert_same_state(states[0]["model"], states[1]["model"])
    assert states[0]["optimizer"]["param_groups"][0]["lr"] == states[1]["optimizer"]["param_groups"][0]["lr"]
    # cooldown and floor reach the scheduler (official: cooldown 10, min_lr 1e-6)
    cfg = _train_cfg(tmp_path, "floor", **{"augvae_train.plateau_cooldown": 3, "augvae_train.plateau_min_lr": 2e-5})
    sched = torch.load(train_augvae(cfg, "ml", dataset=data, progress=False), weights_only=False)["scheduler"]
    assert sched["cooldown"] == 3 and sched["min_lrs"] == [2e-5]
    # 0 = once per epoch: the images over the global batch, rounded up
    cfg = tiny_cfg(tmp_path, **{"augvae_train.plateau_every": 0, "augvae_train.batch_size": 4})
    assert plateau_interval(cfg, 10, 1) == 3 and plateau_interval(cfg, 10, 2) == 2
    assert plateau_interval(tiny_cfg(tmp_path, **{"augvae_train.plateau_every": 7}), 10, 1) == 7


def test_final_lr_decay_scales_the_steps_rate_keeps_the_plateau_rate_and_resumes_exactly(tmp_path):
    from lverse_core.training.augvae_train import lr_decay_factor

    assert [lr_decay_factor(s, 10, 0.3) for s in range(10)] == [1.0] * 7 + [1.0, 2 / 3, 1 / 3]
    assert [lr_decay_factor(s, 6, 0.0) for s in range(6)] == [1.0] * 6
    assert lr_decay_factor(0, 4, 0.99) == 1.0 and lr_decay_factor(3, 4, 0.99) == 0.25
    data = ImageSet(synthetic_images(24, 32))
    over = {"augvae_train.lr_decay_fraction": 0.5}
    cfg_a, cfg_b = _train_cfg(tmp_path, "a", **over), _train_cfg(tmp_path, "b", **over)
    path = train_augvae(cfg_a, "ml", dataset=data, progress=False)
    base = effective_lr(cfg_a, 1)
    rows = (cfg_a.runs_root / "logs" / "augvae_ml.csv").read_text().splitlines()
    col = rows[0].split(",").index("lr")
    logged = [float(r.split(",")[col]) for r in rows[1:]]
    assert logged == pytest.approx([base, base, base, base, base * 2 / 3, base / 3])  # the rate each step used
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(base)  # the plateau's, not the decayed one
    train_augvae(cfg_b, "ml", dataset=data, progress=False, stop_after=5)  # killed inside the decay, ckpt at 4
    train_augvae(cfg_b, "ml", dataset=data, progress=False)
    _assert_same_state(ckpt["model"], torch.load(checkpoint_path(cfg_b, "ml"), weights_only=True)["model"])
    with pytest.raises(ValueError, match="lr_decay_fraction"):
        tiny_cfg(tmp_path, **{"augvae_train.lr_decay_fraction": 1.0})


def test_kill_and_resume_equals_uninterrupted_run(tmp_path):
    data = ImageSet(synthetic_images(24, 32))
    cfg_a, cfg_b = _train_cfg(tmp_path, "a"), _train_cfg(tmp_path, "b")
    train_augvae(cfg_a, "ml", dataset=data, progress=False)
    train_augvae(cfg_b, "ml", dataset=data, progress=False, stop_after=3)  # "killed" after step 3, ckpt at 2
    assert torch.load(checkpoint_path(cfg_b, "ml"), weights_only=True)["step"] == 2
    train_augvae(cfg_b, "ml", dataset=data, progress=False)
    sa = torch.load(checkpoint_path(cfg_a, "ml"), weights_only=True)
    sb = torch.load(checkpoint_path(cfg_b, "ml"), weights_only=True)
    assert sa["step"] == sb["step"] == 6 and sb["finished"]
    _assert_same_state(sa["model"], sb["model"])
    # the SL finetune starts from the finished ML and keeps its shared weights at step 0
    train_augvae(cfg_a, "sl", dataset=data, progress=False)
    sl = load_augvae(cfg_a, "sl")
    assert sl.variant == "sl" and sl.encode(data.images[:2]).shape == (2, 4, 4)
    log = (cfg_b.runs_root / "logs" / "augvae_ml.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in log[1:]] == [1, 2, 3, 4, 5, 6]  # rows after the resume point replaced


def _ddp_worker(rank, world, port, cfg_over, tmp, images):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from pathlib import Path

        cfg = tiny_cfg(Path(tmp), **cfg_over)
        train_augvae(cfg, "ml", dataset=ImageSet(images), progress=False,
                     dist_info=DistInfo(rank=rank, world_size=world, local_rank=rank))
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_two_gloo_processes_equal_one_process(tmp_path):
    images = synthetic_images(16, 32)
    common = {"augvae_train.ml_steps": 3, "augvae_train.log_every": 1, "augvae_train.ckpt_every": 10,
              "augvae.data_init": False, "augvae.dead_code_threshold": 0.0}
    one = tiny_cfg(tmp_path / "one", **common, **{"augvae_train.batch_size": 4})
    train_augvae(one, "ml", dataset=ImageSet(images), progress=False)
    port = 29500 + os.getpid() % 1000
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, {**common, "augvae_train.batch_size": 2},
                                                   str(tmp_path / "two"), images), nprocs=2)
    two = tiny_cfg(tmp_path / "two", **common, **{"augvae_train.batch_size": 2})
    sa = torch.load(checkpoint_path(one, "ml"), weights_only=True)
    sb = torch.load(checkpoint_path(two, "ml"), weights_only=True)
    assert sb["world_size"] == 2
    assert_same_augvae_training(sa["model"], sb["model"], steps=3, lr=one.augvae_train.lr * 4)


def assert_same_augvae_training(a: dict, b: dict, *, steps: int, lr: float) -> None:
    """Two AugVAE state dicts trained from the same start on the same global batches, one process and DDP.

    Adam normalises each gradient element, so an element whose gradient is ~0 can move by +-lr on float
    summation-order noise alone: require all but a small share of elements to agree to 1e-6, none beyond the bound;
    the EMA statistics (all-reduced inside the quantizer) to 1e-4. How many elements sit at ~0 gradient depends on
    the CPU's kernels: under 1e-4 of them on the Intel Xeon VM, 2e-4 in the two-node job on an AMD EPYC VM; the
    share allowed is 1e-3 (a DDP that averaged the wrong gradients moves most elements).
    """
    diffs = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a if not k.startswith("quantizer.")])
    share = float((diffs > 1e-6).float().mean())
    assert share < 1e-3, f"{share:.2e} of the weights differ by more than 1e-6"
    assert diffs.max() <= 2 * steps * lr + 1e-7
    for k in ("quantizer.cluster_size", "quantizer.embed_avg"):
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4)


def test_bad_checkpoints_give_clear_errors(tmp_path):
    data = ImageSet(synthetic_images(8, 32))
    cfg = _train_cfg(tmp_path, "c", **{"augvae_train.ml_steps": 1})
    path = train_augvae(cfg, "ml", dataset=data, progress=False)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_augvae(cfg, "ml")
    save_checkpoint(path, {"kind": "biart", "model": {}})
    with pytest.raises(CheckpointError, match="'biart' checkpoint"):
        load_augvae(cfg, "ml")
    path.write_bytes(good)
    other = _train_cfg(tmp_path, "c", **{"augvae_train.ml_steps": 1, "augvae.codebook_size": 64})
    with pytest.raises(CheckpointError, match="codebook_size"):
        load_augvae(other, "ml")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_augvae(cfg, "sl")


def test_checkpoints_with_other_tensors_or_no_model_args_name_the_file_and_the_tensor(tmp_path):
    cfg = _train_cfg(tmp_path, "t", **{"augvae_train.ml_steps": 1})
    path = train_augvae(cfg, "ml", dataset=ImageSet(synthetic_images(8, 32)), progress=False)
    state = torch.load(path, weights_only=True)
    first = next(iter(state["model"]))

    def extra(s):
        s["model"]["decoder.stray.weight"] = torch.zeros(1)

    def reshaped(s):
        s["model"][first] = torch.zeros(3)

    for edit, words in [(extra, r"unexpected tensor\(s\) decoder.stray.weight"),
                        (lambda s: s["model"].pop(first), rf"missing tensor\(s\) {re.escape(first)}"),
                        (reshaped, rf"misshaped tensor\(s\) {re.escape(first)}"),
                        (lambda s: s.pop("model_args"), "no 'model_args' mapping")]:
        broken = {**state, "model": dict(state["model"])}
        edit(broken)
        save_checkpoint(path, broken)
        # recorded as made from this run's settings, so that the tensors themselves are what gets refused
        provenance.record(path, augvae_made_from(cfg, "ml"))
        with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))}.*{words}.*re-run the training notebook"):
            load_augvae(cfg, "ml")


def test_perceptual_loss_without_weights_is_a_clear_error(tmp_path):
    cfg = _train_cfg(tmp_path, "p", **{"augvae_train.lpips_weight": 0.1, "assets.vgg16_lpips": ""})
    with pytest.raises(MissingAssetError, match="vgg16_lpips"):
        train_augvae(cfg, "ml", dataset=ImageSet(synthetic_images(4, 32)), progress=False)


def test_edge_loss_sees_blurred_outlines_not_a_brightness_shift():
    from lverse_core.models.perceptual import edge_loss

    sharp = -torch.ones(2, 3, 16, 16)
    sharp[..., 4:12, 4:12] = 1.0  # a square
    blurred = F.avg_pool2d(sharp, 3, stride=1, padding=1, count_include_pad=False)
    assert edge_loss(sharp, sharp) == 0
    assert edge_loss(sharp + 0.3, sharp) < 1e-6  # same outlines, other brightness: no edge error (MSE sees 0.09)
    assert edge_loss(blurred, sharp) > 0.05
    x = blurred.clone().requires_grad_(True)
    edge_loss(x, sharp).backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="one shape"):
        edge_loss(sharp, sharp[..., :8])


def test_edge_weight_enters_the_training_loss_and_the_log(tmp_path):
    import csv

    data = ImageSet(synthetic_images(16, 32))
    states, logs = [], []
    for name, w in (("plain", 0.0), ("edge", 1.0)):
        cfg = _train_cfg(tmp_path, name, **{"augvae_train.edge_weight": w, "augvae_train.ml_steps": 3})
        train_augvae(cfg, "ml", dataset=data, progress=False)
        states.append(torch.load(checkpoint_path(cfg, "ml"), weights_only=False)["model"])
        with open(cfg.runs_root / "logs" / "augvae_ml.csv") as f:
            logs.append(list(csv.DictReader(f)))
    assert all(float(r["edge"]) == 0 for r in logs[0])
    assert all(float(r["edge"]) > 0 for r in logs[1])
    # the loss logged is MSE + commitment + edge term, and the weights moved differently
    r = logs[1][-1]
    assert float(r["loss"]) == pytest.approx(float(r["mse"]) + float(r["commit"]) + float(r["edge"]), rel=1e-4)
    assert any(not torch.equal(states[0][k], states[1][k]) for k in states[0] if states[0][k].is_floating_point())
    # edge_in_ml false: ML trains on MSE + commitment alone (the same weights as without the term), SL uses it
    cfg = _train_cfg(tmp_path, "sl_only", **{"augvae_train.edge_weight": 1.0, "augvae_train.edge_in_ml": False,
                                             "augvae_train.ml_steps": 3, "augvae_train.sl_steps": 4})
    train_augvae(cfg, "ml", dataset=data, progress=False)
    _assert_same_state(states[0], torch.load(checkpoint_path(cfg, "ml"), weights_only=False)["model"])
    train_augvae(cfg, "sl", dataset=data, progress=False)
    with open(cfg.runs_root / "logs" / "augvae_sl.csv") as f:
        assert all(float(r["edge"]) > 0 for r in csv.DictReader(f))


def test_kmeans_finds_separated_clusters_and_sets_the_codebook():
    from lverse_core.models.quantize import kmeans

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 4, generator=g) * 10
    x = (centres.repeat_interleave(50, 0) + 0.01 * torch.randn(400, 4, generator=g))
    found, counts, err = kmeans(x, 8, 10, torch.Generator().manual_seed(1))
    # every true centre has a found centre next to it, each holding its 50 points
    assert torch.cdist(centres, found).min(1).values.max() < 0.05
    assert sorted(counts.tolist()) == [50.0] * 8 and err < 1e-3
    with pytest.raises(ValueError, match="at least 8 rows"):
        kmeans(x[:5], 8, 10)
    # duplicates only: seeding still completes
    assert kmeans(torch.ones(10, 4), 3, 2)[0].shape == (3, 4)

    q = EMAVectorQuantizer(8, 4, data_init=True)
    km = q.init_kmeans_(x, batches=2, iters=10, seed=1)
    assert bool(q.initted) and km["used"] == 1.0
    assert torch.cdist(centres, q.embed).min(1).values.max() < 0.05
    assert torch.allclose(q.cluster_size, torch.full((8,), 25.0))  # counts per batch, as the EMA keeps them
    assert torch.allclose(q.embed_avg / q.cluster_size[:, None], q.embed)
    with pytest.raises(ValueError, match="at least that many vectors"):
        q.init_kmeans_(x[:5])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        q.init_kmeans_(x[:, :3])


def test_unquantized_forward_is_a_plain_autoencoder():
    torch.manual_seed(0)
    args = dict(hidden=8, ch_mult=[1, 2], z_channels=8, codebook_size=16, n_levels=2, norm_groups=4,
                enc_res_blocks=0, dec_res_blocks=0, mid_res_blocks=0, data_init=True)
    sl = AugVAE("sl", **args).train()
    x = synthetic_images(2, 16)
    before = {k: b.clone() for k, b in sl.quantizer.named_buffers()}
    recon, out = sl(x, quantize=False)
    assert out["commit"] == 0.0 and out["mse"] == pytest.approx(float(out["loss"].detach()))  # the MSE alone
    assert torch.allclose(out["loss"], F.mse_loss(recon, x))
    assert out["vectors"].shape == (sl.encode(x).numel(), 8) and not out["vectors"].requires_grad
    _assert_same_state(before, dict(sl.quantizer.named_buffers()))  # the codebook is not touched
    _, quantized = sl(x)
    assert set(quantized) | {"vectors"} == set(out)  # the same statistics, of the same types, as a quantized pass
    assert all(type(out[k]) is type(quantized[k]) for k in quantized)
    out["loss"].backward()
    assert sl.encoders[1].conv_out.weight.grad.abs().sum() > 0  # the encoder learns through the latent
    with pytest.raises(ValueError, match="single-level"):
        AugVAE("ml", **args).train()(x, quantize=False)


def test_unquantized_steps_start_sl_as_an_autoencoder_then_kmeans_and_resume_exactly(tmp_path):
    import csv

    data = ImageSet(synthetic_images(24, 32))
    over = {"augvae_train.sl_steps": 6, "augvae_train.unquantized_steps": 3, "augvae_train.kmeans_batches": 2,
            "augvae_train.ckpt_every": 2}
    cfg_a, cfg_b = _train_cfg(tmp_path, "a", **over), _train_cfg(tmp_path, "b", **over)
    for cfg in (cfg_a, cfg_b):
        train_augvae(cfg, "ml", dataset=data, progress=False)
    train_augvae(cfg_a, "sl", dataset=data, progress=False)
    with open(cfg_a.runs_root / "logs" / "augvae_sl.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["commit"]) for r in rows[:3]] == [0.0] * 3  # steps 1-3: no quantizer
    assert all(float(r["commit"]) > 0 for r in rows[3:])
    # killed inside the warm-up (checkpoint at step 2 keeps the vectors of steps 1-2), resumed: the same model
    train_augvae(cfg_b, "sl", dataset=data, progress=False, stop_after=3)
    ck = torch.load(checkpoint_path(cfg_b, "sl"), weights_only=False)
    assert ck["step"] == 2 and len(ck["kmeans_bank"]) == 2
    train_augvae(cfg_b, "sl", dataset=data, progress=False)
    sa = torch.load(checkpoint_path(cfg_a, "sl"), weights_only=False)
    sb = torch.load(checkpoint_path(cfg_b, "sl"), weights_only=False)
    _assert_same_state(sa["model"], sb["model"])
    assert "kmeans_bank" not in sa  # written only inside the warm-up
    # the codebook left the ML's: k-means of the SL level's vectors
    ml = torch.load(checkpoint_path(cfg_a, "ml"), weights_only=False)["model"]
    assert not torch.equal(ml["quantizer.embed"], sa["model"]["quantizer.embed"])
    # a warm-up as long as the run would never train the codebook
    bad = _train_cfg(tmp_path, "bad", **{**over, "augvae_train.unquantized_steps": 6})
    train_augvae(bad, "ml", dataset=data, progress=False)
    with pytest.raises(ValueError, match="unquantized_steps .6. must be fewer"):
        train_augvae(bad, "sl", dataset=data, progress=False)
    # ML ignores it
    assert torch.load(checkpoint_path(bad, "ml"), weights_only=False)["finished"]


# -- pre-tokenization --------------------------------------------------------------------------------------------

def _fake_sl_checkpoint(cfg, content: bytes = b"sl weights") -> str:
    """Stand-in bytes for runs/<profile>/augvae_sl.pt; returns its checkpoint id (what load_codes compares)."""
    path = checkpoint_path(cfg, "sl")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return checkpoint_id(path)


def test_pretokenize_is_resumable_and_not_redone(tmp_path):
    cfg = tiny_cfg(tmp_path)
    ck1 = _fake_sl_checkpoint(cfg)
    sl = AugVAE.from_config(cfg, "sl").eval()
    images = synthetic_images(10, cfg.data.image_size)
    records = [{"image_id": 100 + i, "path": None, "captions": []} for i in range(10)]
    load = lambda r: images[r["image_id"] - 100]  # noqa: E731
    pretokenize_split(cfg, "val", sl, ck1, batch_size=4, records=records, load_image=load, stop_after_batches=1)
    with pytest.raises(FileNotFoundError, match="interrupted"):
        load_codes(cfg, "val")
    progress = json.loads((cfg.runs_root / "codes" / "val_progress.json").read_text())
    assert progress["done"] == 4 and "image_ids" not in json.dumps(progress)  # a digest, not every id per batch
    path = pretokenize_split(cfg, "val", sl, ck1, batch_size=4, records=records, load_image=load)
    codes, ids = load_codes(cfg, "val")
    assert codes.dtype == np.uint16 and codes.shape == (10, cfg.image_grid, cfg.image_grid)
    assert ids == list(range(100, 110))
    assert np.array_equal(codes, sl.encode(images).numpy())
    mtime = path.stat().st_mtime_ns
    pretokenize_split(cfg, "val", sl, ck1, batch_size=4, records=records, load_image=load)
    assert path.stat().st_mtime_ns == mtime  # finished: not redone
    with pytest.raises(ValueError, match="expected uint16"):
        load_codes(tiny_cfg(tmp_path, **{"data.image_size": 64}), "val")


def test_control_steps_zero_means_off(tmp_path):
    from lverse_core.training.augvae_train import control_enabled, planned_steps

    off = tiny_cfg(tmp_path, **{"augvae_train.baseline_steps": 0, "augvae_train.ml_steps": 7,
                                "augvae_train.sl_steps": 5})
    assert planned_steps(off, "baseline") == 0 and not control_enabled(off)  # not ml + sl any more
    with pytest.raises(ValueError, match="control is off.*12"):
        train_augvae(off, "baseline", dataset=ImageSet(synthetic_images(4, 32)), progress=False)
    assert not checkpoint_path(off, "baseline").exists()
    on = tiny_cfg(tmp_path / "on", **{"augvae_train.baseline_steps": 3})
    assert planned_steps(on, "baseline") == 3 and control_enabled(on)


from _pretokenize_stubs import Recorder as _Recorder  # noqa: E402


def _odd_images(tmp_path):
    """A 16-bit grey, a half-transparent RGBA and a truncated PNG, 32 px, as records."""
    from PIL import Image

    paths = [tmp_path / "i16.png", tmp_path / "rgba.png", tmp_path / "trunc.png"]
    Image.fromarray(np.full((32, 32), 32896, dtype=np.uint16)).save(paths[0])  # mid grey in 16 bits
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(paths[1])  # fully transparent: white once composited
    Image.new("RGB", (32, 32), (9, 9, 9)).save(paths[2])
    paths[2].write_bytes(paths[2].read_bytes()[:40])
    return [{"image_id": i, "path": p, "captions": ["x"]} for i, p in enumerate(paths)]


@pytest.mark.parametrize("workers", [0, 2])
def test_pretokenize_decodes_images_with_the_kits_loader_and_bad_input_policy(tmp_path, workers):
    from lverse_core.data.loaders import BadInputError

    records = _odd_images(tmp_path)
    cfg = tiny_cfg(tmp_path, **{"data.num_workers": workers})
    ck = _fake_sl_checkpoint(cfg)
    with pytest.raises(BadInputError, match="trunc.png.*data.bad_input = skip"):  # raised in a worker: still named
        pretokenize_split(cfg, "val", _Recorder(cfg.image_grid), ck, records=records)
    cfg = tiny_cfg(tmp_path, **{"data.bad_input": "skip", "data.num_workers": workers})
    model = _Recorder(cfg.image_grid)
    pretokenize_split(cfg, "val", model, ck, records=records)
    seen = torch.cat(model.seen)
    assert seen.shape[0] == 2  # the truncated image is left out
    assert abs(seen[0].mean().item()) < 0.02  # 16-bit mid grey stays mid grey (a plain convert gave white)
    assert seen[1].min().item() > 0.99  # transparency composited on white, as the other loaders do
    index = json.loads((cfg.runs_root / "codes" / "val_index.json").read_text())
    assert index["image_ids"] == [0, 1] and index["skipped_ids"] == [2]
    codes, ids = load_codes(cfg, "val")
    assert ids == [0, 1] and codes.shape == (2, cfg.image_grid, cfg.image_grid)
    model.seen.clear()
    pretokenize_split(cfg, "val", model, ck, records=records)
    assert model.seen == []  # finished with a skipped image: still not redone


def test_pretokenize_decodes_in_data_num_workers_processes_in_record_order(tmp_path):
    cfg = tiny_cfg(tmp_path, **{"data.num_workers": 2})
    ck = _fake_sl_checkpoint(cfg)
    main_pid, size = os.getpid(), cfg.data.image_size
    records = [{"image_id": i, "path": None} for i in range(10)]

    def load(r):  # the image says which process decoded it, and which record it is
        x = torch.zeros(3, size, size)
        x[0], x[1] = float(os.getpid() != main_pid), r["image_id"] / 10
        return x

    model = _Recorder(cfg.image_grid)
    pretokenize_split(cfg, "val", model, ck, batch_size=4, records=records, load_image=load)
    seen = torch.cat(model.seen)
    assert seen[:, 0].min().item() == 1.0  # every image decoded in a worker, none in the main process
    assert torch.allclose(seen[:, 1, 0, 0], torch.arange(10) / 10)  # rows in record order
    assert load_codes(cfg, "val")[1] == list(range(10))


def test_codes_of_a_retrained_sl_checkpoint_are_refused(tmp_path):
    cfg = tiny_cfg(tmp_path)
    old = _fake_sl_checkpoint(cfg, b"first training")
    pretokenize_split(cfg, "val", _Recorder(cfg.image_grid), old, records=[{"image_id": 1, "path": None}],
                      load_image=lambda r: torch.zeros(3, 32, 32))
    assert load_codes(cfg, "val")[1] == [1]
    os.utime(checkpoint_path(cfg, "sl"), (0, 0))  # touched or copied: the same checkpoint, still accepted
    assert load_codes(cfg, "val")[1] == [1]
    _fake_sl_checkpoint(cfg, b"second train")  # SL retrained: same size, other weights
    with pytest.raises(CheckpointError, match=r"val_codes.npy is stale.*Re-run pre-tokenization.*02_train_biart"):
        load_codes(cfg, "val")
    checkpoint_path(cfg, "sl").unlink()
    with pytest.raises(CheckpointError, match="augvae_sl.pt does not exist"):
        load_codes(cfg, "val")


@pytest.mark.parametrize("damage, words", [
    ("beyond", "holds code 128, beyond the codebook of 128 codes"),  # was accepted: an embedding index error later
    ("no_ids", "has no 'image_ids' list"),  # was a KeyError
    ("torn", "val_codes.npy cannot be read"),  # was numpy's own ValueError
    ("index_not_json", "val_index.json cannot be read"),
])
def test_damaged_code_files_are_named_with_what_to_do(tmp_path, damage, words):
    cfg = tiny_cfg(tmp_path)
    g, size = cfg.image_grid, cfg.augvae.codebook_size
    codes = np.zeros((2, g, g), dtype=np.uint16)
    index = {"image_ids": [1, 2], "grid": g, "codebook_size": size, "checkpoint": _fake_sl_checkpoint(cfg)}
    if damage == "beyond":
        codes[1, 0, 0] = size
    elif damage == "no_ids":
        del index["image_ids"]
    folder = cfg.runs_root / "codes"
    folder.mkdir(parents=True)
    np.save(folder / "val_codes.npy", codes)
    (folder / "val_index.json").write_text("{oops" if damage == "index_not_json" else json.dumps(index))
    if damage == "torn":
        (folder / "val_codes.npy").write_bytes((folder / "val_codes.npy").read_bytes()[:-7])
    with pytest.raises(ValueError, match=rf"{words}.*re-run pre-tokenization"):
        load_codes(cfg, "val")


# -- ablation: one codebook per level (claims notebook 07) ---------------------------------------------------------

def test_per_level_codebooks_keep_each_level_in_its_own_codes(tmp_path):
    cfg = tiny_cfg(tmp_path, **{"augvae.codebook": "per_level", "augvae.codebook_size": 32,
                                "augvae.dead_code_threshold": 1.0, "augvae.data_init": True})
    model = AugVAE.from_config(cfg, "ml")
    assert model.args["codebook"] == "per_level"
    size = 32 // model.n_levels
    x = synthetic_images(8, cfg.data.image_size)
    before = model.quantizer.embed.clone()
    model.train()
    for _ in range(3):
        model(x)
    for k, codes in enumerate(model.encode(x)):
        assert codes.min() >= k * size and codes.max() < (k + 1) * size  # levels cannot share codes
    # the EMA of one level's step moves only its own codes: a pass over level 0 alone leaves the others as they were
    embed = model.quantizer.embed.clone()
    z = model._encode_levels(x)[0]
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    model.quantizer.update_(flat, model.quantizer.nearest(flat, model.code_range(0)), model.code_range(0))
    assert torch.equal(model.quantizer.embed[size:], embed[size:]) and not torch.equal(model.quantizer.embed, before)
    sl = AugVAE.ml_to_sl(model)
    codes = sl.encode(x)
    assert codes.min() >= sl.sl_level * size and codes.max() < (sl.sl_level + 1) * size
    shared = AugVAE.from_config(tiny_cfg(tmp_path), "ml")
    assert "codebook" not in shared.args and shared.code_range(2) is None  # older checkpoints' args still match
    with pytest.raises(ValueError, match="multiple of n_levels"):
        AugVAE.from_config(tiny_cfg(tmp_path, **{"augvae.codebook": "per_level", "augvae.codebook_size": 30}), "ml")


def test_lverse_cc_trains_on_the_cc3m_view_and_keeps_evaluation_on_the_source(tmp_path):
    """data.train_source cc3m (L-Verse-CC) on the embedded set: BiART's training pairs are the TSV's rows (one caption
    each), the test pairs stay the Karpathy view's (every caption), and Table 3 names the row L-Verse-CC."""
    from lverse_core.data import caption_records
    from lverse_core.data.tokenizer import TextTokenizer
    from lverse_core.pipeline.eval_tables import ours_label
    from lverse_core.training.biart_train import paired_tokens

    from lverse_core.data.shapes_dataset import ensure_dataset

    cfg = tiny_cfg(tmp_path, **{"data.train_source": "cc3m", "data.root": str(tmp_path / "data")})
    ensure_dataset(cfg)  # as notebook 00 does: the readers below never make it
    ck = _fake_sl_checkpoint(cfg)
    for split in ("train", "test"):
        pretokenize_split(cfg, split, _Recorder(cfg.image_grid), ck)
    tsv = caption_records(cfg, "train", source="cc3m") + caption_records(cfg, "val", source="cc3m") \
        + caption_records(cfg, "test", source="cc3m")
    tok = TextTokenizer.build(cfg, [c for r in caption_records(cfg, "train") for c in r["captions"]])
    train, test = paired_tokens(cfg, tok, "train"), paired_tokens(cfg, tok, "test")
    assert load_codes(cfg, "train")[1] == [r["image_id"] for r in tsv]
    assert len(train.text) == len(tsv)  # one caption per TSV row
    karpathy_test = caption_records(derive(cfg, **{"data.train_source": ""}), "test")
    assert len(test.text) == sum(len(r["captions"]) for r in karpathy_test) > len(karpathy_test)
    assert ours_label(cfg).startswith("L-Verse-CC") and not ours_label(load_profile("ci")).startswith("L-Verse-CC")


def test_the_training_split_is_decoded_once_per_process_and_not_at_all_for_a_finished_checkpoint(tmp_path,
                                                                                                 monkeypatch):
    from lverse_core import data
    from lverse_core.training import augvae_train as AT

    images = synthetic_images(12, 32)
    decodes = []

    def image_dataset(cfg, split, train=True):
        assert (split, train) == ("train", False)  # decoded once from the eval transform, cropped per batch
        decodes.append(cfg.seed)
        return ImageSet(images)

    monkeypatch.setattr(data, "image_dataset", image_dataset)
    monkeypatch.setattr(AT, "_DECODED", {})
    cfg = _train_cfg(tmp_path, "once")
    ml = train_augvae(cfg, "ml", progress=False)
    train_augvae(cfg, "sl", progress=False)
    assert decodes == [cfg.seed]  # ML and SL shared one decoded tensor
    shared = AT._DECODED.copy()
    # the decoded copy is the images, exactly, whoever asks
    assert torch.equal(AT.training_images(cfg).images, AT.training_images(cfg).images)
    assert torch.equal(from_uint8(AT.training_images(cfg).images), from_uint8(to_uint8(images)))
    before = ml.stat().st_mtime_ns
    monkeypatch.setattr(AT, "training_images", lambda cfg: pytest.fail("a finished checkpoint decoded the images"))
    assert train_augvae(cfg, "ml", progress=False) == ml and ml.stat().st_mtime_ns == before
    monkeypatch.undo()
    monkeypatch.setattr(data, "image_dataset", image_dataset)
    monkeypatch.setattr(AT, "_DECODED", shared)
    AT.training_images(load_profile("ci", **{"runs_dir": str(tmp_path / "o"), "data.bad_input": "skip"}))
    assert len(decodes) == 2 and len(AT._DECODED) == 1  # other data settings: decoded again, one split kept


def test_decoding_inside_the_trainer_draws_nothing_from_the_seeded_generator(tmp_path, monkeypatch):
    # the trainer decodes before it seeds (a DataLoader draws from the global generator): the same weights as a
    # run handed the decoded images
    from lverse_core import data
    from lverse_core.data.decoded import DecodedImages
    from lverse_core.training import augvae_train as AT

    images = synthetic_images(12, 32)
    given = torch.load(train_augvae(_train_cfg(tmp_path, "given"), "ml", progress=False,
                                    dataset=DecodedImages(to_uint8(images))), weights_only=False)
    monkeypatch.setattr(data, "image_dataset", lambda cfg, split, train=True: ImageSet(images))
    monkeypatch.setattr(AT, "_DECODED", {})
    decoded = torch.load(train_augvae(_train_cfg(tmp_path, "decoded"), "ml", progress=False), weights_only=False)
    _assert_same_state(given["model"], decoded["model"])
