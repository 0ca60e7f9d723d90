"""BiART's held-out likelihood and what the condition is worth (paper §3.4; notebook 02).

``heldout_pass`` scores held-out (caption, image codes) pairs by teacher forcing in both directions: the NLL per
direction and part ([REF] condition, [GEN] target) and, per pair and image token, the NLL with nothing before the
token ([REF], image->text) minus its NLL after the caption ([GEN], text->image). ``conditioning_gap`` reads the first
per modality; ``gap_by_region`` averages the second per image and puts a Student-t interval over images
(``statistics.t_interval``) on the mean, over all cells and, with object boxes, over object and background cells.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from lverse_core.evaluation.statistics import t_interval


@torch.no_grad()
def heldout_pass(model, pairs, device, batch_size: int = 256) -> tuple[pd.DataFrame, torch.Tensor]:
    """Teacher-forced NLL of held-out (caption, image codes) pairs, in one forward pass per direction and batch:
    ``(heldout_nll's table, image_token_gaps's (M, N) tensor)``. At paper size each pass over the pairs is a
    621M-parameter forward of 1,088 tokens per sequence, so both results come from the same logits."""
    import torch.nn.functional as F

    from lverse_core.models.biart import I2T, T2I

    model.eval()
    sums = {(d, p): 0.0 for d in (T2I, I2T) for p in ("ref", "gen")}
    tokens = {"text": 0, "image": 0}
    n = len(pairs.text)
    if n == 0:
        raise ValueError("the held-out NLL needs at least one caption-image pair")

    def modality(d: str, p: str) -> str:
        return "text" if (p == "ref") == (d == T2I) else "image"

    gaps = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            text, image = pairs.batch(list(range(start, min(n, start + batch_size))), device)
            scored = text != model.args.pad_id  # [PAD] is not scored
            tokens["text"] += int(scored.sum())
            tokens["image"] += image.numel()
            image_nll = {}
            for d in (T2I, I2T):
                text_logits, image_logits = model.logits(text, image, d)
                text_nll = F.cross_entropy(text_logits.float().transpose(1, 2), text.long(), reduction="none")
                image_nll[d] = F.cross_entropy(image_logits.float().transpose(1, 2), image.long(), reduction="none")
                part_sum = {"text": float(text_nll[scored].sum()), "image": float(image_nll[d].sum())}
                for p in ("ref", "gen"):
                    sums[(d, p)] += part_sum[modality(d, p)]
            gaps.append((image_nll[I2T] - image_nll[T2I]).float().cpu())
    rows = [{"direction": "text->image" if d == T2I else "image->text", "part": f"[{p.upper()}]",
             "modality": modality(d, p), "nll": s / tokens[modality(d, p)]} for (d, p), s in sums.items()]
    return pd.DataFrame(rows), torch.cat(gaps)


def heldout_nll(model, pairs, device, batch_size: int = 256) -> pd.DataFrame:
    """Teacher-forced NLL (nats/token) of held-out (caption, image codes) pairs, per direction and part.

    One row per (direction, part): ``modality`` says which tokens the part holds. In text->image the image tokens
    are [GEN] (conditioned on the caption); in image->text they are [REF] (nothing before them). The same holds
    for text the other way round, so comparing the two rows of one modality measures what the condition buys.
    (``heldout_pass`` gives this table and ``image_token_gaps`` from one pass.)
    """
    return heldout_pass(model, pairs, device, batch_size)[0]


@torch.no_grad()
def heldout_nll_per_pair(model, pairs, device, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Teacher-forced NLL of each held-out pair's *target* (nats per target token): ``{"t2i": (M,), "i2t": (M,)}``,
    the image tokens given the caption and the caption's tokens ([PAD] not scored) given the image: the [GEN] rows
    of ``heldout_nll`` kept per pair, so a comparison of two models can pair them item by item. The image entries
    average to ``heldout_nll``'s text->image [GEN] value; the text entries, weighted by each caption's token count,
    to its image->text [GEN] value."""
    import torch.nn.functional as F
    from lverse_core.models.biart import I2T, T2I

    model.eval()
    n = len(pairs.text)
    if n == 0:
        raise ValueError("the held-out NLL needs at least one caption-image pair")
    out: dict[str, list[torch.Tensor]] = {T2I: [], I2T: []}
    for start in range(0, n, batch_size):
        text, image = pairs.batch(list(range(start, min(n, start + batch_size))), device)
        scored = (text != model.args.pad_id).float()
        _, image_logits = model.logits(text, image, T2I)
        image_nll = F.cross_entropy(image_logits.float().transpose(1, 2), image.long(), reduction="none")
        out[T2I].append(image_nll.mean(1).cpu())
        text_logits, _ = model.logits(text, image, I2T)
        text_nll = F.cross_entropy(text_logits.float().transpose(1, 2), text.long(), reduction="none")
        out[I2T].append(((text_nll * scored).sum(1) / scored.sum(1).clamp(min=1)).cpu())
    return {d: torch.cat(v).double() for d, v in out.items()}


def conditioning_gap(nll: pd.DataFrame) -> dict:
    """What the condition is worth, per modality, from ``heldout_nll``: NLL as [REF] minus NLL as [GEN].

    A model that learned to use the caption predicts image tokens better in text->image ([GEN]) than with no
    caption in image->text ([REF]); likewise for text given the image. Returns, for "image" and "text": ``ref_nll``,
    ``gen_nll``, ``gap_nats`` and ``gap_fraction`` (the gap over the [REF] NLL).
    """
    out = {}
    for modality in ("image", "text"):
        sub = nll[nll["modality"] == modality].set_index("part")["nll"]
        ref, gen = float(sub["[REF]"]), float(sub["[GEN]"])
        gap = ref - gen
        out[modality] = {"ref_nll": ref, "gen_nll": gen, "gap_nats": gap, "gap_fraction": gap / ref if ref else 0.0}
    return out


def image_token_gaps(model, pairs, device, batch_size: int = 256) -> torch.Tensor:
    """What each caption tells BiART about each image token: (M, N) nats, one row per held-out pair.

    Entry (m, j) is the NLL of image token j of pair m with nothing before it (image->text, [REF]) minus its NLL
    after the caption (text->image, [GEN]); positive where the caption made the token more predictable. Its mean is
    the image gap of ``conditioning_gap(heldout_nll(...))`` (``heldout_pass`` gives both from one pass).
    """
    return heldout_pass(model, pairs, device, batch_size)[1]


def object_cells(objects: Sequence[dict], image_size: int, grid: int) -> torch.Tensor:
    """(grid * grid,) bool, row-major like the codes: the code cells whose square overlaps an object's box."""
    cell = image_size / grid
    mask = torch.zeros(grid, grid, dtype=torch.bool)
    for o in objects:
        x0, y0, x1, y1 = o["bbox"]
        c0, c1 = int(x0 // cell), min(int(-(-x1 // cell)), grid)  # ceil
        r0, r1 = int(y0 // cell), min(int(-(-y1 // cell)), grid)
        mask[max(r0, 0):r1, max(c0, 0):c1] = True
    return mask.flatten()


def mean_over_images(per_image: torch.Tensor, level: float = 0.95) -> dict:
    """``{"mean", "ci95", "n_images"}``: the mean of per-image values (NaN entries, images without the region, left
    out) and its Student-t interval (``statistics.t_interval``) as ``[low, high]``."""
    v = per_image.double()
    v = v[~torch.isnan(v)]
    if len(v) < 2:
        raise ValueError(f"need at least 2 images to put an interval on a mean, got {len(v)}")
    iv = t_interval(v.tolist(), level)
    return {"mean": iv.estimate, "ci95": list(iv.bounds), "n_images": iv.n}


def per_image_gaps(gaps: torch.Tensor, owner: torch.Tensor, n_images: int) -> torch.Tensor:
    """(n_images, N): each image's ``image_token_gaps`` rows averaged over its captions (NaN for an image with none)."""
    if gaps.shape[0] != owner.shape[0]:
        raise ValueError(f"{gaps.shape[0]} gap rows but {owner.shape[0]} owners: one gap row per caption-image pair")
    total = torch.zeros(n_images, gaps.shape[1]).index_add_(0, owner, gaps.float())
    count = torch.zeros(n_images).index_add_(0, owner, torch.ones(len(owner)))
    return total / count[:, None]  # 0/0 = NaN where an image has no caption


def gap_by_region(gaps: torch.Tensor, owner: torch.Tensor, n_images: int, cells: torch.Tensor | None = None) -> dict:
    """How clearly, and where, the caption helps: per-image means of the per-token gap with 95% intervals
    (``mean_over_images``).

    ``gaps`` (M, N) from ``image_token_gaps``; ``owner`` (M,) the image of each pair (0 .. n_images - 1). Each image's
    gaps are first averaged over its captions. ``all``: the mean gap per token; ``per_image_total``: its sum over the
    N tokens (nats per image). With ``cells`` (n_images, N) bool from ``object_cells`` (embedded data only), also the
    mean over the cells an object touches (``object``), over the others (``background``) and the share of cells an
    object touches (``object_cell_share``).
    """
    if cells is not None and cells.shape != (n_images, gaps.shape[1]):
        raise ValueError(f"cells {tuple(cells.shape)} do not line up with {n_images} images x {gaps.shape[1]} image "
                         "tokens: one row per image, one column per code")
    per_image = per_image_gaps(gaps, owner, n_images)
    seen = ~torch.isnan(per_image[:, 0])
    per_image = per_image[seen]
    out = {"all": mean_over_images(per_image.mean(1)), "per_image_total": mean_over_images(per_image.sum(1))}
    if cells is None:
        return out
    cells = cells[seen]
    n_obj, n_bg = cells.sum(1), (~cells).sum(1)
    obj = torch.where(n_obj > 0, (per_image * cells).sum(1) / n_obj.clamp(min=1), float("nan"))
    bg = torch.where(n_bg > 0, (per_image * ~cells).sum(1) / n_bg.clamp(min=1), float("nan"))
    out.update(object=mean_over_images(obj), background=mean_over_images(bg),
               object_cell_share=float(cells.float().mean()))
    return out
