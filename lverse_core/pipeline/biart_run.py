"""What notebook 02 calls: the run's tokenizer and training pairs, the AugVAE-SL decoder, held-out samples with
CLIP reranking (paper §3.6), the loss-curve and gap-map figures, and the sentences under the held-out NLL and the
conditioning gap (the measures themselves: ``lverse_core.evaluation.likelihood``). Kept here so the notebook stays
a sequence of short calls.
"""
from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch

from lverse_core.config import Config, data_source
from lverse_core.data.pixels import unit_from_signed
from lverse_core.evaluation import likelihood
from lverse_core.sampling.candidates import Decoder, caption_candidate_count, image_to_text, sampling_precision, \
    text_to_image


def clip_score_fns(scorer, decode: Decoder | None, grid: int,
                   images: torch.Tensor | Callable[[list[int]], torch.Tensor] | None = None, batch_size: int = 64):
    """Reranking scores: codes -> decoded image vs caption (text->image); image index -> image vs caption.

    ``images``: what captions are scored against, a tensor (P, 3, S, S) in [-1, 1] or a loader from a list of image
    indices to such a tensor (``generate.real_images``), which reads only the images of the pairs being scored. Both
    score at most ``batch_size`` pairs per CLIP call (and decode at most that many code maps at once), so memory does
    not grow with the number of images or candidates: at paper scale one call would otherwise hold 5,000 test images x
    64 candidates = 320,000 images.
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
        def pictures(owner: torch.Tensor) -> torch.Tensor:
            if torch.is_tensor(images):
                return images[owner]
            distinct, where = torch.unique(owner, return_inverse=True)  # each image read once per call
            return images(distinct.tolist())[where]

        def i2t(owner: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
            owner = owner.cpu()
            return torch.cat([scorer.score(pictures(owner[i:i + b]), texts[i:i + b]) for i in range(0, len(owner), b)])
    return t2i, i2t


def caption_frame(cfg: Config, generated: Sequence[dict], references: Sequence[Sequence[str]]) -> pd.DataFrame:
    """Captions as ``generate.generate_captions`` returns them -> a table (image_id, caption, untruncated,
    reference) with ``correct`` (every object's size, colour and shape named) on the embedded data."""
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} captions but {len(references)} reference lists")
    df = pd.DataFrame({"image_id": [int(g["image_id"]) for g in generated],
                       "caption": [g["caption"] for g in generated],
                       "untruncated": [g["caption_untruncated"] for g in generated],
                       "reference": [r[0] for r in references]})
    if data_source(cfg).ground_truth:
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
                            top_k=s.top_k, top_p=s.top_p, likelihood_weight=s.image_likelihood_weight)
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


GAP_VERDICTS = {"used": "the condition is used", "barely": "the condition barely helps",
                "none": "the condition does not help"}


def gap_verdict(gap_nats: float, ref_nll: float) -> str:
    """``used`` (the condition lowers the NLL by more than 5% of the [REF] NLL), ``barely`` (by less) or ``none``."""
    return "used" if gap_nats > 0.05 * ref_nll else "barely" if gap_nats > 0 else "none"


def conditioning_gap(nll: pd.DataFrame) -> dict:
    """``likelihood.conditioning_gap`` of ``heldout_nll``'s table with each modality's ``verdict``
    (``gap_verdict``), and a sentence built from those numbers (no claim typed in advance)."""
    out = likelihood.conditioning_gap(nll)
    parts = []
    for modality in ("image", "text"):
        ref, gen, gap = out[modality]["ref_nll"], out[modality]["gen_nll"], out[modality]["gap_nats"]
        given = "the caption" if modality == "image" else "the image"
        out[modality]["verdict"] = gap_verdict(gap, ref)
        verdict = GAP_VERDICTS[out[modality]["verdict"]]
        parts.append(f"{modality} tokens: {gen:.3f} nats/token given {given} ([GEN]) vs {ref:.3f} with nothing before "
                     f"them ([REF]), {gap:+.3f} nats ({100 * gap / ref:+.1f}%): {verdict}")
    out["sentence"] = "; ".join(parts) + "."
    return out


def gap_by_region(gaps: torch.Tensor, owner: torch.Tensor, n_images: int, cells: torch.Tensor | None = None) -> dict:
    """``likelihood.gap_by_region`` and a sentence built from its numbers and intervals."""
    out = likelihood.gap_by_region(gaps, owner, n_images, cells)
    a = out["all"]
    sentence = (f"the caption lowers the NLL of image tokens by {a['mean']:.3f} nats/token on average (95% "
                f"interval {a['ci95'][0]:.3f} to {a['ci95'][1]:.3f} over {a['n_images']} images; "
                f"{out['per_image_total']['mean']:.1f} nats per image)")
    if "object" in out:
        o, b = out["object"], out["background"]
        sentence += (f": {o['mean']:.3f} [{o['ci95'][0]:.3f}, {o['ci95'][1]:.3f}] on the "
                     f"{100 * out['object_cell_share']:.0f}% of cells that an object touches vs {b['mean']:.3f} "
                     f"[{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}] on background cells")
    return {**out, "sentence": sentence}


def gap_map_figure(images: torch.Tensor, maps: torch.Tensor, captions: Sequence[str]):
    """Test images (k, 3, S, S) in [-1, 1] beside their per-cell caption gap (k, g, g) in nats, one column each."""
    import textwrap

    import matplotlib.pyplot as plt

    k = len(images)
    lim = max(float(maps.abs().max()), 1e-6)
    fig, axes = plt.subplots(2, k, figsize=(2.2 * k, 4.8), squeeze=False)
    for j in range(k):
        axes[0, j].imshow(unit_from_signed(images[j]).permute(1, 2, 0).numpy())
        axes[0, j].set_title(textwrap.fill(captions[j], 28), fontsize=7)
        im = axes[1, j].imshow(maps[j].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
        for ax in axes[:, j]:
            ax.set_xticks([]), ax.set_yticks([])
    axes[1, 0].set_ylabel("NLL [REF] - [GEN]\n(nats per code)", fontsize=8)
    fig.colorbar(im, ax=axes[1, :].tolist(), shrink=0.8)
    return fig


# -- look inside BiART (notebook 02) ----------------------------------------------------------------------------------
def layout_table(model, tokenizer, direction: str, text: torch.Tensor, codes: torch.Tensor) -> pd.DataFrame:
    """One training sequence of ``direction`` token by token (paper §3.4): what the token is, its position id (text
    and image count from 0 separately), its segment ([REF] condition / [GEN] target), and whether the model is
    trained to predict it and in which loss part. ``text`` (L,) ids, ``codes`` (N,) or (g, g) image codes."""
    from lverse_core.models.biart import GEN

    lay = model.layout(direction)  # checks the direction
    seq = model.build_sequence(text.reshape(1, -1), codes.reshape(1, -1), direction)[0].tolist()
    V_t = model.args.text_vocab
    targets = {int(j) + 1: "text" for j in lay["text_out"]} | {int(j) + 1: "image" for j in lay["image_out"]}
    rows = []
    for j, tid in enumerate(seq):
        if tid == model.soc_id:
            kind, token = "start", "[SOC]"
        elif tid == model.soi_id:
            kind, token = "start", "[SOI]"
        elif tid < V_t:
            kind, token = "text", repr(tokenizer.token_text(tid))
        else:
            kind, token = "image", f"code {tid - V_t}"
        seg = "[GEN]" if int(lay["seg"][j]) == GEN else "[REF]"
        part = targets.get(j)
        if part is None:
            loss = "no (nothing predicts it)" if j == 0 else "no (the first token of a part is given)"
        elif part == "text" and tid == tokenizer.pad_id:
            loss = "no ([PAD] targets are excluded)"
        else:
            loss = f"yes, {seg} NLL"
        rows.append({"index": j, "token": token, "kind": kind, "position id": int(lay["pos"][j]), "segment": seg,
                     "trained to predict it": loss})
    return pd.DataFrame(rows)


def condense(table: pd.DataFrame, head: int = 2, tail: int = 1) -> pd.DataFrame:
    """The first ``head`` and last ``tail`` rows of every run of rows with the same kind, segment and loss role,
    with one '…' row for what is left out: a 90-token sequence read at a glance."""
    key = table[["kind", "segment", "trained to predict it"]].astype(str).agg("|".join, axis=1)
    run = (key != key.shift()).cumsum()
    parts = []
    for _, g in table.groupby(run, sort=False):
        if len(g) <= head + tail + 1:
            parts.append(g)
            continue
        gap = pd.DataFrame([{c: "…" for c in table.columns}])
        gap["token"] = f"… {len(g) - head - tail} more"
        parts += [g.iloc[:head], gap, g.iloc[-tail:]]
    return pd.concat(parts, ignore_index=True)


def layout_counts(table: pd.DataFrame) -> dict:
    """``layout_table``'s counts: {"tokens", "ref": trained as [REF], "gen": trained as [GEN], "pad": [PAD] positions
    left out of the loss, "first": the kind of the part that comes first (the condition)}."""
    trained = table["trained to predict it"].str.startswith("yes")
    by = table[trained].groupby("segment").size().to_dict()
    return {"tokens": len(table), "ref": int(by.get("[REF]", 0)), "gen": int(by.get("[GEN]", 0)),
            "pad": int(table["trained to predict it"].str.contains("PAD").sum()),
            "first": table.loc[table.kind != "start", "kind"].iloc[0]}


def layout_sentence(table: pd.DataFrame, direction: str) -> str:
    """``layout_counts`` in words."""
    c = layout_counts(table)
    return (f"{direction}: {c['tokens']} tokens; the {c['first']} comes first as [REF]. {c['ref']} tokens are "
            f"trained as [REF] and {c['gen']} as [GEN]; {c['pad']} [PAD] positions are not trained. Position "
            f"ids restart at 0 for the second part, so only the segment embedding and the start token tell the model "
            f"which part it is in.")


def candidates_figure(images: torch.Tensor, scores: torch.Tensor, chosen: int, caption: str,
                      ranking: torch.Tensor | None = None, per_row: int = 8):
    """Every candidate image drawn for one caption (``per_row`` to a row) with its CLIP score (and, when the
    reranking adds BiART's likelihood, its ranking score); the kept one framed."""
    import matplotlib.pyplot as plt

    n = len(images)
    cols = min(n, per_row)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.75 * rows + 0.35), squeeze=False)
    for c, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if c >= n:
            ax.axis("off")
            continue
        ax.imshow(unit_from_signed(images[c]).permute(1, 2, 0).numpy())
        title = f"{float(scores[c]):.1f}" + (f" | {float(ranking[c]):+.1f}" if ranking is not None else "")
        ax.set_title(f"{'kept ' if c == chosen else ''}{title}", fontsize=7,
                     fontweight="bold" if c == chosen else "normal")
        for side in ax.spines.values():
            side.set_linewidth(3 if c == chosen else 0.5)
            side.set_edgecolor("crimson" if c == chosen else "grey")
    what = "clip-score | ranking score" if ranking is not None else "clip-score"
    fig.suptitle(f"{n} candidates for {caption!r} (title: {what})", fontsize=9)
    fig.tight_layout()
    return fig


def t2i_candidates(cfg: Config, model, tokenizer, caption: str, score_fn, decode, seed: int = 0) -> dict:
    """All ``sampling.n_candidates`` images drawn for one caption, their CLIP scores, the ranking score (the CLIP
    scores, or with ``sampling.image_likelihood_weight`` > 0 ``candidates.rerank_scores``) and the one kept."""
    s = cfg.sampling
    device = next(model.parameters()).device
    with sampling_precision(model):
        out = text_to_image(model, tokenizer.encode([caption]).to(device), [caption], n_candidates=s.n_candidates,
                            score_fn=score_fn, seed=seed, batch_size=s.batch_size, temperature=s.temperature,
                            top_k=s.top_k, top_p=s.top_p, keep_candidates=True,
                            likelihood_weight=s.image_likelihood_weight)
    g = cfg.image_grid
    codes = out["candidates"][0, 0].view(-1, g, g)
    return {"images": decode(codes).cpu(), "scores": out["scores"][0, 0].cpu(),
            "ranking": out["ranking"][0, 0].cpu(), "chosen": int(out["chosen"][0, 0])}


def i2t_candidates(cfg: Config, model, tokenizer, codes: torch.Tensor, image_id: int, score_fn, seed: int = 0
                   ) -> pd.DataFrame:
    """All captions sampled for one image (``codes`` (1, g, g); ``sampling.caption_candidates``, or
    ``n_candidates``), truncated at the first full stop, with their CLIP scores (and the combined ranking score when
    ``sampling.caption_likelihood_weight`` > 0), which one is kept, and (embedded data) whether it names every
    object."""
    s = cfg.sampling
    with sampling_precision(model):
        out = image_to_text(model, tokenizer, codes, n_candidates=caption_candidate_count(s),
                            n_tokens=s.caption_tokens, score_fn=score_fn, seed=seed, batch_size=s.batch_size,
                            temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, keep_candidates=True,
                            likelihood_weight=s.caption_likelihood_weight)
    ranking = out["ranking"][0]
    df = pd.DataFrame({"candidate": out["candidates"][0], "clip-score": out["scores"][0].tolist()})
    if s.caption_likelihood_weight > 0:
        df["ranking score"] = ranking.tolist()
    df["kept"] = ["yes" if i == int(ranking.argmax()) else "" for i in range(len(df))]
    if data_source(cfg).ground_truth:
        from lverse_core.data.loaders import load_attributes
        from lverse_core.data.shapes import caption_correct

        objects = load_attributes(cfg)[int(image_id)]
        df["names every object"] = [caption_correct(c, objects) for c in df["candidate"]]
    return df


def reranking_outcome(scores: Sequence[float], correct: Sequence[bool] | None = None) -> dict:
    """What reranking did for one prompt: {"kept": the highest-scoring candidate, "low", "high": the scores' range,
    "n": candidates, and where ``correct`` is known "n_right" and "kept_right"}."""
    scores = list(map(float, scores))
    best = max(range(len(scores)), key=scores.__getitem__)
    out = {"kept": best, "low": min(scores), "high": max(scores), "n": len(scores)}
    if correct is not None:
        out.update(n_right=sum(bool(c) for c in correct), kept_right=bool(correct[best]))
    return out


def reranking_sentence(scores: Sequence[float], correct: Sequence[bool] | None = None,
                       criterion: str = "naming every object") -> str:
    """``reranking_outcome`` in words (``correct`` judged by ``criterion``)."""
    o = reranking_outcome(scores, correct)
    text = f"{o['n']} candidates scored {o['low']:.1f} to {o['high']:.1f}; the highest, candidate {o['kept']}, was kept"
    if correct is not None:
        text += (f". {o['n_right']} of {o['n']} candidates are right ({criterion}); the kept one is "
                 f"{'right' if o['kept_right'] else 'not'}")
        if o["n_right"] and not o["kept_right"]:
            text += " (the reranker preferred a wrong one here)"
    return text + "."
