"""Per-step efficiency of the smoke training steps: achieved FLOP/s beside the measured matmul peak, one run.

For BiART and AugVAE-ML / -SL in the precision and memory format the profile resolves to on this machine
(``precision: auto`` is bf16 autocast where the CPU has native bf16, FP32 elsewhere; lverse_core/hardware.py) this script
- measures the CPU's matmul peak in the same process (2048^3 matmuls, best of several repeats; bf16 only where it is
  native, or with ``--bf16``: emulated bf16 takes minutes at that size);
- counts the FLOPs of one training step (forward + backward) with ``torch.utils.flop_counter.FlopCounterMode``;
- times the same step (after warm-up), median and spread of several repeats, interleaving the models;
- prints achieved GFLOP/s and the fraction of the peak of the step's precision, with the peak RSS.

    python bench/bench_efficiency.py            # smoke sizes, torch's default threads
    python bench/bench_efficiency.py --quick    # fewer repeats, 512^3 peaks (to test the script)
    python bench/bench_efficiency.py --formats  # AugVAE in NCHW and NHWC side by side (channels_last: auto's choice)

The fraction depends on the CPU (AMX vs AVX512-BF16 vs AVX2 kernels): the output names the CPU model.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lverse_core.config import load_profile  # noqa: E402
from lverse_core.hardware import cpu_has_native_bf16, maxrss_mib, resolve_channels_last, resolve_precision  # noqa: E402
from lverse_core.models.augvae import AugVAE  # noqa: E402
from lverse_core.models.biart import I2T, T2I, BiART, BiARTArgs  # noqa: E402
from lverse_core.report import cpu_info  # noqa: E402


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def biart_step(cfg, dtype: torch.dtype):
    t = cfg.biart_train
    args = BiARTArgs(n_layer=cfg.biart.n_layer, n_head=cfg.biart.n_head, n_embd=cfg.biart.n_embd,
                     text_len=cfg.biart.text_len, image_tokens=cfg.image_tokens, text_vocab=64,
                     image_vocab=cfg.augvae.codebook_size, pad_id=0, dropout=cfg.biart.dropout)
    model = BiART(args)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    text = torch.randint(1, 64, (t.batch_size, args.text_len), generator=g)
    image = torch.randint(0, args.image_vocab, (t.batch_size, args.image_tokens), generator=g)
    state = {"i": 0}

    def step():
        direction = T2I if state["i"] % 2 == 0 else I2T  # alternate, as in training
        state["i"] += 1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            parts = model(text, image, direction)
        (parts["ref"] + parts["gen"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, dtype


def augvae_step(cfg, variant: str, dtype: torch.dtype, channels_last: bool):
    """One AugVAE step as the profile trains it: its precision (bf16 autocast, quantizer FP32) and memory format."""
    t = cfg.augvae_train
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = AugVAE.from_config(cfg, variant).to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    s = cfg.data.image_size
    x = (torch.rand(t.batch_size, 3, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1
         ).contiguous(memory_format=fmt)

    def step():
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            _, out = model(x)
        out["loss"].float().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, dtype


def step_flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="measure the bf16 matmul peak even where bf16 is emulated")
    ap.add_argument("--formats", action="store_true", help="time AugVAE in both NCHW and NHWC")
    a = ap.parse_args()
    n = 2048
    if a.quick:
        a.repeats, a.steps, n = 2, 1, 512
    cfg = load_profile(a.profile)
    cpu = torch.device("cpu")
    pa = resolve_precision(cfg.augvae_train.precision, cpu)
    pb = resolve_precision(cfg.biart_train.precision, cpu)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {torch.float32: matmul_peak(torch.float32, n)}
    if a.bf16 or cpu_has_native_bf16() or "bf16" in (pa, pb):
        peaks[torch.bfloat16] = matmul_peak(torch.bfloat16, n)
    last = resolve_channels_last(cfg.augvae_train.channels_last, cpu, pa)
    formats = (False, True) if a.formats else (last,)
    steps = {f"BiART ({pb})": biart_step(cfg, dt[pb])}
    for variant in ("ml", "sl"):
        for fmt in formats:
            steps[f"AugVAE-{variant.upper()} ({pa}, {'NHWC' if fmt else 'NCHW'})"] = augvae_step(cfg, variant, dt[pa],
                                                                                                 fmt)
    flops = {}
    for name, (fn, _) in steps.items():
        fn()  # warm-up (and the quantizer's data-based init)
        flops[name] = step_flops(fn)
        fn()
    times = {name: [] for name in steps}
    for _ in range(a.repeats):  # interleaved: a slow spell of the machine hits every model alike
        for name, (fn, _) in steps.items():
            t0 = time.perf_counter()
            for _ in range(a.steps):
                fn()
            times[name].append((time.perf_counter() - t0) / a.steps)
    rows = {}
    for name, (_, dtype) in steps.items():
        med = statistics.median(times[name])
        rate = flops[name] / med
        rows[name] = {"gflop_per_step": flops[name] / 1e9, "step_s_median": med,
                      "step_s_range": [min(times[name]), max(times[name])], "achieved_gflops": rate / 1e9,
                      "peak_gflops": peaks[dtype] / 1e9, "fraction_of_peak": rate / peaks[dtype]}
    out = {"cpu": cpu_info(), "profile": a.profile, "precision": {"augvae": pa, "biart": pb},
           "matmul_peak_gflops": {name: peaks[d] / 1e9 for name, d in dt.items() if d in peaks},
           "steps": rows, "peak_rss_mib": maxrss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)}
    print(f"{out['cpu']['model']}, {out['cpu']['torch_threads']} threads, flags {out['cpu']['isa_flags']}")
    print("matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in out["matmul_peak_gflops"].items()))
    for name, r in rows.items():
        print(f"{name:30s} {r['gflop_per_step']:7.2f} GFLOP/step  {r['step_s_median'] * 1e3:7.1f} ms "
              f"[{r['step_s_range'][0] * 1e3:.1f}-{r['step_s_range'][1] * 1e3:.1f}]  {r['achieved_gflops']:6.1f} "
              f"GFLOP/s = {100 * r['fraction_of_peak']:.0f}% of the {r['peak_gflops']:.0f} GFLOP/s peak")
    print(f"peak RSS {out['peak_rss_mib']:.0f} MiB")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
