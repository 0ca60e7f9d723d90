"""BiART training throughput on the CPU by width and batch size, interleaved in one process.

Why the smoke BiART is 4 x 128 at batch 64 (configs/smoke.yaml): on 2 cores the step does not scale with the FLOPs,
so the sequences per second a width and batch give decide how much a fixed wall-clock budget teaches. Each variant
is a fresh BiART (smoke layout: 24 text + 64 image tokens, compact text vocabulary of 120, ``--codes`` image codes)
trained with AdamW in the precision ``biart_train.precision: auto`` gives this CPU (bf16 autocast where bf16 is
native, FP32 elsewhere; ``--precision`` picks one) on random tokens; the variants run round by round so that a slow spell of a
shared machine hits all of them alike. Median and range of the rounds, sequences per second, peak RSS.

    python bench/bench_biart_sizes.py [--rounds 3] [--steps 4] [--warmup 2] [--codes N] [--precision auto|fp32|bf16]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lverse_core.config import load_profile  # noqa: E402
from lverse_core.hardware import resolve_precision  # noqa: E402
from lverse_core.models.biart import I2T, T2I, BiART, BiARTArgs  # noqa: E402
from bench import finish, interleave, step_stats  # noqa: E402
from lverse_core.report import cpu_info  # noqa: E402

# (batch, layers, width, heads)
VARIANTS = [(32, 4, 256, 4), (64, 4, 256, 4), (64, 4, 192, 4), (64, 4, 128, 4), (128, 4, 128, 4)]


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="steps per variant per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant before the rounds")
    ap.add_argument("--codes", type=int, default=load_profile("smoke").augvae.codebook_size,
                    help="image codebook size (the image head's width; default: the smoke profile's)")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    a = ap.parse_args()
    if a.warmup < 0:
        ap.error(f"--warmup must be >= 0, got {a.warmup}")
    precision = resolve_precision(a.precision, "cpu")
    torch.manual_seed(0)
    runs = {}
    for batch, layers, width, heads in VARIANTS:
        args = BiARTArgs(n_layer=layers, n_head=heads, n_embd=width, text_len=24, image_tokens=64, text_vocab=120,
                         image_vocab=a.codes, pad_id=0, dropout=0.0)
        model = BiART(args)
        runs[(batch, layers, width, heads)] = {
            "model": model, "opt": torch.optim.AdamW(model.parameters(), lr=1e-3), "times": [], "i": 0,
            "text": torch.randint(1, 120, (batch, 24)), "image": torch.randint(0, a.codes, (batch, 64))}

    def step(r):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            parts = r["model"](r["text"], r["image"], T2I if r["i"] % 2 == 0 else I2T)
        r["i"] += 1
        (parts["ref"] + parts["gen"]).backward()
        r["opt"].step()
        r["opt"].zero_grad(set_to_none=True)

    for r in runs.values():
        for _ in range(a.warmup):
            step(r)
    interleave(runs, step, a.rounds, a.steps)
    out = {"cpu": cpu_info(), "precision": precision, "rounds": a.rounds, "steps_per_round": a.steps,
           "warmup": a.warmup, "codes": a.codes, "variants": []}
    print(f"{out['cpu']['model']}, {out['cpu']['torch_threads']} threads, flags {out['cpu']['isa_flags']}, {precision}")
    print(f"{'batch':>5} {'layers x width':>14} {'params':>8} {'ms/step [range]':>20} {'sequences/s':>12}")
    for (batch, layers, width, heads), r in runs.items():
        med = statistics.median(r["times"])
        n = sum(p.numel() for p in r["model"].parameters())
        stats, span = step_stats(r["times"])
        row = {"batch": batch, "n_layer": layers, "n_embd": width, "n_head": heads, "params": n, **stats,
               "sequences_per_s": batch / med}
        out["variants"].append(row)
        print(f"{batch:>5} {f'{layers} x {width}':>14} {n / 1e6:>7.2f}M {span:>20} {batch / med:>12.0f}")
    return finish(out)


if __name__ == "__main__":
    main()
