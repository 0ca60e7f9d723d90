"""Subprocess of tests/test_recon_stream.py: how much more memory the streamed Table 1 evaluation, or a streamed FID,
needs at 8N images than at N, measured in a fresh process.

Memory is the bytes glibc's malloc has handed out and not taken back (``mallinfo2``: ``uordblks + hblkhd``), where
torch's CPU tensors and numpy's arrays both come from; its peak over a run is sampled every millisecond by a thread
(``HeapPeak``). Unlike peak RSS it does not move with the allocator's page reuse and fragmentation (RSS moved by
up to ~8 MB between runs of the same size here), and unlike ``tracemalloc`` it sees torch.

Usage: python _memory_scaling_worker.py table1|fid N IMAGE_SIZE WORKDIR; prints one JSON line
{"growth_bytes": {"N": peak - start at N, "8N": ... at 8N}, "results": [...]}. Images are synthesised when read
(``SynthesisedImages``), so the data set itself holds nothing.
"""
from __future__ import annotations

import ctypes
import json
import sys
import threading
from pathlib import Path

import torch
from torch.utils.data import Dataset

torch.set_num_threads(2)


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


class HeapPeak:
    """``with HeapPeak() as p: ...`` -> ``p.growth``: the peak of ``heap_in_use`` during the block minus its value
    at the start, sampled every ``interval`` seconds (torch's kernels release the GIL, so the thread runs)."""

    def __init__(self, interval: float = 1e-3):
        self.interval, self.growth = interval, 0
        self._stop = threading.Event()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, heap_in_use())
            self._stop.wait(self.interval)

    def __enter__(self) -> "HeapPeak":
        self.start = self.peak = heap_in_use()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.growth = max(self.peak, heap_in_use()) - self.start


class SynthesisedImages(Dataset):
    """``n`` images (3, S, S) in [-1, 1], each drawn when read from a generator seeded by its index: smooth colour
    fields (8x8 noise upsampled) plus fine noise, so reconstructions and features are not trivial."""

    def __init__(self, n: int, size: int):
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
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
            res, kept = evaluate_reconstructions(cfg, {"SL": model}, SynthesisedImages(k, size), keep=4,
                                                 cuda=False, judge_path=path)
            assert kept["SL"].shape[0] == 4
            return res["SL"]
    else:
        from lverse_core.evaluation.fid import compute_fid

        def run(k: int):
            return compute_fid(SynthesisedImages(k, size), SynthesisedImages(k + 7, size), cfg, cuda=False,
                               judge_path=path)
    results = [run(32)]  # warm-up: the model, the extractor and the allocator's first batches
    growth = {}
    for label, k in (("N", n), ("8N", 8 * n)):
        with HeapPeak() as peak:
            results.append(run(k))
        growth[label] = peak.growth
    print(json.dumps({"growth_bytes": growth, "results": results}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
