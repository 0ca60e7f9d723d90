"""The timing model: every training log has ``elapsed_s``; the estimator reads step times from such logs and
projects a profile (the gpu one here) from them; the gpu profile's shapes fit together (models built and run on
fake tensors at the profile's batch sizes, and the short-run OVERRIDES pass the config checks)."""
from __future__ import annotations

import csv

import pytest
import torch

from lverse_core.config import load_profile, load_run_config
from lverse_core.pipeline import estimate
from lverse_core.training.loop import CSVLog, run_steps


def _write_log(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "elapsed_s"])
        w.writerows(rows)


def test_run_steps_writes_elapsed_seconds_to_every_row(tmp_path):
    log = CSVLog(tmp_path / "x.csv", ["loss"])
    run_steps(lambda s: {"loss": torch.tensor(1.0)}, start=0, total=6, save_fn=lambda s: None, ckpt_every=100,
              log=log, log_every=2, progress=False)
    with open(tmp_path / "x.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "loss", "elapsed_s"]
    times = [float(r["elapsed_s"]) for r in rows]
    assert [int(r["step"]) for r in rows] == [2, 4, 6] and times == sorted(times) and times[0] >= 0


def test_a_resumed_log_keeps_its_rows_and_gains_the_column(tmp_path):
    path = tmp_path / "old.csv"
    with open(path, "w", newline="") as f:  # a log written before the column existed
        csv.writer(f).writerows([["step", "loss"], [1, 0.5], [2, 0.4], [3, 0.3]])
    log = CSVLog(path, ["loss"], resume_step=2)
    log.write(3, loss=0.25, elapsed_s=1.5)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["loss"], r["elapsed_s"]) for r in rows] == [("1", "0.5", ""), ("2", "0.4", ""),
                                                                       ("3", "0.25", "1.5")]


def test_step_seconds_is_the_median_rate_of_the_last_run(tmp_path):
    _write_log(tmp_path / "a.csv", [[10, 1, 5.0], [20, 1, 6.0], [30, 1, 7.5], [40, 1, 8.5]])
    assert estimate.step_seconds(tmp_path / "a.csv") == pytest.approx(0.1)  # rates 0.1, 0.15, 0.1
    # a resumed run restarts its clock: only its own rows count
    _write_log(tmp_path / "b.csv", [[10, 1, 5.0], [20, 1, 6.0], [30, 1, 0.9], [40, 1, 1.2], [50, 1, 1.5]])
    assert estimate.step_seconds(tmp_path / "b.csv") == pytest.approx(0.03)
    _write_log(tmp_path / "c.csv", [[10, 1, 5.0]])
    assert estimate.step_seconds(tmp_path / "c.csv") is None
    assert estimate.step_seconds(tmp_path / "missing.csv") is None


def test_the_gpu_profile_is_projected_from_measured_step_times(tmp_path):
    cfg = load_profile("gpu")
    logs = tmp_path / "logs"
    logs.mkdir()
    per_step = {"augvae_ml.csv": 0.05, "augvae_sl.csv": 0.04, "biart.csv": 0.03, "clip_reranker.csv": 0.02,
                "judge.csv": 0.01}
    for name, s in per_step.items():
        _write_log(logs / name, [[k, 1, round(k * s, 6)] for k in (1, 2, 3, 4, 5)])
    measured = estimate.measured_step_times(logs)
    est = estimate.project(cfg, measured, rest_share=0.5)
    steps = estimate.planned_steps(cfg)
    want = (steps["AugVAE-ML"] * 0.05 + steps["AugVAE-SL"] * 0.04 + steps["BiART"] * 0.03
            + steps["CLIP reranker"] * 0.02 + steps["judge"] * 0.01)
    assert est.training_s == pytest.approx(want) and est.total_s == pytest.approx(1.5 * want)
    assert "BiART 5000 x 30 ms" in est.describe()
    (logs / "judge.csv").unlink()
    with pytest.raises(ValueError, match="no measured step time for judge"):
        estimate.project(cfg, estimate.measured_step_times(logs))


def test_the_gpu_profiles_short_run_overrides_pass_the_config_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("LVERSE_WORKDIR", str(tmp_path))
    gpu = load_profile("gpu")
    cfg = load_run_config("gpu", estimate.dry_run_overrides(gpu, steps=3, device="cpu"))
    assert cfg.augvae_train.ml_steps == cfg.biart_train.steps == cfg.clip.train_steps == cfg.eval.judge_steps == 3
    assert 0 < cfg.augvae_train.unquantized_steps < cfg.augvae_train.sl_steps
    # the shapes stay the profile's
    assert cfg.augvae == gpu.augvae and cfg.biart == gpu.biart and cfg.biart_train.batch_size == 256
    with pytest.raises(ValueError, match="steps must be in 2..1000"):
        estimate.dry_run_overrides(gpu, steps=1)


def test_the_gpu_profiles_models_fit_together_at_its_batch_sizes():
    """Every gpu-profile model at its batch size, run on fake tensors (shapes only, no arithmetic)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from lverse_core.data import shapes
    from lverse_core.evaluation.judge import build_judge
    from lverse_core.models.augvae import AugVAE
    from lverse_core.models.biart import I2T, T2I, BiART
    from lverse_core.sampling.clip_reranker import build_small_clip, clip_pixels, tokenize

    cfg = load_profile("gpu")
    s, b = cfg.data.image_size, cfg.augvae_train.batch_size
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(b, 3, s, s)
        for variant in ("ml", "sl"):
            model = AugVAE.from_config(cfg, variant).eval()  # eval: no data-based init (it reads values)
            recon, out = model(x)
            assert recon.shape == x.shape and out["loss"].shape == ()
        recon, out = AugVAE.from_config(cfg, "sl").eval()(x, quantize=False)  # the unquantized start
        assert out["vectors"].shape == (b * cfg.image_tokens, cfg.augvae.z_channels)
        biart = BiART(BiART.args_from_config(cfg, 49408, 0))
        bb = cfg.biart_train.batch_size
        text = torch.zeros(bb, cfg.biart.text_len, dtype=torch.long)
        image = torch.zeros(bb, cfg.image_tokens, dtype=torch.long)
        for direction in (T2I, I2T):
            parts = biart(text, image, direction)
            assert parts["ref"].shape == parts["gen"].shape == ()
        clip = build_small_clip(cfg)
        cb = cfg.clip.batch_size
        logits, _ = clip(clip_pixels(torch.empty(cb, 3, s, s), s),
                         tokenize(["a red circle."] * cb, cfg.clip.context_length))
        assert logits.shape == (cb, cb)
        judge = build_judge(cfg, shapes.SHAPES, shapes.COLOURS, shapes.SIZES)
        jb = cfg.eval.judge_batch_size
        assert judge(torch.empty(jb, 3, s, s)).shape[0] == jb


def test_a_trace_of_ten_steps_is_written_when_asked(tmp_path, monkeypatch):
    from lverse_core.training import loop

    w = torch.randn(16, 16)

    def step_fn(step):
        return {"loss": (w @ w).sum()}
    run_steps(step_fn, start=0, total=20, save_fn=lambda s: None, ckpt_every=100, progress=False, desc="toy run")
    assert not list(tmp_path.iterdir())  # off unless asked
    monkeypatch.setenv(loop.TRACE_ENV, str(tmp_path / "traces"))
    run_steps(step_fn, start=0, total=20, save_fn=lambda s: None, ckpt_every=100, progress=False, desc="toy run")
    trace = tmp_path / "traces" / "toy_run.trace.json"
    assert trace.stat().st_size > 0 and "aten::mm" in (tmp_path / "traces" / "toy_run.ops.txt").read_text()
    import json

    events = json.loads(trace.read_text())["traceEvents"]
    assert sum(e.get("name") == "aten::mm" for e in events) == loop.TRACE_STEPS  # one matmul per traced step
