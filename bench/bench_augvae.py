"""AugVAE-SL encoding throughput (images/s), the cost of pre-tokenization, on the profile's sizes.

    python bench/bench_augvae.py --profile smoke [--batch 64] [--repeats 3] [--device cpu|cuda] [--threads N]

Random weights (throughput does not depend on training) in FP32, eval mode, ``torch.no_grad``; times
``AugVAE.encode`` on random images of the profile's size, median of ``--repeats`` after one warm-up. With
``--profile paper`` this is the 112.3M-parameter SL at 256 px (slow on a CPU: use a small batch).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from lverse_core.models.augvae import AugVAE, count_parameters
from lverse_core.config import load_profile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    over = {"data.n_train": 1} if args.profile == "paper" else {}
    cfg = load_profile(args.profile, **over)
    model = AugVAE.from_config(cfg, "sl").to(args.device).eval()
    s = cfg.data.image_size
    x = torch.rand(args.batch, 3, s, s, device=args.device) * 2 - 1
    times = []
    for i in range(args.repeats + 1):
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        codes = model.encode(x)
        if args.device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    print(f"AugVAE-SL ({args.profile}: {count_parameters(model) / 1e6:.1f}M params, {s} px -> "
          f"{tuple(codes.shape[1:])} codes), batch {args.batch}, {args.device}, threads {torch.get_num_threads()}, "
          f"torch {torch.__version__}: {args.batch / t:,.1f} images/s ({t * 1e3:.0f} ms/batch)")


if __name__ == "__main__":
    main()
