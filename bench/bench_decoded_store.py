"""The run's decoded store (lverse_core/data/decoded_store.py) against each stage decoding its own images, on the
profile's embedded data set, in one process.

A run decodes whole splits in four stages, each in its own notebook kernel: AugVAE's training split (notebook 01),
pre-tokenization of train, val and test (01), the CLIP reranker's training images (02) and the judge's train and test
splits (03). Each pair below times one stage as it was (the kit's loader and eval transform over every image of
its split) and as it is now (the store of notebook 00 loaded from disk, as a fresh kernel loads it, then indexed),
and checks that both give the same pixels. The store's own cost, decoding every split once in notebook 00, is timed
first. Pairs alternate ``--repeats`` times, the fastest of each kept. Printed: seconds per stage both ways, the
run's total both ways, peak RSS.

    python bench/bench_decoded_store.py [--profile smoke] [--repeats 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import finish  # noqa: E402
from lverse_core import data  # noqa: E402
from lverse_core.config import load_profile  # noqa: E402
from lverse_core.data import decoded_store  # noqa: E402
from lverse_core.data.decoded import DecodedImages  # noqa: E402
from lverse_core.data.pixels import signed_from_uint8, uint8_from_signed  # noqa: E402
from lverse_core.data.shapes_dataset import ensure_dataset  # noqa: E402
from lverse_core.report import cpu_info  # noqa: E402
from lverse_core.sampling.clip_reranker import KeptImages  # noqa: E402


def stages(cfg, bare):
    """name -> (before(), after()): each returns the stage's uint8 images; ``bare`` has no store (it decodes)."""
    from lverse_core.evaluation.judge import load_split
    from lverse_core.training.augvae_train import _stored

    def fresh(split):  # what a new kernel does: load the store from disk
        decoded_store.forget()
        return decoded_store.decoded_split(cfg, split)

    def augvae_after():
        fresh("train")
        return _stored(cfg, data.image_dataset(cfg, "train", train=False))

    def pretokenize(split, store):
        recs = data.caption_records(cfg, split)
        if store is None:
            tf = data.eval_transform(cfg.data.image_size)
            return torch.stack([uint8_from_signed(tf(data.load_image(r["path"], cfg.data.min_image_side)))
                                for r in recs])
        return torch.stack([uint8_from_signed(signed_from_uint8(store.image(r["image_id"]))) for r in recs])

    def rerank(store):
        ds = data.CaptionImageDataset(cfg, "train", train=False)
        kept = KeptImages(ds, store)
        return uint8_from_signed(kept.batch(range(len(ds)), "cpu")[0])

    out = {"AugVAE training split (01)": (
        lambda: DecodedImages.from_dataset(data.image_dataset(bare, "train", train=False),
                                           num_workers=bare.data.num_workers).images, augvae_after)}
    for split in ("train", "val", "test"):
        out[f"pre-tokenization, {split} (01)"] = (lambda s=split: pretokenize(s, None),
                                                  lambda s=split: pretokenize(s, fresh(s)))
    out["CLIP reranker's images (02)"] = (lambda: rerank(None), lambda: rerank(fresh("train")))
    for split in ("train", "test"):
        out[f"judge, {split} (03)"] = (lambda s=split: load_split(bare, s)[0],
                                       lambda s=split: (fresh(s), load_split(cfg, s)[0])[1])
    return out


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="smoke", help="whose embedded data set (the ci profile for a quick check)")
    ap.add_argument("--repeats", type=int, default=2, help="times each pair runs (the fastest is kept)")
    a = ap.parse_args()
    if a.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {a.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_profile(a.profile, runs_dir=str(Path(tmp) / "runs"))
        if not decoded_store.enabled(cfg):
            sys.exit(f"profile {a.profile} keeps no decoded store (augvae_train.decode = {cfg.augvae_train.decode}, "
                     f"data source {cfg.data.source}); take one with decode: once on the embedded set")
        ensure_dataset(cfg)  # made here as notebook 00 makes it
        bare = load_profile(a.profile, runs_dir=str(Path(tmp) / "bare"))
        t0 = time.perf_counter()
        paths = decoded_store.write_store(cfg, log=lambda _: None)
        write_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in paths.values())
        print(f"{cpu_info()}; torch {torch.__version__}, {torch.get_num_threads()} threads; profile {a.profile}")
        print(f"notebook 00 decodes every split once: {write_s:.2f} s, {size / 2**20:.0f} MiB on disk")
        rows = {}
        for name, (before, after) in stages(cfg, bare).items():
            times = {"before": [], "after": []}
            for _ in range(a.repeats):
                for which, fn in (("before", before), ("after", after)):
                    t0 = time.perf_counter()
                    images = fn()
                    times[which].append(time.perf_counter() - t0)
                    if which == "before":
                        reference = images
                    elif not torch.equal(images, reference):
                        sys.exit(f"{name}: the store's pixels differ from the decoded ones")
            rows[name] = {"decode_s": min(times["before"]), "store_s": min(times["after"]),
                          "images": int(reference.shape[0])}
    print(f"{'stage (notebook)':34s} {'images':>7s} {'decoding':>9s} {'store':>7s}")
    for name, r in rows.items():
        print(f"{name:34s} {r['images']:7d} {r['decode_s']:8.2f}s {r['store_s']:6.2f}s")
    before, after = sum(r["decode_s"] for r in rows.values()), sum(r["store_s"] for r in rows.values())
    print(f"{'a run':34s} {'':7s} {before:8.2f}s {after + write_s:6.2f}s  (store: notebook 00's decode included)")
    return finish({"profile": a.profile, "cpu": cpu_info(), "write_s": write_s, "store_mib": size / 2**20,
                   "stages": rows, "run_decode_s": before, "run_store_s": after + write_s})


if __name__ == "__main__":
    main()
