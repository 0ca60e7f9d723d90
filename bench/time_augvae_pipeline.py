"""Wall-clock of the AugVAE part of the pipeline (ML, SL, baseline, pre-tokenization) with a fixed thread count.

    python bench/time_augvae_pipeline.py --profile smoke --threads 2 [--runs /tmp/augvae_timing]

Used to size the smoke profile's step counts for "2 free CPU cores" on a machine that is otherwise busy: besides
wall-clock seconds it prints the process CPU seconds of each stage. Use ``--threads 1`` on a busy machine: with
more threads, OpenMP workers spin while waiting for a core another process holds, inflating both numbers; with one
thread the CPU seconds approximate the wall time on one free core (an upper bound for two). Also prints the test
PSNR of each model (FID needs the judge and torch-fidelity: notebook 03).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time

import torch

from lverse_core.evaluation import reconstruction
from lverse_core.pipeline import recon_eval
from lverse_core.training.augvae_train import load_augvae, train_augvae
from lverse_core.config import load_profile
from lverse_core.training.pretokenize import pretokenize
from lverse_core.data.shapes_dataset import ensure_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", default="/tmp/augvae_timing")
    ap.add_argument("--set", action="append", default=[], help="override key=json (augvae_train.ml_steps=100)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    over = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = load_profile(args.profile, runs_dir=args.runs, device="cpu", **over)
    shutil.rmtree(cfg.runs_root, ignore_errors=True)
    t, cpu = {}, {}

    def stage(name, fn):
        w0, c0 = time.monotonic(), time.process_time()
        out = fn()
        t[name], cpu[name] = round(time.monotonic() - w0, 1), round(time.process_time() - c0, 1)
        return out

    stage("dataset", lambda: ensure_dataset(cfg))
    for v in ("ml", "sl", "baseline"):
        stage(v, lambda: train_augvae(cfg, v, progress=False))
    stage("pretokenize", lambda: pretokenize(cfg))
    test = recon_eval.split_images(cfg, "test")
    res = stage("eval_no_fid", lambda: {v: reconstruction.evaluate_reconstruction(cfg, load_augvae(cfg, v), test,
                                                                                fid=False)
                                        for v in ("ml", "sl", "baseline")})
    print(json.dumps({"threads": args.threads, "torch": torch.__version__, "wall_s": t, "cpu_s": cpu,
                      "steps": {v: getattr(cfg.augvae_train, f"{v}_steps") for v in ("ml", "sl", "baseline")},
                      "psnr_db": {v: round(r["psnr_db"], 2) for v, r in res.items()},
                      "ssim": {v: round(r["ssim"], 3) for v, r in res.items()},
                      "codes_used": {v: r["codes_used"] for v, r in res.items()}}, indent=1))


if __name__ == "__main__":
    main()
