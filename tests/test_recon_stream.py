"""Table 1's evaluation streamed (paper §4.1 at 50,000 images): the same numbers as on whole tensors, memory that
does not grow with the number of images."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lverse_core.models.augvae import AugVAE
from lverse_core.evaluation import reconstruction
from lverse_core.pipeline import recon_eval

from test_fid import _torch_fidelity_fid
from tests._limits import HANG_GUARD_S  # absolute: other test modules import this one by name

WORKER = Path(__file__).resolve().parent / "_memory_scaling_worker.py"


@pytest.fixture(scope="module")
def tiny_models(synth_cfg):
    torch.manual_seed(0)
    ml = AugVAE.from_config(synth_cfg, "ml")
    return {"ML": ml.eval(), "SL": AugVAE.ml_to_sl(ml).eval()}


def test_evenly_spaced_keeps_the_ends_and_never_exceeds_the_split():
    assert recon_eval.evenly_spaced(10, 4) == [0, 3, 6, 9]
    assert recon_eval.evenly_spaced(5) == [0, 1, 2, 3, 4] == recon_eval.evenly_spaced(5, 50)
    assert recon_eval.evenly_spaced(7, 1) == [0]


def test_streamed_table1_equals_the_whole_tensor_measures(trained_judge, synth_cfg, synth_data, tiny_models):
    _, path, _ = trained_judge
    x = synth_data[2][:100].float() / 127.5 - 1
    res, kept = reconstruction.evaluate_reconstructions(synth_cfg, tiny_models, x, keep=5, batch_size=32, cuda=False,
                                                    judge_path=path)
    for name, model in tiny_models.items():
        recon, codes = reconstruction.reconstruct(model, x)  # all at once, as Table 1 was computed before
        flat = codes if torch.is_tensor(codes) else torch.cat([c.reshape(-1) for c in codes])
        r = res[name]
        assert r["n_images"] == 100
        assert r["psnr_db"] == pytest.approx(float(reconstruction.psnr(x, recon).double().mean()), rel=1e-6)
        assert r["ssim"] == pytest.approx(float(reconstruction.ssim(x, recon).mean()), rel=1e-6)
        usage = reconstruction.code_usage(flat, model.quantizer.codebook_size)
        assert r["codes_used"] == usage["codes_used"] and r["perplexity"] == pytest.approx(usage["perplexity"])
        assert r["fid"] == pytest.approx(_torch_fidelity_fid(x, recon, synth_cfg, path), rel=1e-5, abs=1e-8)
        torch.testing.assert_close(kept[name], recon[:5])
    torch.testing.assert_close(kept["input"], x[:5])
    assert res["ML"]["fid"] != pytest.approx(res["SL"]["fid"])  # each model has its own fake side
    # A Dataset of (image, label) pairs gives the same numbers, and so does the one-model wrapper.
    pairs = [(img, 0) for img in x]
    ds_res, _ = reconstruction.evaluate_reconstructions(synth_cfg, {"SL": tiny_models["SL"]}, pairs, batch_size=48,
                                                    cuda=False, judge_path=path)
    for key in ("psnr_db", "ssim", "fid", "perplexity"):
        assert ds_res["SL"][key] == pytest.approx(res["SL"][key], rel=1e-6), key


def test_streamed_table1_bad_input_is_a_clear_error(synth_cfg, synth_data, tiny_models):
    x = synth_data[2][:4].float()  # 0..255 floats
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        reconstruction.evaluate_reconstructions(synth_cfg, tiny_models, x, fid=False)
    with pytest.raises(ValueError, match="at least one model"):
        reconstruction.evaluate_reconstructions(synth_cfg, {}, x / 127.5 - 1, fid=False)
    with pytest.raises(ValueError, match="no images"):
        reconstruction.evaluate_reconstructions(synth_cfg, tiny_models, x[:0], fid=False)


def _growth(kind: str, n: int, size: int, tmp_path) -> dict:
    """Run the worker in a fresh process: {"growth_bytes": {"N": ..., "8N": ...}, "results": [...]}."""
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the heap measure is glibc's mallinfo2 (Linux with glibc >= 2.33)")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, str(WORKER), kind, str(n), str(size), str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _assert_flat(growth: dict, grown_bytes: int, what: str) -> None:
    """The extra memory at 8N over N (the most in use at any image read, ``_memory_scaling_worker``) must stay under
    a quarter of ``grown_bytes``: one copy of what the old, whole-set code held for the extra 7N images (float32
    images for Table 1; one side's features for FID). Measured once against the old code (notebook 03's
    ``split_images`` + ``evaluate_reconstruction``, torch-fidelity's ``calculate_metrics``): +5.4 MiB against this
    bound's 1.3 MiB for Table 1, +3.6 MiB against 0.9 MiB for FID; the streamed code: within +-0.01 MiB."""
    extra = growth["8N"] - growth["N"]
    assert extra < grown_bytes / 4, (f"{what}: the heap in use grew by {growth['N'] / 2**20:.2f} MiB at N and "
                                     f"{growth['8N'] / 2**20:.2f} MiB at 8N ({extra / 2**20:+.2f} MiB), against "
                                     f"{grown_bytes / 2**20:.1f} MiB for one copy of the extra 7N images' data")


def test_table1_memory_does_not_grow_with_the_number_of_images(tmp_path):
    n, size = 64, 32
    out = _growth("table1", n, size, tmp_path)
    assert [r["n_images"] for r in out["results"]] == [32, n, 8 * n]
    assert all(np.isfinite(r["fid"]) and r["psnr_db"] > 0 for r in out["results"])
    _assert_flat(out["growth_bytes"], 7 * n * 3 * size * size * 4, "Table 1 evaluation")


def test_fid_memory_does_not_grow_with_the_number_of_images(tmp_path):
    n, feature_dim = 256, 512  # the worker's judge has 512 features on this run
    out = _growth("fid", n, 16, tmp_path)
    assert all(np.isfinite(f) for f in out["results"])
    _assert_flat(out["growth_bytes"], 7 * n * feature_dim * 4, "FID")
