"""The CLIP reranker's training step on the smoke data set: decoding each draw vs keeping one uint8 copy per image,
and AdamW's default implementation vs its fused kernel, interleaved in one process.

Why ``train_clip_reranker`` keeps a decoded copy of each image and runs AdamW fused (configs/smoke.yaml trains the
reranker 750 steps): each variant is a fresh small CLIP with the smoke profile's sizes and its own optimizer,
drawing batches of ``clip.batch_size`` from the first ``--images`` training images, so that each image is drawn as
often as in the smoke run (750 x 64 draws over 8,000 images: 6 times); the variants run round by round, so that a
slow spell of a shared machine hits all of them alike. No warm-up round, on purpose: the kept copies pay their
decoding in the first rounds, which the medians mostly leave out and the totals count. Printed: median and range
of the per-round step time, the total over all rounds, peak RSS.

    python bench/bench_clip_train.py [--rounds 6] [--steps 8] [--images 512] [--profile smoke]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import finish, interleave, step_stats  # noqa: E402
from lverse_core.config import load_profile  # noqa: E402
from lverse_core.data.shapes_dataset import ensure_dataset  # noqa: E402
from lverse_core.data.loaders import CaptionImageDataset  # noqa: E402
from lverse_core.report import cpu_info  # noqa: E402
from lverse_core.sampling.clip_reranker import (KeptImages, build_small_clip, clip_pixels,  # noqa: E402
                                               fused_if_supported, tokenize)
from lverse_core.training.loop import StepSampler  # noqa: E402

# name -> (keep decoded copies, fused AdamW)
VARIANTS = {"decode every draw, AdamW default (before)": (False, False),
            "kept uint8 copies, AdamW default": (True, False),
            "kept uint8 copies, AdamW fused (train_clip_reranker)": (True, True)}


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=8, help="steps per variant per round")
    ap.add_argument("--images", type=int, default=512, help="training images drawn from (6 draws each by default)")
    ap.add_argument("--profile", default="smoke",
                    help="whose data set and CLIP sizes (the ci profile for a quick check)")
    a = ap.parse_args()
    cfg = load_profile(a.profile)
    if cfg.data.source == "shapes":
        ensure_dataset(cfg)  # the embedded set is made here as notebook 00 makes it; real data must already be there
    dataset = CaptionImageDataset(cfg, "train", train=False)
    n = min(a.images, len(dataset))
    runs = {}
    for name, (keep, fused) in VARIANTS.items():
        torch.manual_seed(0)
        model = build_small_clip(cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.clip.lr, weight_decay=0.1, betas=(0.9, 0.98),
                                **(fused_if_supported() if fused else {}))
        runs[name] = {"model": model, "opt": opt, "kept": KeptImages(dataset) if keep else None, "times": [],
                      "step": 0, "sampler": StepSampler(n, min(cfg.clip.batch_size, n), 0)}

    def image(r, i):
        if r["kept"] is not None:
            im, caps = r["kept"][i]
            return im, caps[0]
        it = dataset[i]  # the old loop: one read (decode + eval transform) per draw
        return it["image"], it["captions"][0]

    def step(r):
        items = [image(r, i) for i in r["sampler"].indices(r["step"])]
        r["step"] += 1
        logits_img, logits_txt = r["model"](clip_pixels(torch.stack([im for im, _ in items]), cfg.data.image_size),
                                            tokenize([c for _, c in items], cfg.clip.context_length))
        target = torch.arange(len(items))
        loss = (torch.nn.functional.cross_entropy(logits_img, target)
                + torch.nn.functional.cross_entropy(logits_txt, target)) / 2
        r["opt"].zero_grad(set_to_none=True)
        loss.backward()
        r["opt"].step()

    interleave(runs, step, a.rounds, a.steps)
    out = {"cpu": cpu_info(), "rounds": a.rounds, "steps_per_round": a.steps, "images": n,
           "draws_per_image": a.rounds * a.steps * min(cfg.clip.batch_size, n) / n, "variants": []}
    print(f"{out['cpu']['model']}, {out['cpu']['torch_threads']} threads, flags {out['cpu']['isa_flags']}")
    print(f"{n} images, each drawn {out['draws_per_image']:.1f} times; batch {min(cfg.clip.batch_size, n)}")
    base = sum(next(iter(runs.values()))["times"])
    print(f"{'variant':>52} {'ms/step median [range]':>24} {'total s':>8} {'speed-up':>8}")
    for name, r in runs.items():
        total = sum(r["times"]) * a.steps
        stats, span = step_stats(r["times"])
        row = {"variant": name, **stats, "total_s": total, "speedup_total_vs_before": base * a.steps / total}
        out["variants"].append(row)
        print(f"{name:>52} {span:>24} {total:>8.1f} {row['speedup_total_vs_before']:>7.2f}x")
    return finish(out)


if __name__ == "__main__":
    main()
