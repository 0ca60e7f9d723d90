"""Sampling from BiART and CLIP reranking (paper §3.6).

- Token sampling itself (temperature, top-k, top-p) is ``lverse_core.models.decoding``.
- ``truncate_at_full_stop``: image->text keeps the first ``sampling.caption_tokens`` tokens of a sample up to and
  including the first full stop (§3.6). ``full_length_text``: the untruncated caption of Table 2's row "*L-Verse" is
  the whole sample to the full text length (``biart.text_len``, the paper's 64 tokens) with only [EOT]/[PAD]
  dropped, so it keeps whatever follows the first sentence (the paper: "a repeated sequence of same sentence and
  [PAD] tokens"). Sampling is auto-regressive, so the first ``caption_tokens`` tokens of that one sample are
  exactly a ``caption_tokens``-token sample: both rows come from the same draw.
- ``rerank``: N candidates per prompt, top-1 by CLIP score; ``text_to_image`` / ``image_to_text`` repeat it k
  times with different seeds (§3.6: "we repeat this process k times with different random seeds").
- ``load_augvae_decoder``: AugVAE-SL's decoder (codes -> images) in FP32, what the image reranker scores;
  ``sampling_precision``: the autocast context sampling runs in.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Sequence

import torch

from lverse_core.config import Config

Decoder = Callable[[torch.Tensor], torch.Tensor]  # codes (M, g, g) long -> images (M, 3, S, S) in [-1, 1]


def truncate_at_full_stop(ids: torch.Tensor, full_stop_ids: set[int], stop_ids: set[int]) -> list[list[int]]:
    """Each row of ``ids`` (B, T) cut after its first full-stop token (kept) or before its first stop token
    ([EOT]/[PAD], dropped), whichever comes first; a row with neither is returned whole."""
    out = []
    for row in ids.tolist():
        cut = []
        for t in row:
            if t in stop_ids:
                break
            cut.append(t)
            if t in full_stop_ids:
                break
        out.append(cut)
    return out


def full_length_text(ids: torch.Tensor, special_ids: set[int]) -> list[list[int]]:
    """Each row of ``ids`` (B, T) whole, without its special tokens ([EOT]/[PAD]): the untruncated caption."""
    return [[t for t in row if t not in special_ids] for row in ids.tolist()]


def caption_sample_length(model, caption_tokens: int) -> int:
    """Tokens to sample per caption candidate: the model's full text length (for the untruncated row), which
    ``caption_tokens`` (the truncated row's sample length) may not exceed."""
    text_len = model.args.text_len
    if not 1 <= caption_tokens <= text_len:
        raise ValueError(f"sampling.caption_tokens = {caption_tokens} must be in 1..biart.text_len = {text_len}")
    return text_len


def rerank(scores: torch.Tensor) -> torch.Tensor:
    """Index of the best candidate per prompt: scores (P, N) -> (P,) long (top-1 by CLIP score, §3.6)."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be (prompts, candidates), got shape {tuple(scores.shape)}")
    return scores.argmax(dim=1)


def caption_candidate_count(sampling) -> int:
    """Candidates per image for image->text: ``sampling.caption_candidates``, or ``n_candidates`` when that is 0."""
    return sampling.caption_candidates or sampling.n_candidates


@torch.no_grad()
def caption_log_likelihood(model, image_codes: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
    """log p(caption | image) under BiART's image->text direction, teacher-forced: (M,) nats summed over the
    caption's tokens ([PAD] excluded). ``image_codes`` (M, N) codes, ``text_ids`` (M, L) ids (tokenizer.encode)."""
    import torch.nn.functional as F

    from lverse_core.models.biart import I2T

    dev = next(model.parameters()).device
    text_ids, image_codes = text_ids.to(dev), image_codes.reshape(len(image_codes), -1).to(dev)
    text_logits, _ = model.logits(text_ids, image_codes, I2T)
    nll = F.cross_entropy(text_logits.float().transpose(1, 2), text_ids.long(), reduction="none",
                          ignore_index=model.args.pad_id)
    return -nll.sum(1).cpu()


def rerank_scores(clip_scores: torch.Tensor, log_likelihood: torch.Tensor | None, weight: float) -> torch.Tensor:
    """The score candidates are reranked by, (P, n): the clip-score alone when ``weight`` is 0 (paper §3.6), else
    z(clip-score) + weight * z(log-likelihood), each z-scored over one prompt's n candidates.

    The log-likelihood is BiART's own log p(caption | image codes) (``caption_log_likelihood``), in both directions:
    for image->text, of each candidate caption given the image's codes; for text->image, of the prompt given each
    candidate's codes (the image->text direction reading the image it was just asked to draw). The clip-score says
    whether a caption fits the picture; BiART's likelihood says whether it fits the codes. On the embedded data the
    two are right on different candidates, and together they keep a right one more often than either
    (docs/design-notes.md, "Captions: candidates and reranking", "Images: reranking by BiART's own likelihood")."""
    if weight == 0 or clip_scores.shape[1] == 1:
        return clip_scores
    if log_likelihood is None or log_likelihood.shape != clip_scores.shape:
        got = None if log_likelihood is None else tuple(log_likelihood.shape)
        raise ValueError(f"a likelihood weight of {weight} needs one log-likelihood per candidate, shape "
                         f"{tuple(clip_scores.shape)}, got {got}")

    def z(v: torch.Tensor) -> torch.Tensor:
        v = v.double()
        return (v - v.mean(1, keepdim=True)) / (v.std(1, keepdim=True) + 1e-6)

    return (z(clip_scores) + weight * z(log_likelihood)).float()


def _seeded(seed: int, device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


@torch.no_grad()
def text_to_image(model, text_tokens: torch.Tensor, captions: Sequence[str], *, n_candidates: int, n_repeats: int = 1,
                  score_fn: Callable[[torch.Tensor, Sequence[str]], torch.Tensor] | None = None,
                  seed: int = 0, batch_size: int = 64, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0, keep_candidates: bool = False, likelihood_weight: float = 0.0
                  ) -> dict[str, torch.Tensor]:
    """For each of P prompts, ``n_repeats`` images, each the CLIP-best of ``n_candidates`` samples (with
    ``likelihood_weight`` > 0 the best by ``rerank_scores``: CLIP and BiART's log p(prompt | candidate codes)).

    ``score_fn(codes (M, N), captions (M,)) -> (M,)`` scores candidate code maps against their caption (it decodes
    them with AugVAE-SL and runs CLIP); without it the first candidate is kept (the most likely one when
    ``likelihood_weight`` > 0). Candidates of several prompts share
    one sampling batch of ``batch_size`` rows. Returns ``codes`` (P, k, N), ``scores`` (P, k, n_candidates) and
    the ``ranking`` the kept one maximises (the scores themselves when ``likelihood_weight`` is 0);
    with ``keep_candidates`` also every candidate, ``candidates`` (P, k, n_candidates, N), and ``chosen`` (P, k).
    """
    P = text_tokens.size(0)
    device = text_tokens.device
    rows = text_tokens.repeat_interleave(n_candidates, dim=0)  # (P*n, L): prompt p's candidates are adjacent
    row_caps = [c for c in captions for _ in range(n_candidates)]
    all_codes, all_scores, all_ranking, all_candidates, all_best = [], [], [], [], []
    for r in range(n_repeats):
        g = _seeded(seed + r, device)
        codes = torch.cat([model.generate_image(rows[i:i + batch_size], temperature=temperature, top_k=top_k,
                                                top_p=top_p, generator=g) for i in range(0, len(rows), batch_size)])
        scores = score_fn(codes, row_caps) if score_fn is not None else torch.zeros(len(rows), device=device)
        scores = scores.view(P, n_candidates)
        ll = None
        if likelihood_weight > 0 and n_candidates > 1:
            ll = torch.cat([caption_log_likelihood(model, codes[i:i + batch_size], rows[i:i + batch_size])
                            for i in range(0, len(rows), batch_size)]).view(P, n_candidates).to(scores.device)
        ranking = rerank_scores(scores, ll, likelihood_weight)
        best = rerank(ranking)
        all_ranking.append(ranking)
        all_codes.append(codes.view(P, n_candidates, -1)[torch.arange(P, device=device), best])
        all_scores.append(scores)
        if keep_candidates:
            all_candidates.append(codes.view(P, n_candidates, -1))
            all_best.append(best)
    out = {"codes": torch.stack(all_codes, 1), "scores": torch.stack(all_scores, 1),
           "ranking": torch.stack(all_ranking, 1)}
    if keep_candidates:
        out.update(candidates=torch.stack(all_candidates, 1), chosen=torch.stack(all_best, 1))
    return out


@torch.no_grad()
def image_to_text(model, tokenizer, image_codes: torch.Tensor, *, n_candidates: int, n_tokens: int,
                  score_fn: Callable[[torch.Tensor, Sequence[str]], torch.Tensor] | None = None, seed: int = 0,
                  batch_size: int = 64, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0, keep_candidates: bool = False, likelihood_weight: float = 0.0
                  ) -> dict[str, list]:
    """One caption per image: ``n_candidates`` samples, each cut after ``n_tokens`` tokens at the first full stop,
    and the CLIP-best truncated one kept (§3.6: only the first split is scored; with ``likelihood_weight`` > 0 the
    best by ``rerank_scores``, and ``ranking`` holds those scores). ``score_fn(image_index (M,),
    texts (M,)) -> (M,)`` scores a caption against image ``image_index``. Returns ``truncated`` and ``full``
    captions (``full``: the same chosen sample to the full text length, see ``full_length_text``) and the scores of
    every candidate (P, n_candidates); with ``keep_candidates`` also every truncated candidate.

    Streamed (paper Table 2: 5,000 images x 64 candidates): candidates are sampled ``batch_size`` rows at a time and
    reranked in groups of whole prompts (``lcm(n_candidates, batch_size)`` rows), so memory holds one group's
    candidates, never all of them. The groups are cut where sampling batches end anyway and the random stream runs
    through them in order, so every sample is the one that sampling all rows in one sequence gives.
    """
    P, n = image_codes.size(0), n_candidates
    device = image_codes.device
    flat = image_codes.reshape(P, -1)
    g = _seeded(seed, device)
    n_sample = caption_sample_length(model, n_tokens)
    stop, full_stop = {tokenizer.eot_id, tokenizer.pad_id}, set(tokenizer.full_stop_ids)
    group = math.lcm(n, batch_size)  # rows: whole prompts and whole sampling batches
    out: dict[str, list] = {"truncated": [], "full": [], "scores": [], "ranking": []}
    if keep_candidates:
        out["candidates"] = []
    for start in range(0, P * n, group):
        owner = torch.arange(start, min(P * n, start + group), device=device) // n  # row -> image
        ids = torch.cat([model.generate_text(flat[owner[i:i + batch_size]], n_sample, temperature=temperature,
                                             top_k=top_k, top_p=top_p, generator=g)
                         for i in range(0, len(owner), batch_size)])
        cut = [_decode(tokenizer, c) for c in truncate_at_full_stop(ids[:, :n_tokens], full_stop, stop)]
        full = full_length_text(ids, stop)
        scores = (score_fn(owner, cut) if score_fn is not None else torch.zeros(len(cut))).view(-1, n).cpu()
        ll = None
        if likelihood_weight > 0 and n > 1:
            ll = caption_log_likelihood(model, flat[owner], tokenizer.encode(cut)).view(-1, n)
        ranking = rerank_scores(scores, ll, likelihood_weight)
        out["ranking"].append(ranking)
        for p, b in enumerate(rerank(ranking).tolist()):
            out["truncated"].append(cut[p * n + b])
            out["full"].append(_decode(tokenizer, full[p * n + b]))
            if keep_candidates:
                out["candidates"].append(cut[p * n:(p + 1) * n])
        out["scores"].append(scores)
    out["scores"] = torch.cat(out["scores"]) if out["scores"] else torch.zeros(0, n)
    out["ranking"] = torch.cat(out["ranking"]) if out["ranking"] else torch.zeros(0, n)
    return out


def _decode(tokenizer, ids: list[int]) -> str:
    if not ids:
        return ""
    return tokenizer.decode(torch.tensor([ids]))[0]


def load_augvae_decoder(cfg: Config, device: str | torch.device = "cpu") -> Decoder:
    """AugVAE-SL's decoder from runs/<profile>/augvae_sl.pt, run in FP32 (paper §3.5: the VAE in FP32)."""
    from lverse_core.training.augvae_train import load_augvae

    vae = load_augvae(cfg, "sl", device).float()

    dev_type = torch.device(device).type

    @torch.no_grad()
    def decode(codes: torch.Tensor) -> torch.Tensor:
        with torch.autocast(dev_type, enabled=False):  # FP32 even when called inside bf16 sampling
            return vae.decode(codes.to(device).long()).float().clamp(-1, 1)

    return decode


def sampling_precision(model):
    """bf16 autocast for sampling on a GPU (the KV cache follows the autocast dtype); FP32 on the CPU."""
    dev = next(model.parameters()).device
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
