"""BiART on the CPU, side by side (not a timed test; numbers go to bench/README.md, section "BiART").

1. Sampling the image tokens of a batch with the KV cache against full-sequence recompute (minGPT-style), on the
   smoke-profile BiART (4 x 256, 24 text + 64 image tokens), batch 64: seconds, ratio, peak RSS (each mode runs in
   its own process so ru_maxrss is its own), and a check that both give identical tokens for a seed.
2. Training tokens/s of BiART against x-transformers (``pip install -r bench/requirements.txt``) at the same width,
   depth, heads and sequence length, same batch, AdamW, fp32, no dropout, steps interleaved so that both see the
   same machine load. The peer is run twice: x-transformers' defaults and with ``attn_flash=True`` (SDPA).

    OMP_NUM_THREADS=1 python bench/bench_biart_cpu.py [--threads 1] [--steps 20] [--full-vocab --skip-decode]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lverse_core.models.biart import I2T, T2I, BiART, BiARTArgs  # noqa: E402

SMOKE = dict(n_layer=4, n_head=4, n_embd=256, text_len=24, image_tokens=64, text_vocab=120, image_vocab=512)


def _decode(mode: str, threads: int, batch: int, q) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = BiART(BiARTArgs(**SMOKE, pad_id=0, dropout=0.0)).eval()
    text = torch.randint(1, SMOKE["text_vocab"], (batch, SMOKE["text_len"]), generator=torch.Generator().manual_seed(1))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    codes = model.generate_image(text, generator=torch.Generator().manual_seed(2), use_cache=mode == "kv")
    sec = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    q.put({"mode": mode, "seconds": sec, "peak_rss_mib": peak / 1024, "rss_growth_mib": (peak - base) / 1024,
           "codes": codes.tolist()})


def bench_decode(threads: int, batch: int) -> dict:
    ctx = mp.get_context("spawn")
    out = {}
    for mode in ("kv", "recompute"):
        q = ctx.Queue()
        p = ctx.Process(target=_decode, args=(mode, threads, batch, q))
        p.start()
        out[mode] = q.get()
        p.join()
    same = out["kv"].pop("codes") == out["recompute"].pop("codes")
    return {"batch": batch, "image_tokens": SMOKE["image_tokens"], "kv": out["kv"], "recompute": out["recompute"],
            "speedup": out["recompute"]["seconds"] / out["kv"]["seconds"], "identical_tokens": same}


def bench_train(threads: int, batch: int, steps: int, full_vocab: bool = False) -> dict:
    from x_transformers import Decoder, TransformerWrapper

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    a = dict(SMOKE, text_vocab=49408) if full_vocab else SMOKE  # full CLIP BPE (paper) vs a compact map
    T = a["text_len"] + a["image_tokens"] + 1
    ours = BiART(BiARTArgs(**a, pad_id=0, dropout=0.0)).train()
    vocab = a["text_vocab"] + a["image_vocab"] + 2
    peers = {name: TransformerWrapper(num_tokens=vocab, max_seq_len=T,
                                      attn_layers=Decoder(dim=a["n_embd"], depth=a["n_layer"], heads=a["n_head"],
                                                          **kw)).train()
             for name, kw in [("x-transformers (defaults)", {}), ("x-transformers (attn_flash=True)",
                                                                   {"attn_flash": True})]}
    g = torch.Generator().manual_seed(0)
    text = torch.randint(1, a["text_vocab"], (batch, a["text_len"]), generator=g)
    image = torch.randint(0, a["image_vocab"], (batch, a["image_tokens"]), generator=g)
    seq = torch.randint(0, vocab, (batch, T + 1), generator=g)
    opts = {"BiART (ours)": torch.optim.AdamW(ours.param_groups(0.1), lr=1e-4, betas=(0.9, 0.95))}
    opts.update({n: torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95)) for n, m in peers.items()})

    def step(name: str, i: int) -> None:
        if name == "BiART (ours)":
            parts = ours(text, image, T2I if i % 2 == 0 else I2T)
            loss = parts["ref"] + parts["gen"]
        else:
            logits = peers[name](seq[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), seq[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(opts[name].param_groups[0]["params"], 1.0)
        opts[name].step()
        opts[name].zero_grad(set_to_none=True)

    times = {n: 0.0 for n in opts}
    for i in range(steps + 2):
        for name in opts:  # interleaved: the same machine load for every model
            t0 = time.perf_counter()
            step(name, i)
            if i >= 2:  # two warm-up steps
                times[name] += time.perf_counter() - t0
    tok = batch * T * steps
    res = {"batch": batch, "seq_len": T, "steps": steps, "width": a["n_embd"], "depth": a["n_layer"],
           "heads": a["n_head"], "vocab_text": a["text_vocab"], "vocab_image": a["image_vocab"],
           "tokens_per_s": {n: tok / s for n, s in times.items()},
           "params": {"BiART (ours)": ours.num_params(), **{n: sum(p.numel() for p in m.parameters())
                                                            for n, m in peers.items()}}}
    res["speedup_vs"] = {n: res["tokens_per_s"]["BiART (ours)"] / res["tokens_per_s"][n] for n in peers}
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32, help="training batch")
    ap.add_argument("--decode-batch", type=int, default=64)
    ap.add_argument("--full-vocab", action="store_true", help="train with the 49408-wide CLIP BPE text vocabulary")
    ap.add_argument("--skip-decode", action="store_true")
    args = ap.parse_args()
    result = {"machine": f"{platform.processor() or platform.machine()}, {mp.cpu_count()} cores, torch "
                         f"{torch.__version__}, {args.threads} thread(s)",
              "decode": None if args.skip_decode else bench_decode(args.threads, args.decode_batch),
              "train": bench_train(args.threads, args.batch, args.steps, args.full_vocab)}
    print(json.dumps(result, indent=2))
