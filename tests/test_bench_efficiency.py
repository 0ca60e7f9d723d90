"""bench/bench_efficiency.py runs, counts FLOPs like the arithmetic says, and reports a fraction below the peak."""
import json
import subprocess
import sys

import pytest

from lverse_core.config import REPO_ROOT, load_profile
from lverse_core.hardware import resolve_precision
from ._limits import HANG_GUARD_S


def test_efficiency_bench_on_the_ci_profile():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "bench_efficiency.py"), "--quick", "--profile", "ci"],
                         capture_output=True, text=True, timeout=HANG_GUARD_S, check=True, cwd=REPO_ROOT)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["cpu"]["model"] and res["cpu"]["class"] and res["matmul_peak_gflops"]["fp32"] > 0
    # the steps run in the precision the profile resolves to on this machine (never emulated bf16 under auto)
    ci = load_profile("ci")
    assert res["precision"] == {"augvae": resolve_precision(ci.augvae_train.precision, "cpu"),
                                "biart": resolve_precision(ci.biart_train.precision, "cpu")}
    for name, row in res["steps"].items():  # no bound on the fraction: a busy machine moves it either way
        assert row["gflop_per_step"] > 0 and row["fraction_of_peak"] > 0, (name, row)
    # a transformer step costs about 6 FLOPs per weight per token (forward 2, backward 4): the counter agrees
    cfg = load_profile("ci")
    b = cfg.biart
    block_weights = b.n_layer * 12 * b.n_embd ** 2
    tokens = cfg.biart_train.batch_size * (b.text_len + cfg.image_tokens + 1)
    biart = res["steps"][f"BiART ({res['precision']['biart']})"]["gflop_per_step"] * 1e9
    assert 6 * block_weights * tokens <= biart <= 3 * 6 * block_weights * tokens  # + heads, embeddings, attention


def test_biart_step_variants_bench_runs_every_variant_from_the_same_weights():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "bench_biart_step_variants.py"), "--rounds", "1",
                          "--steps", "1", "--batch", "2", "--warmup", "1", "--width", "64"],
                         capture_output=True, text=True, timeout=HANG_GUARD_S, check=True, cwd=REPO_ROOT)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    rows = res["variants"]
    assert len(rows) == 4 and res["cpu"]["model"] and (res["width"], res["warmup"]) == (64, 1)
    losses = [r["loss_after"] for r in rows.values()]
    # same weights, same batch, one update and one timed step each: the variants differ only in rounding, never in
    # what they learn
    assert max(losses) - min(losses) < 0.05 * max(losses), losses
    assert all(r["step_ms_median"] > 0 for r in rows.values())


def test_biart_sizes_bench_covers_the_smoke_model_and_reports_consistent_rates():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "bench_biart_sizes.py"), "--rounds", "1",
                          "--steps", "1", "--warmup", "0"], capture_output=True, text=True, timeout=HANG_GUARD_S, check=True, cwd=REPO_ROOT)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    cfg = load_profile("smoke")
    assert res["codes"] == cfg.augvae.codebook_size and res["cpu"]["model"] and res["warmup"] == 0
    rows = {(r["batch"], r["n_layer"], r["n_embd"]): r for r in res["variants"]}
    # the benchmark must time the configuration the smoke profile ships, beside the wider peers it was chosen over
    assert (cfg.biart_train.batch_size, cfg.biart.n_layer, cfg.biart.n_embd) in rows
    for (batch, _, _), r in rows.items():
        assert abs(r["sequences_per_s"] - batch / (r["step_ms_median"] / 1e3)) < 1e-6 * r["sequences_per_s"]
    params = {w: r["params"] for (_, _, w), r in rows.items()}
    assert params[128] < params[192] < params[256]


def test_clip_train_bench_times_every_variant_on_the_ci_data(tmp_path):
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "bench_clip_train.py"), "--profile", "ci",
                          "--rounds", "2", "--steps", "1", "--images", "16"],
                         capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert [v["variant"] for v in result["variants"]] == [
        "decode every draw, AdamW default (before)", "kept uint8 copies, AdamW default",
        "kept uint8 copies, AdamW fused (train_clip_reranker)"]
    assert result["draws_per_image"] == 2 * 16 / 16 and result["peak_rss_mib"] > 0
    assert all(v["total_s"] > 0 and len(v["step_ms_range"]) == 2 for v in result["variants"])


def test_the_biart_benches_refuse_a_negative_warmup_and_a_width_the_heads_do_not_divide():
    for script, args, words in (("bench_biart_step_variants.py", ["--width", "30"], "--width a positive multiple"),
                                ("bench_biart_sizes.py", ["--warmup", "-1"], "--warmup must be >= 0")):
        out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / script), *args], capture_output=True,
                             text=True, timeout=HANG_GUARD_S, cwd=REPO_ROOT)
        assert out.returncode == 2 and words in out.stderr, (script, out.stderr[-500:])


def test_decoded_store_bench_times_every_stage_both_ways_on_the_ci_data():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "bench_decoded_store.py"), "--profile", "ci",
                          "--repeats", "1"], capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    cfg = load_profile("ci")
    stages = result["stages"]
    assert list(stages) == ["AugVAE training split (01)", "pre-tokenization, train (01)", "pre-tokenization, val (01)",
                            "pre-tokenization, test (01)", "CLIP reranker's images (02)", "judge, train (03)",
                            "judge, test (03)"]
    # every stage read its whole split (the bench checks that both ways give the same pixels)
    assert stages["pre-tokenization, val (01)"]["images"] == cfg.data.n_val
    assert stages["judge, test (03)"]["images"] == cfg.data.n_test
    assert stages["CLIP reranker's images (02)"]["images"] == stages["judge, train (03)"]["images"]
    assert result["write_s"] > 0 and result["store_mib"] > 0 and result["peak_rss_mib"] > 0
    assert result["run_decode_s"] == pytest.approx(sum(s["decode_s"] for s in stages.values()))
    bad = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "bench_decoded_store.py"), "--repeats", "0"],
                         capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=REPO_ROOT)
    assert bad.returncode == 2 and "--repeats must be at least 1" in bad.stderr
