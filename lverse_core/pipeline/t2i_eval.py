"""Table 3's evaluation streamed (paper §4.3: 30,000 prompts, 256-px images): FID-k against the real images for every
blur radius k, and on embedded data the judge's verdicts with their ceiling and floor, in one pass over each image
set, one batch at a time. What notebook 05 calls.

The image sets (``Table3Sets``: loaders that read images by position, nothing read in advance):
- real: the distinct images behind the prompts (FID's real side);
- generated: the first reranked image of every prompt, decoded from its AugVAE-SL codes;
- reconstructed: the real images decoded from their own AugVAE-SL codes (the ceiling for any generated image);
- real per prompt (embedded data only): the image behind each prompt, for the judge's ceiling and the
  "random real image per caption" row.

Every batch goes to one ``FidAccumulator`` (float64 running sums per set and radius, the real side shared by every
row) and, with a judge, to ``CaptionHits``: per image, whether the judge finds it right for each caption it is paired
with (its own; for the floor, the captions that the shuffled rounds pair it with). Memory: O(F^2) per set and
radius, one batch of images, and per prompt a few booleans and ids -- nothing that grows with the image size.

The row "a random real image per caption" (a derangement of the images behind the prompts) costs no pass of its own:
FID compares two sets of images and never sees which caption an image stands for, so its FID is the FID of the set it
permutes (the real images behind the prompts on embedded data; the real images themselves elsewhere, where it is 0).
Only the judge, which reads each image against the caption it is paired with, sees the derangement.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from lverse_core.config import Config

Loader = Callable[[list[int]], torch.Tensor]  # positions -> images (B, 3, S, S), uint8 or float in [-1, 1]

RECONSTRUCTED = "AugVAE-SL reconstructions of the real images"
RANDOM_REAL = "a random real image per caption"


@dataclass
class Table3Sets:
    """The image sets of Table 3 as loaders (``Loader``), with their sizes and the captions they are judged against."""

    generated: Loader  # n_prompts images, image j drawn for captions[j]
    real: Loader  # n_real distinct real images (FID's real side)
    reconstructed: Loader  # n_real images, AugVAE-SL decodings of the real images' codes
    captions: Sequence[str]  # the prompts
    real_captions: Sequence[str]  # per real image its first prompt: what its reconstruction is judged against
    n_real: int
    real_per_prompt: Loader | None = None  # n_prompts images, the real image behind captions[j]; the judge needs it

    @property
    def n_prompts(self) -> int:
        return len(self.captions)


def decoded(decode: Callable[[torch.Tensor], torch.Tensor], codes: torch.Tensor) -> Loader:
    """A ``Loader`` of ``decode(codes[positions])`` as uint8 on the CPU: images made only when read."""
    from lverse_core.data.pixels import uint8_from_signed

    def load(positions: list[int]) -> torch.Tensor:
        return uint8_from_signed(decode(codes[positions]).cpu())

    return load


def table3_sets(cfg: Config, prompts: Mapping[str, list], codes: torch.Tensor, decode) -> Table3Sets:
    """The sets of ``Table3Sets`` for the prompts of ``generate.t2i_prompts`` and the generated codes (P, g, g) (one
    image per prompt), read from ``eval.t2i_split``; the reconstructions decode the pre-tokenized codes of the real
    images (notebook 01)."""
    from lverse_core.pipeline.eval_run import codes_of
    from lverse_core.sampling.generate import real_images

    if len(codes) != len(prompts["captions"]):
        raise ValueError(f"{len(codes)} generated code maps but {len(prompts['captions'])} prompts")
    split, real_ids = cfg.eval.t2i_split, prompts["real_ids"]
    first_caption: dict[int, str] = {}
    for i, c in zip(prompts["image_ids"], prompts["captions"]):
        first_caption.setdefault(int(i), c)
    return Table3Sets(generated=decoded(decode, codes), real=real_images(cfg, split, real_ids),
                      reconstructed=decoded(decode, codes_of(cfg, split, real_ids)), captions=list(prompts["captions"]),
                      real_captions=[first_caption[int(i)] for i in real_ids], n_real=len(real_ids),
                      real_per_prompt=real_images(cfg, split, prompts["image_ids"]))


def uint8_batches(load: Loader, n: int, batch_size: int):
    """(start, uint8 batch) for positions 0..n-1 read ``batch_size`` at a time, on the CPU."""
    from lverse_core.evaluation.fid import to_uint8

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield start, to_uint8(load(list(range(start, min(n, start + batch_size)))).cpu())


class CaptionHits:
    """Is each image of a set right for the captions it is paired with? The judge reads every image once.

    ``pairings``: {name: (n,) long}, image i paired with ``captions[pairing[i]]``. ``add(start, images)`` judges a
    batch (images start, start + 1, ...); ``hits[name]`` is then (n,) bool. Nothing of an image is kept but these."""

    def __init__(self, judge, captions: Sequence[str], pairings: Mapping[str, torch.Tensor]):
        self.judge, self.captions = judge, captions
        self.pairings = {k: torch.as_tensor(v, dtype=torch.long) for k, v in pairings.items()}
        self.hits = {k: torch.zeros(len(v), dtype=torch.bool) for k, v in self.pairings.items()}

    def add(self, start: int, images: torch.Tensor) -> None:
        from lverse_core.data.pixels import signed_from_uint8
        from lverse_core.evaluation.judge import image_matches

        for b, seen in enumerate(self.judge.judge_image(signed_from_uint8(images))):
            for name, pairing in self.pairings.items():
                self.hits[name][start + b] = image_matches(seen, self.captions[int(pairing[start + b])])


@torch.no_grad()
def evaluate_text_to_image(cfg: Config, sets: Table3Sets, *, judge=None, radii: Sequence[float] | None = None,
                           floor_rounds: int | None = None, resamples: int | None = None, batch_size: int = 64,
                           cuda: bool | None = None, judge_path=None) -> dict[str, Any]:
    """Table 3 of this run, streamed: {"rows": {row: {fid_feature_space, fid: {"FID-k": ...}, n_images, and with a
    judge judged_correct (overall and per number of objects named)}}, "judge": ``verdicts.judge_bounds`` plus the
    reconstructions' row (empty without a judge)}.

    Rows: the generated images (named by ``eval_tables.ours_label``), ``RECONSTRUCTED`` and ``RANDOM_REAL`` (the
    images behind the prompts deranged with ``cfg.seed``; see the module docstring). ``radii`` default to
    ``eval.blur_radii``; the judge's floor pairs every generated image with ``floor_rounds``
    (``verdicts.FLOOR_ROUNDS``) shuffled captions; intervals use ``resamples`` (``eval.bootstrap``) bootstrap
    resamples. ``judge_path``/``cuda``: FID's feature extractor (``FidAccumulator``).
    """
    from lverse_core.evaluation.fid import FidAccumulator, fid_label
    from lverse_core.evaluation.statistics import bootstrap_interval
    from lverse_core.evaluation.verdicts import FLOOR_ROUNDS, derangement, floor_pairings, judge_bounds, verdict_summary
    from lverse_core.pipeline.eval_tables import ours_label

    P, R = sets.n_prompts, sets.n_real
    if P < 2 or R < 2:
        raise ValueError(f"Table 3 needs at least 2 prompts and 2 real images, got {P} and {R}")
    if len(sets.real_captions) != R:
        raise ValueError(f"{len(sets.real_captions)} real captions but {R} real images")
    if judge is not None and sets.real_per_prompt is None:
        raise ValueError("the judge's ceiling and the random-real row need real_per_prompt (the image behind each "
                         "prompt)")
    radii = list(radii if radii is not None else cfg.eval.blur_radii)
    rounds = FLOOR_ROUNDS if floor_rounds is None else floor_rounds
    resamples = cfg.eval.bootstrap if resamples is None else resamples
    acc = FidAccumulator(cfg, radii, cuda=cuda, judge_path=judge_path)
    shuffle = derangement(P, cfg.seed)  # the random-real row: caption j gets the image behind caption shuffle[j]
    own = torch.arange(P)
    passes = [("real", sets.real, R), ("generated", sets.generated, P), ("reconstructed", sets.reconstructed, R)]
    hits = {}
    if judge is not None:
        inverse = torch.empty(P, dtype=torch.long)
        inverse[shuffle] = own  # image shuffle[j] meets caption j
        floor = {f"floor {r}": p for r, p in enumerate(floor_pairings(P, cfg.seed, rounds))}
        hits = {"generated": CaptionHits(judge, sets.captions, {"own": own, **floor}),
                "reconstructed": CaptionHits(judge, sets.real_captions, {"own": torch.arange(R)}),
                "real per prompt": CaptionHits(judge, sets.captions, {"own": own, "shuffled": inverse})}
        passes.append(("real per prompt", sets.real_per_prompt, P))
    for name, load, n in passes:
        for start, batch in uint8_batches(load, n, batch_size):
            acc.add(name, batch)
            if name in hits:
                hits[name].add(start, batch)

    def fids(name: str) -> dict[str, Any]:
        return {"fid_feature_space": fid_label(cfg), "fid": {f"FID-{r:g}": acc.fid("real", name, r) for r in radii}}

    random_set = "real per prompt" if judge is not None else "real"
    generated_row = ours_label(cfg)
    rows = {generated_row: {**fids("generated"), "n_images": P},
            RECONSTRUCTED: {**fids("reconstructed"), "n_images": R},
            RANDOM_REAL: {**fids(random_set), "n_images": P if judge is not None else R}}
    if judge is None:
        return {"rows": rows, "judge": {}}
    ours = verdict_summary(hits["generated"].hits["own"].tolist(), sets.captions)
    recon = verdict_summary(hits["reconstructed"].hits["own"].tolist(), sets.real_captions)
    real_pp = hits["real per prompt"].hits
    ceiling = verdict_summary(real_pp["own"].tolist(), sets.captions)
    deranged = verdict_summary(real_pp["shuffled"][shuffle].tolist(), sets.captions)  # in caption order
    floor_hits = torch.stack([hits["generated"].hits[k] for k in floor])
    for row, v in ((generated_row, ours), (RECONSTRUCTED, recon), (RANDOM_REAL, deranged)):
        rows[row].update({k: x for k, x in v.items() if k != "per_image"})
    bounds = judge_bounds(ours, ceiling, floor_hits, cfg.seed, resamples)
    bounds[RECONSTRUCTED + " (decoder ceiling)"] = {
        **{k: x for k, x in recon.items() if k != "per_image"},
        "ci95": bootstrap_interval(recon["per_image"], resamples, cfg.seed).bounds}
    return {"rows": rows, "judge": bounds}
