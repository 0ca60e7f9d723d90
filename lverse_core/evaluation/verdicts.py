"""The attribute judge's verdicts on images summed up (embedded data; Table 3's judge rows, the claims' "judged
right" measures): is image j right for prompt j, overall and by the number of objects the prompt names; and Table 3's
judge bounds, the ceiling (real images) and the floor (images judged against shuffled captions), each with a
bootstrap interval over images.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from lverse_core.data.pixels import signed_from_uint8
from lverse_core.evaluation.statistics import bootstrap_interval


def judged_correct(judge, images: torch.Tensor, prompts: Sequence[str]) -> dict[str, Any]:
    """Is each generated image right for its prompt? Overall and by the number of objects the prompt names."""
    from lverse_core.evaluation.judge import image_matches

    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    seen = judge.judge_image(signed_from_uint8(images))
    return verdict_summary([image_matches(s, p) for s, p in zip(seen, prompts)], prompts)


def verdict_summary(right: Sequence[bool], prompts: Sequence[str]) -> dict[str, Any]:
    """The judge's verdicts (image j right for prompt j or not) summed up: the share judged right, overall and by the
    number of objects the prompt names, ``n_images`` and ``per_image`` (the verdicts, for bootstrap intervals)."""
    from lverse_core.data.shapes import parse_caption

    if len(right) != len(prompts):
        raise ValueError(f"{len(right)} verdicts but {len(prompts)} prompts")
    ok = np.asarray(right, dtype=bool)
    n_obj = np.array([len(parse_caption(p)) for p in prompts])
    out: dict[str, Any] = {"judged_correct": float(ok.mean()), "n_images": int(len(ok))}
    for k in sorted(set(n_obj.tolist())):
        out[f"judged_correct_{k}_objects"] = float(ok[n_obj == k].mean())
    out["per_image"] = ok.tolist()
    return out


def derangement(n: int, seed: int) -> torch.Tensor:
    """A seeded permutation without fixed points (n >= 2): index j -> another prompt, never j itself."""
    if n < 2:
        raise ValueError("a shuffled-caption floor needs at least 2 prompts")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out = torch.empty(n, dtype=torch.long)
    out[order] = order.roll(-1)  # one cycle through a random order
    return out


FLOOR_ROUNDS = 20  # shuffled captions each generated image is judged against for the floor
# The rows of the judge's Table 3 reading (``judge_bounds``), spelled once; notebook 05 reads the floor by its name.
GENERATED = "generated images"
JUDGE_CEILING = "real images (judge ceiling)"
FLOOR = "images generated from shuffled captions (floor)"


def floor_pairings(n: int, seed: int, rounds: int = FLOOR_ROUNDS) -> torch.Tensor:
    """(rounds, n) long: in round r, generated image i is judged against prompt ``[r, i]``. Round r is the derangement
    ``derangement(n, seed + r)`` read from the image's side (image d[j] meets prompt j), so that a stream of images
    can be judged as it passes, never held."""
    out = torch.empty(rounds, n, dtype=torch.long)
    for r in range(rounds):
        out[r, derangement(n, seed + r)] = torch.arange(n)
    return out


def judge_bounds(ours: Mapping[str, Any], ceiling: Mapping[str, Any], floor_hits: torch.Tensor, seed: int,
                 resamples: int = 1000) -> dict[str, dict[str, Any]]:
    """The judge on generated images, and in the same run its ceiling and floor (Table 3 on embedded data), from
    verdicts already made (``pipeline.t2i_eval`` makes them as the images stream past):

    - ours: image j generated from prompt j, judged against prompt j (``ours``, a ``verdict_summary``
      with ``per_image``);
    - ceiling: the real image behind prompt j, judged against prompt j (``ceiling``, the same);
    - floor: images generated from shuffled captions. Each generated image is judged against the prompts that the
      rounds of ``floor_pairings`` give it (``floor_hits`` (rounds, n) bool: right or not), so the floor rests on
      rounds x prompts pairs and is estimated rather than a count of zero; it reuses our images, so it costs no
      second generation.
    Each entry carries ``ci95``, a bootstrap interval (``statistics.bootstrap_interval``) that resamples images
    (the floor: each image's share of shuffled captions it matches), so pairs that share an image are not counted as
    independent evidence.
    """
    rounds, n = floor_hits.shape
    share = floor_hits.double().mean(0)
    out = {GENERATED: dict(ours), JUDGE_CEILING: dict(ceiling),
           FLOOR: {
               "judged_correct": float(share.mean()), "n_images": n, "floor_rounds": rounds, "n_pairs": rounds * n,
               "matches": int(floor_hits.sum()), "per_image": share.tolist()}}
    for v in out.values():
        v["ci95"] = bootstrap_interval(v.pop("per_image"), resamples, seed).bounds
    return out
