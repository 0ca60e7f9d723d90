"""BiART training loop: losses per direction go down, exact resume, architecture checks, lr schedule."""
import pandas as pd
import pytest
import torch

from lverse_core.training.biart_train import CheckpointError, load_biart, lr_at, synthetic_pairs, train_biart
from lverse_core.config import load_profile
from tests._limits import HANG_GUARD_S  # absolute: other test modules import this one by name

VT, PAD = 30, 0


def cfg_for(tmp_path, **over):
    base = {"runs_dir": str(tmp_path / "runs"), "data.image_size": 32, "augvae.codebook_size": 24,
            "biart.n_layer": 2, "biart.n_head": 2, "biart.n_embd": 32, "biart.text_len": 8, "biart.dropout": 0.1,
            "biart_train.batch_size": 8, "biart_train.steps": 6, "biart_train.warmup_steps": 2,
            "biart_train.log_every": 2, "biart_train.ckpt_every": 3, "biart_train.lr": 3e-3}
    base.update(over)
    return load_profile("ci", **base)


def data_for(cfg):
    return synthetic_pairs(16, 2, cfg.biart.text_len, VT, cfg.image_tokens, cfg.augvae.codebook_size, seed=0)


def test_training_lowers_the_loss_of_both_directions_and_parts(tmp_path):
    cfg = cfg_for(tmp_path, **{"biart_train.steps": 80, "biart_train.log_every": 10, "biart_train.ckpt_every": 80,
                               "biart.dropout": 0.0})
    train_biart(cfg, data_for(cfg), text_vocab_size=VT, pad_id=PAD)
    log = pd.read_csv(cfg.runs_root / "logs" / "biart.csv")
    for col in ["t2i_ref", "t2i_gen", "i2t_ref", "i2t_gen"]:
        assert log[col].iloc[-1] < 0.8 * log[col].iloc[0], (col, log[col].tolist())
    assert (log["lr"] > 0).all() and log["step"].iloc[-1] == 80


def test_mixed_direction_logs_both_directions_every_step(tmp_path):
    cfg = cfg_for(tmp_path, **{"biart_train.direction": "mixed", "biart_train.steps": 2, "biart_train.log_every": 1})
    train_biart(cfg, data_for(cfg), text_vocab_size=VT, pad_id=PAD)
    log = pd.read_csv(cfg.runs_root / "logs" / "biart.csv")
    assert log[["t2i_ref", "t2i_gen", "i2t_ref", "i2t_gen"]].notna().all().all()


def test_killed_run_resumes_exactly(tmp_path):
    a = cfg_for(tmp_path / "a")
    b = cfg_for(tmp_path / "b")
    full = train_biart(a, data_for(a), text_vocab_size=VT, pad_id=PAD)
    train_biart(b, data_for(b), text_vocab_size=VT, pad_id=PAD, stop_after=3)  # "killed" after the step-3 save
    resumed = train_biart(b, data_for(b), text_vocab_size=VT, pad_id=PAD)
    for (n, p), q in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), n
    loaded = load_biart(b, b.runs_root / "biart.pt")  # trained on synthetic pairs: not the run's own BiART
    assert torch.equal(loaded.head_image.weight, full.head_image.weight)
    assert len(pd.read_csv(b.runs_root / "logs" / "biart.csv")) == len(pd.read_csv(a.runs_root / "logs" / "biart.csv"))


def test_checkpoint_from_a_different_config_is_a_clear_error(tmp_path, capsys):
    cfg = cfg_for(tmp_path, **{"biart_train.steps": 1})
    train_biart(cfg, data_for(cfg), text_vocab_size=VT, pad_id=PAD)
    wider = cfg_for(tmp_path, **{"biart.n_embd": 64})
    with pytest.raises(CheckpointError, match=r"n_embd: checkpoint 32 vs config 64"):
        load_biart(wider)
    with pytest.raises(CheckpointError, match="text_vocab"):
        load_biart(cfg, text_vocab_size=VT + 1, pad_id=PAD)
    # the trainer does not resume a checkpoint made from other settings: it trains again, saying what changed
    model = train_biart(wider, data_for(wider), text_vocab_size=VT, pad_id=PAD)
    assert model.args.n_embd == 64 and "rebuilding it, stale: biart.n_embd 32 -> 64" in capsys.readouterr().out
    assert load_biart(wider, wider.runs_root / "biart.pt").args.n_embd == 64


def test_lr_warmup_then_cosine(tmp_path):
    cfg = cfg_for(tmp_path, **{"biart_train.steps": 100, "biart_train.warmup_steps": 10, "biart_train.lr": 1.0,
                               "biart_train.min_lr_ratio": 0.1})
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_wrong_text_length_is_rejected(tmp_path):
    cfg = cfg_for(tmp_path)
    data = synthetic_pairs(4, 1, 5, VT, cfg.image_tokens, cfg.augvae.codebook_size)
    with pytest.raises(ValueError, match="text_len"):
        train_biart(cfg, data, text_vocab_size=VT, pad_id=PAD)


@pytest.mark.slow
def test_ddp_with_two_processes_matches_one_process(tmp_path):
    import subprocess
    import sys

    from lverse_core.config import REPO_ROOT
    from lverse_core.training.loop import load_checkpoint

    worker = str(REPO_ROOT / "tests" / "_ddp_biart_worker.py")
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                    worker, str(tmp_path / "ddp"), "4"], check=True, env=env, capture_output=True, timeout=HANG_GUARD_S)
    subprocess.run([sys.executable, worker, str(tmp_path / "one"), "8"], check=True, env=env, capture_output=True,
                   timeout=HANG_GUARD_S)
    a = load_checkpoint(tmp_path / "ddp" / "biart.pt", "biart")["model"]
    b = load_checkpoint(tmp_path / "one" / "biart.pt", "biart")["model"]
    assert_same_training(a, b, steps=4, lr=3e-3)


def assert_same_training(a: dict, b: dict, *, steps: int, lr: float, close: float = 1e-5, share: float = 0.99):
    """Two state dicts trained from the same start on the same data, up to float32 reduction order.

    DDP sums the two half-batch gradients in another order than one process does, so gradients agree to ~1e-7
    relative, not bitwise (and the order differs between CPU kinds: an AMD machine and an Intel one disagree).
    Adam divides each gradient by its own running RMS, so an element whose gradient is ~0 can turn that rounding
    noise into a full step of size ~lr: such an element may move by up to lr per step in either run. Everything
    else stays within ``close``. A DDP bug (no averaging, a rank seeing the wrong rows) moves most elements by
    ~lr, so it fails the ``share`` test; the lr bound catches anything larger.
    """
    bound = 2 * steps * lr
    total = agree = 0
    for k in a:
        d = (a[k].float() - b[k].float()).abs()
        assert d.max() <= bound, f"{k}: differs by {float(d.max()):.3g} > {bound:.3g} (2 x steps x lr)"
        total += d.numel()
        agree += int((d <= close).sum())
    assert agree / total >= share, f"only {agree}/{total} parameters agree within {close}"



def test_same_training_check_tolerates_rounding_but_not_a_wrong_gradient():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(1000, generator=g), "b": torch.randn(10, generator=g)}
    noisy = {k: v + 1e-7 * torch.randn(v.shape, generator=g) for k, v in a.items()}
    noisy["w"][:3] += 2e-3  # a few near-zero-gradient elements where Adam amplified the rounding
    assert_same_training(a, noisy, steps=4, lr=3e-3)
    wrong = {k: v + 3e-3 * torch.randn(v.shape, generator=g).sign() for k, v in a.items()}  # most elements moved
    with pytest.raises(AssertionError, match="agree within"):
        assert_same_training(a, wrong, steps=4, lr=3e-3)
    far = {k: v.clone() for k, v in a.items()}
    far["b"][0] += 1.0
    with pytest.raises(AssertionError, match="2 x steps x lr"):
        assert_same_training(a, far, steps=4, lr=3e-3)

def test_bf16_autocast_on_the_cpu_trains(tmp_path):
    cfg = cfg_for(tmp_path, **{"biart_train.precision": "bf16", "biart_train.steps": 2, "biart_train.log_every": 1})
    model = train_biart(cfg, data_for(cfg), text_vocab_size=VT, pad_id=PAD)
    log = pd.read_csv(cfg.runs_root / "logs" / "biart.csv")
    assert log["loss"].notna().all() and (log["loss"] > 0).all()
    assert model.head_text.weight.dtype == torch.float32  # autocast: the weights stay fp32
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        train_biart(cfg_for(tmp_path / "x", **{"biart_train.precision": "fp16"}), data_for(cfg),
                    text_vocab_size=VT, pad_id=PAD)


def test_resume_restores_each_ranks_own_stream_and_refuses_another_world_size(tmp_path):
    from lverse_core.training.loop import DistInfo, all_rng_states, restore_rng_states, rng_state

    torch.manual_seed(1)
    a = rng_state()
    torch.manual_seed(2)
    b = rng_state()
    restore_rng_states("ck.pt", [a, b], DistInfo(rank=1, world_size=2))
    assert torch.equal(torch.get_rng_state(), b["torch"])  # rank 1 gets its own stream, not rank 0's
    restore_rng_states("ck.pt", [a, b], DistInfo(rank=0, world_size=2))
    assert torch.equal(torch.get_rng_state(), a["torch"])
    restore_rng_states("ck.pt", a, DistInfo())  # an older checkpoint's single state, one process
    with pytest.raises(CheckpointError, match=r"written by 1 process\(es\) and this run has 2.*nproc_per_node=1"):
        restore_rng_states("ck.pt", [a], DistInfo(rank=1, world_size=2))
    with pytest.raises(CheckpointError, match="written by 2 process"):
        restore_rng_states("ck.pt", [a, b], DistInfo())
    assert len(all_rng_states(DistInfo())) == 1


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_one_direction_training_trains_and_logs_only_that_direction(tmp_path, direction):
    cfg = cfg_for(tmp_path, **{"biart_train.direction": direction, "biart_train.steps": 4, "biart_train.log_every": 1})
    train_biart(cfg, data_for(cfg), text_vocab_size=VT, pad_id=PAD)
    log = pd.read_csv(cfg.runs_root / "logs" / "biart.csv")
    other = "i2t" if direction == "t2i" else "t2i"
    assert log[[f"{direction}_ref", f"{direction}_gen"]].notna().all().all() and len(log) == 4
    assert log[[f"{other}_ref", f"{other}_gen"]].isna().all().all()  # the other direction never trained
