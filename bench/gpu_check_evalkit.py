"""Device check for the evaluation kit (not a test): judge training and FID on a CUDA GPU.

Trains the smoke-profile judge on the GPU, scores it on real test images, and compares FID computed by
torch-fidelity on CUDA with the same FID on the CPU (they must agree). Prints one JSON line.
Run: PYTHONPATH=$PWD python bench/gpu_check_evalkit.py
"""
import json
import time

import torch

from lverse_core.config import load_profile
from lverse_core.evaluation.fid import compute_fid
from lverse_core.evaluation.judge import load_split, judge_path, train_judge
from lverse_core.data.shapes_dataset import ensure_dataset


def main() -> None:
    out = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    cfg = load_profile("smoke", device="cuda")
    t0 = time.perf_counter()
    ensure_dataset(cfg)
    out["data_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    _, metrics = train_judge(cfg, log=False)
    out["judge_train_s"] = round(time.perf_counter() - t0, 1)
    out["judge_test"] = {k: v for k, v in metrics.items() if k.startswith("test_")}
    images, _, _ = load_split(cfg, "test")
    g = torch.Generator().manual_seed(0)
    noisy = (images.float() + 0.2 * 255 * torch.randn(images.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    for radius in (0, 2):
        t0 = time.perf_counter()
        gpu = compute_fid(images, noisy, cfg, blur_radius=radius, cuda=True)
        gpu_s = time.perf_counter() - t0
        cpu = compute_fid(images, noisy, cfg, blur_radius=radius, cuda=False)
        out[f"fid{radius}"] = {"cuda": gpu, "cpu": cpu, "rel_diff": abs(gpu - cpu) / max(abs(cpu), 1e-12),
                               "cuda_s": round(gpu_s, 2)}
    out["fid_self_cuda"] = compute_fid(images, images, cfg, cuda=True)
    out["judge_file"] = str(judge_path(cfg))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
