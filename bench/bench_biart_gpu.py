"""BiART on one CUDA GPU at the paper's size (24 x 1280, 64 text + 1024 image positions, 49408 + 8192 vocab).

Measures, in one run of under 4 minutes on an H100:
- the bf16 matmul rate of the device (8192^3 matmuls), the reference for model-FLOPs utilisation;
- training tokens/s (bf16 autocast, fused AdamW, alternating directions as in training) and MFU = 6 * N * tokens/s
  over the measured matmul rate, N = non-embedding parameters (blocks + both heads); a second MFU adds the
  attention FLOPs (12 * n_layer * T * d per token) and counts only the head each position uses;
- KV-cache decode of 64 prompts x 1024 image tokens (bf16 weights), and full-sequence recompute (minGPT-style)
  for a few steps at several lengths, integrated over the 1024 steps (the full run would take minutes).

Prints JSON and writes it to $OUT/bench_biart_gpu.json when OUT is set. ``--tiny`` runs a toy size on the CPU
(to test the script). Needs torch >= 2.4 (runs on the GPU image's 2.11).
    python bench/bench_biart_gpu.py            # on the GPU machine
    python bench/bench_biart_gpu.py --tiny     # anywhere
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lverse_core.models.biart import I2T, T2I, BiART, BiARTArgs  # noqa: E402

PAPER = dict(n_layer=24, n_head=20, n_embd=1280, text_len=64, image_tokens=1024, text_vocab=49408, image_vocab=8192)
TINY = dict(n_layer=2, n_head=2, n_embd=64, text_len=8, image_tokens=64, text_vocab=300, image_vocab=128)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev, reps=1):
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn()
    sync(dev)
    return (time.perf_counter() - t0) / reps, out


def matmul_rate(dev, n, dtype):
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    timed(lambda: a @ b, dev, 3)
    sec, _ = timed(lambda: a @ b, dev, 10)
    return 2 * n**3 / sec


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="toy size on the CPU, to test this script")
    ap.add_argument("--batch", type=int, default=16, help="training sequences per step")
    ap.add_argument("--train-steps", type=int, default=12, help="timed training steps (after 3 warm-up steps)")
    ap.add_argument("--decode-batch", type=int, default=64)
    ap.add_argument("--recompute-points", type=int, default=4, help="lengths at which one recompute step is timed")
    a = ap.parse_args()
    dev = torch.device("cpu" if a.tiny or not torch.cuda.is_available() else "cuda")
    if dev.type == "cpu" and not a.tiny:
        raise SystemExit("no CUDA GPU visible; run with --tiny to test the script on the CPU")
    size = TINY if a.tiny else PAPER
    amp_dtype = torch.bfloat16
    res: dict = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
                 "config": size, "batch": a.batch}
    torch.manual_seed(0)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    res["matmul_tflops"] = matmul_rate(dev, 512 if a.tiny else 8192, torch.float32 if a.tiny else amp_dtype) / 1e12

    with torch.device(dev):
        model = BiART(BiARTArgs(**size, pad_id=0, dropout=0.0))
    L, N, d = size["text_len"], size["image_tokens"], size["n_embd"]
    T = L + N + 1
    n_all = model.num_params()
    n_nonemb = model.num_params("blocks") + model.num_params("heads")
    res.update(params_total=n_all, params_blocks=model.num_params("blocks"), params_heads=model.num_params("heads"),
               params_embeddings=model.num_params("embeddings"))

    # -- training throughput ------------------------------------------------------------------------------------
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-4, betas=(0.9, 0.95), fused=dev.type == "cuda")
    text = torch.randint(1, size["text_vocab"], (a.batch, L), device=dev)
    image = torch.randint(0, size["image_vocab"], (a.batch, N), device=dev)
    ctx = torch.autocast(dev.type, dtype=amp_dtype) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)

    def train_step(i):
        with ctx:
            parts = model(text, image, T2I if i % 2 == 0 else I2T)
        (parts["ref"] + parts["gen"]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    for i in range(3):
        train_step(i)
    steps = 2 if a.tiny else a.train_steps
    sec, _ = timed(lambda: [train_step(i) for i in range(steps)], dev)
    tok_s = a.batch * T * steps / sec
    head_per_tok = d * (L * size["text_vocab"] + N * size["image_vocab"]) / T
    flops_6n = 6 * n_nonemb
    flops_full = 6 * (model.num_params("blocks") + head_per_tok) + 12 * size["n_layer"] * T * d
    res.update(train_step_s=sec / steps, train_tokens_per_s=tok_s,
               mfu_6N=flops_6n * tok_s / (res["matmul_tflops"] * 1e12),
               mfu_with_attention=flops_full * tok_s / (res["matmul_tflops"] * 1e12))
    if dev.type == "cuda":
        res["train_peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del opt
    model.zero_grad(set_to_none=True)

    # -- decoding ------------------------------------------------------------------------------------------------
    model.eval()
    if dev.type == "cuda":
        model.to(torch.bfloat16)  # bf16 weights: each decode step reads half the bytes of fp32 + autocast casts
        torch.cuda.reset_peak_memory_stats()
    B = 8 if a.tiny else a.decode_batch
    prompts = torch.randint(1, size["text_vocab"], (B, L), device=dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(0)
    sec_kv, codes = timed(lambda: model.generate_image(prompts, generator=gen), dev)
    res.update(decode_batch=B, decode_tokens=N, decode_kv_s=sec_kv, decode_kv_tokens_per_s=B * N / sec_kv)
    if dev.type == "cuda":
        res["decode_peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30

    # full recompute: one step costs a forward over the whole prefix; time it at a few prefix lengths and
    # integrate the (near-linear) cost over the N steps with the trapezoid rule
    seq = model.build_sequence(prompts, codes, T2I)
    lay = model.layout(T2I, dev)
    lengths = torch.linspace(L + 2, L + N + 1, a.recompute_points).round().long().tolist()
    costs = []
    with torch.no_grad():
        for n in lengths:
            def step(n=n):
                h = model._body(model._embed(seq[:, :n], lay["pos"][:n], lay["seg"][:n],
                                             model._is_text(T2I, 0, n, dev)))
                return model.head_image(h[:, -1])
            timed(step, dev)
            costs.append(timed(step, dev, 2)[0])
    import numpy as np

    xs = np.arange(L + 2, L + N + 2)
    res.update(recompute_lengths=lengths, recompute_step_s=costs,
               decode_recompute_s_extrapolated=float(np.interp(xs, lengths, costs).sum()))
    res["kv_speedup"] = res["decode_recompute_s_extrapolated"] / sec_kv
    return res


if __name__ == "__main__":
    out = main()
    text = json.dumps(out, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_biart_gpu.json").write_text(text + "\n")
