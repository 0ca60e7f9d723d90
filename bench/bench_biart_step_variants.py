"""BiART's CPU training step under bf16 autocast: attention and GELU variants, interleaved in one process.

Why BiART computes attention in FP32 on the CPU and uses the exact GELU (``lverse_core/models/biart.py``): the
smoke step (4 x 256, batch 32 x 89 tokens, AdamW) is timed with each variant, the variants interleaved round by
round so that a slow spell of a shared machine hits all of them alike; median and range of the rounds, the loss of
the same fixed batch after the timed steps (all variants start from the same weights), and the peak RSS.

    python bench/bench_biart_step_variants.py [--rounds 5] [--steps 4] [--batch 32] [--warmup 2] [--width 256]

Variants: ``bf16 flash + tanh GELU`` (the kit before 2026-11-28), ``fp32 SDPA + tanh GELU``, ``math SDPA (bf16) +
tanh GELU``, and ``fp32 SDPA + exact GELU`` (the kit now). The gains depend on the CPU (AMX vs AVX512-BF16 kernels):
the output names it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lverse_core.models import biart as B  # noqa: E402
from lverse_core.models.biart import I2T, T2I, BiART, BiARTArgs  # noqa: E402
from bench import finish  # noqa: E402
from lverse_core.report import cpu_info  # noqa: E402

VARIANTS = {  # name -> (attention, gelu approximation)
    "bf16 flash + tanh GELU (before)": ("flash", "tanh"),
    "fp32 SDPA + tanh GELU": ("fp32", "tanh"),
    "math SDPA (bf16) + tanh GELU": ("math", "tanh"),
    "fp32 SDPA + exact GELU (now)": ("fp32", "none"),
}


def _attention(kind: str):
    def attn(q, k, v, dropout_p):
        if kind == "fp32":
            with torch.autocast("cpu", enabled=False):
                return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True).to(q.dtype)
        if kind == "math":
            with sdpa_kernel(SDPBackend.MATH):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return attn


def _mlp(approximate: str):
    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x), approximate=approximate)))
    return forward


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4, help="steps per variant per round")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant before the rounds")
    ap.add_argument("--width", type=int, default=256, help="BiART's width (the measured step: 256, the smoke "
                    "width when the variants were chosen); a narrower one only checks that the bench runs")
    a = ap.parse_args()
    if a.warmup < 0 or a.width < 4 or a.width % 4:
        ap.error(f"--warmup must be >= 0 (got {a.warmup}) and --width a positive multiple of the 4 heads "
                 f"(got {a.width})")
    args = BiARTArgs(n_layer=4, n_head=4, n_embd=a.width, text_len=24, image_tokens=64, text_vocab=120,
                     image_vocab=512, pad_id=0, dropout=0.0)
    g = torch.Generator().manual_seed(0)
    text = torch.randint(1, 120, (a.batch, 24), generator=g)
    image = torch.randint(0, 512, (a.batch, 64), generator=g)
    torch.manual_seed(0)
    init = BiART(args).state_dict()
    runs = {}
    for name in VARIANTS:
        m = BiART(args)
        m.load_state_dict(init)
        runs[name] = {"model": m, "opt": torch.optim.AdamW(m.parameters(), lr=1e-3), "i": 0, "times": []}
    orig_attn, orig_mlp = B._causal_attention, B.MLP.forward

    def step(name):
        attn, gelu = VARIANTS[name]
        B._causal_attention, B.MLP.forward = _attention(attn), _mlp(gelu)
        r = runs[name]
        direction = T2I if r["i"] % 2 == 0 else I2T
        r["i"] += 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            parts = r["model"](text, image, direction)
        loss = parts["ref"] + parts["gen"]
        loss.backward()
        r["opt"].step()
        r["opt"].zero_grad(set_to_none=True)
        return float(loss.detach())

    try:
        for name in VARIANTS:
            for _ in range(a.warmup):
                step(name)
        for _ in range(a.rounds):
            for name in VARIANTS:
                t0 = time.perf_counter()
                for _ in range(a.steps):
                    runs[name]["last_loss"] = step(name)
                runs[name]["times"].append((time.perf_counter() - t0) / a.steps)
    finally:
        B._causal_attention, B.MLP.forward = orig_attn, orig_mlp
    base = statistics.median(runs[next(iter(VARIANTS))]["times"])
    out = {"cpu": cpu_info(), "batch": a.batch, "width": a.width, "warmup": a.warmup, "rounds": a.rounds,
           "steps_per_round": a.steps, "variants": {}}
    print(f"{out['cpu']['model']}, {out['cpu']['torch_threads']} threads, flags {out['cpu']['isa_flags']}")
    for name, r in runs.items():
        med = statistics.median(r["times"])
        out["variants"][name] = {"step_ms_median": med * 1e3, "step_ms_range": [min(r["times"]) * 1e3,
                                                                               max(r["times"]) * 1e3],
                                 "speedup_vs_before": base / med, "loss_after": r["last_loss"]}
        print(f"{name:34s} {med * 1e3:6.0f} ms [{min(r['times']) * 1e3:.0f}-{max(r['times']) * 1e3:.0f}]  "
              f"x{base / med:.2f}  loss {r['last_loss']:.3f}")
    return finish(out)


if __name__ == "__main__":
    main()
