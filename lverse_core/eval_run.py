"""The glue notebooks 04-06 share: load the trained models, sample the test split both ways, name the variants.

Everything here only calls what notebooks 01 and 02 trained (``runs/<profile>/``): the tokenizer, BiART, the CLIP
reranker and the AugVAE-SL decoder; a missing artefact is an error that names the notebook to run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pandas as pd
import torch

from .config import Config

TRUNCATED = "L-Verse kit (cut at the first full stop)"
UNTRUNCATED = "*L-Verse kit (untruncated)"


@dataclass
class Stack:
    tokenizer: Any
    model: Any
    scorer: Any
    decode: Callable[[torch.Tensor], torch.Tensor]
    device: str


@dataclass
class TestSplit:
    codes: torch.Tensor  # (N, g, g) long: AugVAE-SL codes of the real images
    image_ids: list[int]
    images: torch.Tensor  # (N, 3, S, S) in [-1, 1], in the order of the codes
    refs: dict[int, list[str]]


def load_stack(cfg: Config, device: str | None = None) -> Stack:
    """Tokenizer, BiART, CLIP reranker and AugVAE-SL decoder of this run (trained by notebooks 01 and 02)."""
    from .biart_run import ensure_tokenizer, load_augvae_decoder
    from .biart_train import load_biart
    from .clip_reranker import load_reranker

    device = device or cfg.resolved_device()
    for name, nb in (("augvae_sl.pt", "01_train_augvae"), ("biart.pt", "02_train_biart")):
        if not (cfg.runs_root / name).exists():
            raise FileNotFoundError(f"{cfg.runs_root / name} does not exist: run notebooks/{nb}.ipynb with "
                                    f"PROFILE={cfg.profile!r} first")
    tok = ensure_tokenizer(cfg)
    model = load_biart(cfg, tokenizer=tok).to(device)
    return Stack(tok, model, load_reranker(cfg, device), load_augvae_decoder(cfg, device), device)


def load_test_split(cfg: Config, split: str = "test", limit: int | None = None) -> TestSplit:
    """Real images, their codes and reference captions, in the order of ``pretokenize.load_codes``."""
    from .data import CaptionImageDataset, caption_records
    from .pretokenize import load_codes

    codes, ids = load_codes(cfg, split)
    ids = [int(i) for i in ids][:limit]
    records = {int(r["image_id"]): r for r in caption_records(cfg, split)}
    ds = CaptionImageDataset(cfg, split, records=[records[i] for i in ids])
    images = torch.stack([ds[k]["image"] for k in range(len(ids))])
    return TestSplit(torch.as_tensor(codes[:len(ids)].astype("int64")), ids, images,
                     {i: list(records[i]["captions"]) for i in ids})


def caption_test_images(cfg: Config, stack: Stack, test: TestSplit, seed: int = 0) -> pd.DataFrame:
    """BiART captions (CLIP-reranked) for every test image: image_id, caption, untruncated, reference[, correct]."""
    from .biart_run import caption_table, clip_score_fns

    _, i2t = clip_score_fns(stack.scorer, None, cfg.image_grid, test.images.to(stack.device))
    return caption_table(cfg, stack.model, stack.tokenizer, test.codes.to(stack.device), test.image_ids,
                         references=[test.refs[i] for i in test.image_ids], score_fn=i2t, seed=seed)


def caption_variants(cfg: Config, captions: pd.DataFrame, with_baselines: bool = True) -> dict[str, dict[int, str]]:
    """Table 2 rows: truncated and untruncated BiART captions, and (embedded data) the two training baselines."""
    ids = [int(i) for i in captions["image_id"]]
    out = {TRUNCATED: dict(zip(ids, captions["caption"])), UNTRUNCATED: dict(zip(ids, captions["untruncated"]))}
    if with_baselines:
        from .metrics import baseline_predictions

        out.update(baseline_predictions(cfg, ids))
    return out


def draw_images(cfg: Config, stack: Stack, prompts: Sequence[str], seed: int = 0) -> torch.Tensor:
    """One CLIP-reranked image per prompt (``sampling.n_candidates`` candidates), decoded: (P, 3, S, S) in [-1, 1]."""
    from .biart_run import clip_score_fns, image_samples

    t2i, _ = clip_score_fns(stack.scorer, stack.decode, cfg.image_grid)
    out = []
    for i in range(0, len(prompts), cfg.sampling.batch_size):
        chunk = list(prompts[i:i + cfg.sampling.batch_size])
        drawn = image_samples(cfg, stack.model, stack.tokenizer, chunk, score_fn=t2i, n_repeats=1, seed=seed + i)
        out.append(stack.decode(drawn["codes"][:, 0]).cpu())
    return torch.cat(out)
