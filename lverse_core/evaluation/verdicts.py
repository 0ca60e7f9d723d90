"""The attribute judge's verdicts on images summed up (embedded data; Table 3's judge rows, the claims' "judged
right" measures): is image j right for prompt j, overall and by the number of objects the prompt names.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from lverse_core.data.pixels import signed_from_uint8


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
