"""What notebook 02 calls: the run's tokenizer and training pairs, the AugVAE-SL decoder, held-out samples with
CLIP reranking (paper §3.6), and the loss-curve figure. Kept here so the notebook stays a sequence of short calls.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from lverse_core.config import Config
from lverse_core.data.tokenizer import ensure_tokenizer  # noqa: F401  (notebook 02 reads it from here)
from lverse_core.sampling.candidates import (Decoder, image_to_text, load_augvae_decoder,  # noqa: F401
                                             sampling_precision, text_to_image)


def clip_score_fns(scorer, decode: Decoder | None, grid: int, images: torch.Tensor | None = None,
                   batch_size: int = 64):
    """Reranking scores: codes -> decoded image vs caption (text->image); image index -> image vs caption.

    Both score at most ``batch_size`` pairs per CLIP call (and decode at most that many code maps at once), so
    memory does not grow with the number of candidates: at paper scale one call would otherwise hold 5,000 test
    images x 64 candidates = 320,000 images.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    b = batch_size
    t2i = None
    if scorer is not None and decode is not None:
        def t2i(codes: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
            return torch.cat([scorer.score(decode(codes[i:i + b].view(-1, grid, grid)), captions[i:i + b])
                              for i in range(0, len(codes), b)])
    i2t = None
    if scorer is not None and images is not None:
        def i2t(owner: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
            owner = owner.cpu()
            return torch.cat([scorer.score(images[owner[i:i + b]], texts[i:i + b]) for i in range(0, len(owner), b)])
    return t2i, i2t


def caption_table(cfg: Config, model, tokenizer, codes: torch.Tensor, image_ids: Sequence[int], *,
                  references: Sequence[Sequence[str]], score_fn=None, n_candidates: int | None = None,
                  seed: int = 0) -> pd.DataFrame:
    """image->text for held-out images: the reranked caption cut at the first full stop and its untruncated text,
    with ``correct`` (every object's size, colour and shape named, shapes.caption_correct) on the embedded data."""
    s = cfg.sampling
    with sampling_precision(model):
        out = image_to_text(model, tokenizer, codes, n_candidates=n_candidates or s.n_candidates,
                            n_tokens=s.caption_tokens, score_fn=score_fn, seed=seed, batch_size=s.batch_size,
                            temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
    df = pd.DataFrame({"image_id": list(image_ids), "caption": out["truncated"], "untruncated": out["full"],
                       "reference": [r[0] for r in references]})
    if cfg.data.source == "shapes":
        from lverse_core.data.loaders import load_attributes
        from lverse_core.data.shapes import caption_correct

        attrs = load_attributes(cfg)
        df["correct"] = [caption_correct(c, attrs[int(i)]) for c, i in zip(df["caption"], df["image_id"])]
    return df


def image_samples(cfg: Config, model, tokenizer, captions: Sequence[str], *, score_fn=None,
                  n_candidates: int | None = None, n_repeats: int | None = None, seed: int = 0) -> dict:
    """text->image for held-out captions: ``n_repeats`` CLIP-reranked code maps per caption (P, k, g, g)."""
    s = cfg.sampling
    device = next(model.parameters()).device
    with sampling_precision(model):
        out = text_to_image(model, tokenizer.encode(list(captions)).to(device), list(captions),
                            n_candidates=n_candidates or s.n_candidates, n_repeats=n_repeats or s.n_repeats,
                            score_fn=score_fn, seed=seed, batch_size=s.batch_size, temperature=s.temperature,
                            top_k=s.top_k, top_p=s.top_p)
    g = cfg.image_grid
    return {"codes": out["codes"].view(len(captions), -1, g, g), "scores": out["scores"]}


def loss_curves(cfg: Config, log_name: str = "biart") -> pd.DataFrame:
    """The training log in long form: step, direction (text->image / image->text), part ([REF]/[GEN]), nll."""
    log = pd.read_csv(cfg.runs_root / "logs" / f"{log_name}.csv")
    names = {"t2i": "text->image", "i2t": "image->text"}
    rows = []
    for key, direction in names.items():
        for part in ("ref", "gen"):
            col = f"{key}_{part}"
            sub = log[["step", col]].dropna()
            rows.append(pd.DataFrame({"step": sub["step"], "direction": direction, "part": f"[{part.upper()}]",
                                      "nll": sub[col]}))
    return pd.concat(rows, ignore_index=True)


def plot_loss_curves(df: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=False)
    for ax, direction in zip(axes, ["text->image", "image->text"]):
        for part, sub in df[df["direction"] == direction].groupby("part"):
            modality = "text" if (part == "[REF]") == (direction == "text->image") else "image"
            ax.plot(sub["step"], sub["nll"], label=f"{part} ({modality})")
        ax.set_title(direction)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("NLL (nats/token)")
        ax.legend()
    fig.tight_layout()
    return fig


def image_grid_figure(rows: Sequence[torch.Tensor], titles: Sequence[str], ncols: int):
    """One row per caption: ``ncols`` images (3, S, S) in [-1, 1], the (wrapped) caption above the row."""
    import textwrap

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.5 * ncols, 1.9 * len(rows)), squeeze=False)
    for r, (imgs, title) in enumerate(zip(rows, titles)):
        for c in range(ncols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(imgs):
                ax.imshow(((imgs[c].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy())
        axes[r][0].set_title(textwrap.fill(title, 12 * ncols), fontsize=7, loc="left")
    fig.tight_layout()
    return fig


def checkpoint_path(cfg: Config) -> Path:
    return cfg.runs_root / "biart.pt"


@torch.no_grad()
def heldout_nll(model, pairs, device, batch_size: int = 256) -> pd.DataFrame:
    """Teacher-forced NLL (nats/token) of held-out (caption, image codes) pairs, per direction and part.

    One row per (direction, part): ``modality`` says which tokens the part holds. In text->image the image tokens
    are [GEN] (conditioned on the caption); in image->text they are [REF] (nothing before them). The same holds
    for text the other way round, so comparing the two rows of one modality measures what the condition buys.
    """
    from lverse_core.models.biart import I2T, T2I

    model.eval()
    sums = {(d, p): 0.0 for d in (T2I, I2T) for p in ("ref", "gen")}
    tokens = {"text": 0, "image": 0}
    n = len(pairs.text)
    if n == 0:
        raise ValueError("heldout_nll needs at least one caption-image pair")

    def modality(d: str, p: str) -> str:
        return "text" if (p == "ref") == (d == T2I) else "image"

    for start in range(0, n, batch_size):
        text, image = pairs.batch(list(range(start, min(n, start + batch_size))), device)
        count = {"text": int((text != model.args.pad_id).sum()), "image": image.numel()}  # [PAD] is not scored
        for k in tokens:
            tokens[k] += count[k]
        for d in (T2I, I2T):
            out = model(text, image, d)
            for p in ("ref", "gen"):
                sums[(d, p)] += float(out[p]) * count[modality(d, p)]  # batch mean x its scored tokens
    rows = [{"direction": "text->image" if d == T2I else "image->text", "part": f"[{p.upper()}]",
             "modality": modality(d, p), "nll": s / tokens[modality(d, p)]} for (d, p), s in sums.items()]
    return pd.DataFrame(rows)


def conditioning_gap(nll: pd.DataFrame) -> dict:
    """What the condition is worth, per modality, from ``heldout_nll``: NLL as [REF] minus NLL as [GEN].

    A model that learned to use the caption predicts image tokens better in text->image ([GEN]) than with no
    caption in image->text ([REF]); likewise for text given the image. Returns the gaps and a sentence built
    from them (no claim typed in advance).
    """
    out, parts = {}, []
    for modality in ("image", "text"):
        sub = nll[nll["modality"] == modality].set_index("part")["nll"]
        ref, gen = float(sub["[REF]"]), float(sub["[GEN]"])
        gap = ref - gen
        out[modality] = {"ref_nll": ref, "gen_nll": gen, "gap_nats": gap, "gap_fraction": gap / ref if ref else 0.0}
        given = "the caption" if modality == "image" else "the image"
        verdict = ("the condition is used" if gap > 0.05 * ref else
                   "the condition barely helps" if gap > 0 else "the condition does not help")
        parts.append(f"{modality} tokens: {gen:.3f} nats/token given {given} ([GEN]) vs {ref:.3f} with nothing before "
                     f"them ([REF]), {gap:+.3f} nats ({100 * gap / ref:+.1f}%): {verdict}")
    out["sentence"] = "; ".join(parts) + "."
    return out
