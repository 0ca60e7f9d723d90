"""Subprocess of tests/test_recon_stream.py and tests/test_t2i_stream.py: how much more memory the streamed Table 1
evaluation, a streamed FID, Table 3's evaluation (FID under blur and the judge) or caption reranking needs at 8N images
than at N, measured in a fresh process.

Memory is the bytes glibc's malloc has handed out and not taken back (``mallinfo2``: ``uordblks + hblkhd``), where
torch's CPU tensors and numpy's arrays both come from; unlike peak RSS it does not move with the allocator's page
reuse and fragmentation (RSS moved by up to ~8 MB between runs of the same size here), and unlike ``tracemalloc`` it
sees torch. It is read each time an image is read (``SynthesisedImages``): deterministic points between batches,
where what a run still holds from earlier images shows and the activations of one batch, freed by then, do not
(a sampling thread caught or missed those at random, by up to ~10 MB).

Usage: python _memory_scaling_worker.py table1|fid|table3|captions N IMAGE_SIZE WORKDIR; prints one JSON line
{"growth_bytes": {"N": most in use at a read minus in use at the start, at N images, "8N": ... at 8N},
"results": [...]}. Images are synthesised when read, so the data set itself holds nothing. What a caller holds
whatever the streaming (ids, captions, code maps: a few bytes to a few KiB per image, the inputs) is made before the
measure starts; what the code under test keeps per image (verdicts, chosen captions, scores) is measured.
"""
from __future__ import annotations

import ctypes
import gc
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
        return synthesise(self.offset + i, self.size), 0


def synthesise(seed: int, size: int) -> torch.Tensor:
    """One image (3, size, size) in [-1, 1] of ``SynthesisedImages``, drawn from a generator seeded by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
    img = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")[0]
    return (img + 0.1 * torch.randn(img.shape, generator=g)).clamp(-1, 1)


class HeapProbe:
    """The most heap in use at any read through a wrapped loader (``wrap``) or at ``sample()``, minus the heap in use
    when the probe was made: ``growth``."""

    def __init__(self):
        gc.collect()  # what earlier runs left in reference cycles must not be freed during this one
        self.start = self.peak = heap_in_use()

    def sample(self) -> None:
        self.peak = max(self.peak, heap_in_use())

    def wrap(self, load):
        def read(positions):
            self.sample()
            return load(positions)
        return read

    @property
    def growth(self) -> int:
        return self.peak - self.start


def synthesised_loader(size: int, offset: int = 0, which=None):
    """positions -> images (B, 3, size, size) in [-1, 1]; ``which`` maps a position to the image drawn there."""
    return lambda positions: torch.stack([synthesise(offset + (which(i) if which else i), size) for i in positions])


def _table3_run(cfg, judge, judge_path, size: int, syn):
    """Notebook 05's Table 3 (``t2i_eval.evaluate_text_to_image``) for k prompts, two per real image: a tiny AugVAE-SL
    decodes the generated and the reconstructed codes, the real images are synthesised when read, an untrained judge
    judges them (20 floor rounds) and its features are FID's, under blur radii 0 and 2."""
    from lverse_core.models.augvae import AugVAE
    from lverse_core.pipeline.eval_tables import ours_label
    from lverse_core.pipeline.t2i_eval import Table3Sets, decoded, evaluate_text_to_image

    vae = AugVAE.ml_to_sl(AugVAE.from_config(cfg, "ml")).eval()
    K, g = cfg.augvae.codebook_size, cfg.image_grid

    def run(k: int):
        n_real = k // 2
        gen = torch.Generator().manual_seed(k)
        codes = torch.randint(0, K, (k, g, g), generator=gen)  # what the notebook holds: the generated codes
        real_codes = torch.randint(0, K, (n_real, g, g), generator=gen)
        objects = [{"shape": syn.SHAPES[j % 3], "colour": syn.COLOURS[j % 4], "size": syn.SIZES[j % 2]}
                   for j in range(n_real)]
        captions = [syn.caption([objects[j % n_real]]) for j in range(k)]
        probe = HeapProbe()
        sets = Table3Sets(generated=probe.wrap(decoded(vae.decode, codes)), real=probe.wrap(synthesised_loader(size)),
                          reconstructed=probe.wrap(decoded(vae.decode, real_codes)), captions=captions,
                          real_captions=captions[:n_real], n_real=n_real,
                          real_per_prompt=probe.wrap(synthesised_loader(size, which=lambda j: j % n_real)))
        res = evaluate_text_to_image(cfg, sets, judge=judge, radii=[0, 2], resamples=20, batch_size=BATCH,
                                     cuda=False, judge_path=judge_path)
        probe.sample()  # and what the result keeps
        ours = res["rows"][ours_label(cfg)]
        result = {"n_images": ours["n_images"], "fid": ours["fid"], "judged_correct": ours["judged_correct"]}
        return result, probe.growth

    return run


CAPTION_CANDIDATES = 16  # candidates per image: the per-candidate state of a whole-set reranking then shows


def _captions_run(cfg, size: int):
    """Caption reranking for k images by ``candidates.image_to_text`` with ``clip_score_fns`` reading the real images
    through a loader (notebook 02's look inside the reranking), then by ``generate.generate_captions`` (notebooks 02
    and 04's captions of the test split): a tiny untrained BiART of tests/_generate_stubs.py's sizes (16 image tokens, 8
    text tokens) and its tokenizer, an untrained small CLIP of the ci profile, images synthesised when read."""
    from _generate_stubs import IMAGE_VOCAB, TEXT_LEN, TEXT_VOCAB, StubTokenizer, tiny_cfg
    from lverse_core.models.biart import BiART, BiARTArgs
    from lverse_core.pipeline.biart_run import clip_score_fns
    from lverse_core.sampling.candidates import image_to_text
    from lverse_core.sampling.clip_reranker import CLIPScorer, build_small_clip
    from lverse_core.sampling.generate import generate_captions

    torch.manual_seed(0)  # at its initial scale the untrained model's captions are words, not at once [EOT]
    model = BiART(BiARTArgs(n_layer=1, n_head=2, n_embd=32, text_len=TEXT_LEN, image_tokens=16, text_vocab=TEXT_VOCAB,
                            image_vocab=IMAGE_VOCAB, pad_id=0, dropout=0.0)).eval()
    tok = StubTokenizer()
    # 256 rows per sampling batch: 16 images' candidates, few calls of the tiny model
    small = tiny_cfg(**{"sampling.n_candidates": CAPTION_CANDIDATES, "sampling.caption_tokens": 6,
                        "sampling.batch_size": 256})
    scorer = CLIPScorer(build_small_clip(cfg).eval(), "cpu")
    s = small.sampling

    def run(k: int):
        codes = torch.randint(0, 24, (k, 4, 4), generator=torch.Generator().manual_seed(k))  # the held codes
        ids = list(range(k))
        probe = HeapProbe()
        _, i2t = clip_score_fns(scorer, None, 4, probe.wrap(synthesised_loader(size)))
        out = image_to_text(model, tok, codes, n_candidates=s.n_candidates, n_tokens=s.caption_tokens, score_fn=i2t,
                            seed=0, batch_size=s.batch_size)
        probe.sample()
        records = generate_captions(small, model, tok, codes, ids, scorer, images=probe.wrap(synthesised_loader(size)))
        probe.sample()
        assert len(out["truncated"]) == len(records) == k
        result = {"n_images": k, "notebook_02": out["truncated"][:2],
                  "notebook_04": [r["caption"] for r in records[:2]]}
        return result, probe.growth

    return run


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
        from lverse_core.evaluation.reconstruction import evaluate_reconstructions

        model = AugVAE.ml_to_sl(AugVAE.from_config(cfg, "ml"))

        def run(k: int):
            data = SynthesisedImages(k, size)
            res, kept = evaluate_reconstructions(cfg, {"SL": model}, data, keep=4, batch_size=BATCH, cuda=False,
                                                 judge_path=path)
            assert kept["SL"].shape[0] == 4
            return res["SL"], data.peak - data.start
    elif kind == "fid":
        from lverse_core.evaluation.fid import compute_fid

        def run(k: int):
            real, fake = SynthesisedImages(k, size), SynthesisedImages(k, size, offset=10**6)
            fid = compute_fid(real, fake, cfg, cuda=False, judge_path=path, batch_size=BATCH)
            return fid, max(real.peak, fake.peak) - real.start
    elif kind == "table3":
        run = _table3_run(cfg, judge, path, size, syn)
    elif kind == "captions":
        run = _captions_run(cfg, size)
    else:
        raise SystemExit(f"unknown kind {kind!r}: table1 | fid | table3 | captions")
    # Warm-up of two batches: the model, the extractor, and a full batch held while the next is read.
    results = [run(2 * BATCH)[0]]
    growth = {}
    for label, k in (("N", n), ("8N", 8 * n)):
        result, growth[label] = run(k)
        results.append(result)
    print(json.dumps({"growth_bytes": growth, "results": results}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
