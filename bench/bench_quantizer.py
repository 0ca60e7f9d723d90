"""EMA quantizer forward + codebook update at the paper's sizes, ours against vector-quantize-pytorch.

    python bench/bench_quantizer.py [--batch 1] [--repeats 5] [--device cpu|cuda]

One training step of the quantizer of AugVAE-ML at 256 px: a codebook of 8192 x 256 shared by four latent maps of
64x64, 32x32, 16x16 and 8x8 (5,440 vectors per image), each quantized and followed by one EMA update (the official
per-level schedule). The peer is ``vector_quantize_pytorch.VectorQuantize`` (EMA, same decay/eps/commitment, one
object called on the four maps, which also updates its EMA once per call), started from the same codebook and fed
the same inputs. Timed: forward + EMA update (inputs require grad, so both build their straight-through graph);
median of ``--repeats`` after one warm-up. Memory: peak resident-set growth (ru_maxrss) over a fresh process per
implementation on CPU, ``torch.cuda.max_memory_allocated`` on CUDA.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

K, D = 8192, 256
SIDES = (64, 32, 16, 8)


def make_inputs(batch: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, D, s, s, generator=g).to(device).requires_grad_(True) for s in SIDES]


def ours(device: str):
    from lverse_core.models.quantize import EMAVectorQuantizer

    q = EMAVectorQuantizer(K, D, decay=0.99, eps=1e-5, beta=0.25).to(device).train()

    def step(xs):
        out = []
        for x in xs:
            z_q, codes, loss, flat = q(x)
            q.update_(flat, codes)
            out.append(codes)
        return out

    return q.embed, step


def peer(device: str):
    from vector_quantize_pytorch import VectorQuantize

    vq = VectorQuantize(dim=D, codebook_size=K, decay=0.99, eps=1e-5, commitment_weight=0.25,
                        accept_image_fmap=True).to(device).train()

    def step(xs):
        return [vq(x)[1] for x in xs]

    return vq._codebook.embed[0], step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_one(name: str, batch: int, repeats: int, device: str) -> dict:
    torch.manual_seed(0)
    embed, step = {"ours": ours, "peer": peer}[name](device)
    with torch.no_grad():
        embed.copy_(torch.randn(K, D, generator=torch.Generator().manual_seed(1)).to(device))
    xs = make_inputs(batch, device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first_codes = step(xs)  # warm-up; also the codes from the identical starting codebook
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        step(xs)
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024)
    return {"impl": name, "median_s": statistics.median(times), "peak_mem_mib": peak / 2**20,
            "codes_first_step": [c.flatten().tolist()[:64] for c in first_codes]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--one", choices=["ours", "peer"], help=argparse.SUPPRESS)  # child-process mode
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.batch, args.repeats, args.device)))
        return
    res = {}
    for name in ("ours", "peer"):  # a fresh process each, so ru_maxrss growth is its own
        out = subprocess.run([sys.executable, __file__, "--one", name, "--batch", str(args.batch), "--repeats",
                              str(args.repeats), "--device", args.device], capture_output=True, text=True, check=True)
        res[name] = json.loads(out.stdout.strip().splitlines()[-1])
    same = res["ours"]["codes_first_step"][0] == res["peer"]["codes_first_step"][0]
    n_vec = args.batch * sum(s * s for s in SIDES)
    print(f"codebook {K} x {D}, levels {SIDES}, batch {args.batch} ({n_vec} vectors), device {args.device}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name, r in res.items():
        print(f"  {name:5s}: {r['median_s'] * 1e3:8.1f} ms/step  ({n_vec / r['median_s']:,.0f} vectors/s), "
              f"peak memory +{r['peak_mem_mib']:.0f} MiB")
    print(f"  speed ratio ours/peer: {res['peer']['median_s'] / res['ours']['median_s']:.2f}x; "
          f"first level's first codes identical: {same}")


if __name__ == "__main__":
    main()
