"""Subprocess of tests/test_recon_stream.py: how much more memory the streamed Table 1 evaluation, or a streamed FID,
needs at 8N images than at N, measured in a fresh process.

Memory is the bytes glibc's malloc has handed out and not taken back (``mallinfo2``: ``uordblks + hblkhd``), where
torch's CPU tensors and numpy's arrays both come from; unlike peak RSS it does not move with the allocator's page
reuse and fragmentation (RSS moved by up to ~8 MB between runs of the same size here), and unlike ``tracemalloc`` it
sees torch. It is read each time an image is read (``SynthesisedImages``): deterministic points between batches,
where what a run still holds from earlier images shows and the activations of one batch, freed by then, do not
(a sampling thread caught or missed those at random, by up to ~10 MB).

Usage: python _memory_scaling_worker.py table1|fid N IMAGE_SIZE WORKDIR; prints one JSON line
{"growth_bytes": {"N": most in use at a read minus in use at the start, at N images, "8N": ... at 8N},
"results": [...]}. Images are synthesised when read, so the data set itself holds nothing.
"""
from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

torch.set_num_threads(2)
BATCH = 16  # images per batch; N must be a few batches, so that N and 8N both reach the steady state


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


_mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2  # glibc >= 2.33
_mallinfo2.restype = _MallInfo2


def heap_in_use() -> int:
    """Bytes allocated by malloc and not freed: small blocks from the arenas plus mmapped large blocks."""
    info = _mallinfo2()
    return int(info.uordblks + info.hblkhd)


class SynthesisedImages(Dataset):
    """``n`` images (3, S, S) in [-1, 1], each drawn when read from a generator seeded by offset + index: smooth colour
    fields (8x8 noise upsampled) plus fine noise, so reconstructions and features are not trivial. Every read
    also records the heap in use (``peak``)."""

    def __init__(self, n: int, size: int, offset: int = 0):
        self.n, self.size, self.offset = n, size, offset
        self.start = self.peak = heap_in_use()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.peak = max(self.peak, heap_in_use())
        g = torch.Generator().manual_seed(self.offset + i)
        coarse = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
        img = torch.nn.functional.interpolate(coarse, size=(self.size, self.size), mode="bilinear")[0]
        return (img + 0.1 * torch.randn(img.shape, generator=g)).clamp(-1, 1), 0


def main(kind: str, n: int, size: int, workdir: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import synthetic_scenes as syn
    from lverse_core.config import load_profile
    from lverse_core.evaluation.judge import build_judge, save_judge

    # Wide judge features on the FID run, like Inception's 2048: what the old code kept per image is then visible.
    feature_dim = 512 if kind == "fid" else 128
    cfg = load_profile("ci", runs_dir=f"{workdir}/runs", reports_dir=f"{workdir}/reports",
                       data={"root": f"{workdir}/data"},
                       eval={"judge_feature_dim": feature_dim, "judge_image_size": 16 if kind == "fid" else 32})
    torch.manual_seed(0)
    judge = build_judge(cfg, syn.SHAPES, syn.COLOURS, syn.SIZES)
    path = save_judge(cfg, judge, {}, path=cfg.runs_root / "memory_judge.pt")
    if kind == "table1":
        from lverse_core.models.augvae import AugVAE
        from lverse_core.pipeline.recon_eval import evaluate_reconstructions

        model = AugVAE.ml_to_sl(AugVAE.from_config(cfg, "ml"))

        def run(k: int):
            data = SynthesisedImages(k, size)
            res, kept = evaluate_reconstructions(cfg, {"SL": model}, data, keep=4, batch_size=BATCH, cuda=False,
                                                 judge_path=path)
            assert kept["SL"].shape[0] == 4
            return res["SL"], data.peak - data.start
    else:
        from lverse_core.evaluation.fid import compute_fid

        def run(k: int):
            real, fake = SynthesisedImages(k, size), SynthesisedImages(k, size, offset=10**6)
            fid = compute_fid(real, fake, cfg, cuda=False, judge_path=path, batch_size=BATCH)
            return fid, max(real.peak, fake.peak) - real.start
    # Warm-up of two batches: the model, the extractor, and a full batch held while the next is read.
    results = [run(2 * BATCH)[0]]
    growth = {}
    for label, k in (("N", n), ("8N", 8 * n)):
        result, growth[label] = run(k)
        results.append(result)
    print(json.dumps({"growth_bytes": growth, "results": results}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
