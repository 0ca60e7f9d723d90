"""A development stand-in for AugVAE-SL codes: k-means over the 8x8 pixel patches of the embedded images.

BiART was developed before the AugVAE branch wrote ``codes/<split>_codes.npy``; this script writes files of the same
format (uint16 N x g x g + <split>_index.json) from a patch k-means with ``augvae.codebook_size`` centres, and the
centres as a decoder (``standin_decoder.pt``). It is NOT the kit's tokenizer (numbers measured on it are only a
development proxy); the notebooks use AugVAE-SL's codes.

    python bench/standin_codes.py --profile smoke --out /tmp/standin_smoke
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lverse_core.config import load_profile  # noqa: E402
from lverse_core.data import CaptionImageDataset  # noqa: E402
from lverse_core.data.shapes_dataset import ensure_dataset  # noqa: E402


def patches(x: torch.Tensor) -> torch.Tensor:
    B, C, S, _ = x.shape
    g = S // 8
    return x.view(B, C, g, 8, g, 8).permute(0, 2, 4, 1, 3, 5).reshape(B * g * g, C * 64)  # (B*g*g, 192)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from sklearn.cluster import MiniBatchKMeans

    cfg = load_profile(a.profile)
    ensure_dataset(cfg)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    g = cfg.image_grid
    km = None
    for split in ("train", "val", "test"):
        ds = CaptionImageDataset(cfg, split)
        items = [ds[i] for i in range(len(ds))]
        x = torch.stack([it["image"] for it in items])
        p = patches(x).numpy()
        if km is None:
            km = MiniBatchKMeans(cfg.augvae.codebook_size, batch_size=4096, n_init=1, random_state=0,
                                 max_iter=50).fit(p[np.random.default_rng(0).permutation(len(p))[:200000]])
            torch.save(torch.from_numpy(km.cluster_centers_).float(), out / "standin_decoder.pt")
        codes = km.predict(p).reshape(len(x), g, g).astype(np.uint16)
        np.save(out / f"{split}_codes.npy", codes)
        (out / f"{split}_index.json").write_text(json.dumps([it["image_id"] for it in items]))
        print(split, codes.shape, len(np.unique(codes)), "codes used")


if __name__ == "__main__":
    main()
