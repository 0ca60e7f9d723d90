"""Reconstruction measures of AugVAE (paper §4.1, Table 1, Figure 4): PSNR, SSIM, FID, code usage and sharing.

Every reconstruction goes through the discrete codes (``decode(encode(x))``), the path BiART's images take.
PSNR is 10 log10(1 / MSE) on images mapped to [0, 1]; SSIM is scikit-image's ``structural_similarity``
(Gaussian-free 7x7 window, per channel, data_range 1), averaged over the images. FID comes from
``lverse_core.evaluation.fid.FidAccumulator`` in the feature space the profile names (``fid_label``): on the embedded
profiles that is the kit's judge features, NOT Inception, and never comparable with the paper's numbers.

Table 1 at paper scale is 50,000 ImageNet val images: ``evaluate_reconstructions`` walks the images one batch at a
time, reconstructs it with every model and keeps only running sums (PSNR, SSIM, code counts, FID statistics) and the
first few images the figures show, so its memory does not grow with the number of images.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from lverse_core.config import Config
from lverse_core.data.pixels import signed_from_uint8, unit_from_signed


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of (N, 3, H, W) images in [-1, 1]."""
    mse = (unit_from_signed(x) - unit_from_signed(y)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def ssim(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-image SSIM of (N, 3, H, W) images in [-1, 1] (scikit-image, channel_axis, data_range 1)."""
    from skimage.metrics import structural_similarity

    a = unit_from_signed(x).permute(0, 2, 3, 1).numpy()
    b = unit_from_signed(y).permute(0, 2, 3, 1).numpy()
    win = min(7, a.shape[1] - (1 - a.shape[1] % 2))  # odd window no larger than the image
    return np.array([structural_similarity(p, q, channel_axis=2, data_range=1.0, win_size=win) for p, q in zip(a, b)])


@torch.no_grad()
def reconstruct(model, images: torch.Tensor, batch_size: int = 128) -> tuple[torch.Tensor, Any]:
    """(reconstructions in [-1, 1] through the codes, the codes) for (N, 3, H, W) images; FP32, eval mode."""
    model.eval()
    device = next(model.parameters()).device
    recons, codes = [], []
    for i in range(0, len(images), batch_size):
        c = model.encode(images[i: i + batch_size].to(device).float())
        recons.append(model.decode(c).cpu())
        codes.append([t.cpu() for t in c] if isinstance(c, list) else c.cpu())
    if isinstance(codes[0], list):
        codes = [torch.cat([c[k] for c in codes]) for k in range(len(codes[0]))]
    else:
        codes = torch.cat(codes)
    return torch.cat(recons), codes


def usage_from_counts(counts: torch.Tensor) -> dict[str, float]:
    """Distinct codes used, their fraction of the codebook, and the perplexity of a code histogram (K,)."""
    counts = counts.double()
    p = counts / counts.sum()
    return {"codes_used": int((counts > 0).sum()), "fraction_used": float((counts > 0).double().mean()),
            "perplexity": math.exp(float(-(p[p > 0] * p[p > 0].log()).sum()))}


def code_usage(codes: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """``usage_from_counts`` of the histogram of ``codes`` (any shape) over a codebook of ``codebook_size``."""
    return usage_from_counts(torch.bincount(codes.reshape(-1).long(), minlength=codebook_size))


class ReconstructionTotals:
    """Running sums of one model's Table 1 measures: PSNR and SSIM per image (float64) and the histogram of every
    code it used (all levels of an ML model together, as they share one codebook)."""

    def __init__(self, codebook_size: int):
        self.n, self.psnr_sum, self.ssim_sum = 0, 0.0, 0.0
        self.counts = torch.zeros(codebook_size, dtype=torch.long)

    def update(self, images: torch.Tensor, recon: torch.Tensor, codes) -> None:
        """Add a batch: images and reconstructions (B, 3, H, W) in [-1, 1] on the CPU, and their codes."""
        self.n += len(images)
        self.psnr_sum += float(psnr(images, recon).double().sum())
        self.ssim_sum += float(ssim(images, recon).astype(np.float64).sum())
        for c in (codes if isinstance(codes, list) else [codes]):
            self.counts += torch.bincount(c.reshape(-1).long().cpu(), minlength=len(self.counts))

    def result(self, fid: float | None = None) -> dict[str, Any]:
        """Means over the images, ``fid`` if given, and code usage (``usage_from_counts``)."""
        return {"psnr_db": self.psnr_sum / self.n, "ssim": self.ssim_sum / self.n, "n_images": self.n,
                **({} if fid is None else {"fid": fid}), **usage_from_counts(self.counts)}


def _stack_images(items: list) -> torch.Tensor:
    """DataLoader collate: the images of dataset items (tensors, (image, label) pairs or dicts with 'image')."""
    from lverse_core.evaluation.fid import _item_image

    return torch.stack([_item_image(it, "images") for it in items])


def _image_batches(images, batch_size: int, num_workers: int = 0):
    """Float batches (B, 3, H, W) in [-1, 1] of a tensor (N, 3, H, W) or of a Dataset (``_stack_images``), read one
    batch at a time (DataLoader workers for a Dataset); uint8 images are mapped to [-1, 1]."""
    from lverse_core.evaluation.fid import check_image_range

    for x in _raw_batches(images, batch_size, num_workers):
        check_image_range(x)
        yield signed_from_uint8(x)


def _raw_batches(images, batch_size: int, num_workers: int):
    """Batches of ``images`` as they are stored (see ``_image_batches``)."""
    from torch.utils.data import DataLoader

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if torch.is_tensor(images):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected a tensor of shape (N, 3, H, W), got {tuple(images.shape)}")
        yield from (images[i: i + batch_size] for i in range(0, len(images), batch_size))
        return
    yield from DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                          collate_fn=_stack_images)


class FirstImages:
    """The first ``keep`` images of each named stream of batches (the inputs, each model's reconstructions): what
    the figures show, kept while everything else streams past."""

    def __init__(self, keep: int):
        self.keep, self.parts = keep, {}

    def add(self, name: str, batch: torch.Tensor) -> None:
        have = sum(len(t) for t in self.parts.setdefault(name, []))
        if have < self.keep:
            self.parts[name].append(batch[: self.keep - have].detach().cpu().clone())

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: torch.cat(v) if v else torch.empty(0) for k, v in self.parts.items()}


def _reconstruct_batch(model, x: torch.Tensor):
    """(reconstructions in [-1, 1] on the model's device, codes) of a float batch: ``decode(encode(x))``."""
    codes = model.encode(x.to(next(model.parameters()).device))
    return model.decode(codes).float(), codes


@torch.no_grad()
def evaluate_reconstructions(cfg: Config, models: dict[str, Any], images, *, fid: bool = True, keep: int = 0,
                             batch_size: int = 64, cuda: bool | None = None, judge_path=None
                             ) -> tuple[dict[str, dict[str, Any]], dict[str, torch.Tensor]]:
    """Table 1 measures of every model ({label: model}) on ``images`` (a tensor (N, 3, H, W) in [-1, 1] or a Dataset
    such as ``split_subset``), in one pass of ``batch_size`` images: memory independent of N.

    Returns ({label: {psnr_db, ssim, n_images, fid (if ``fid``), codes_used, fraction_used, perplexity}},
    {"input": the first ``keep`` images, label: their reconstructions}) -- the second for the figures.
    The real side of FID is accumulated once and shared by all models; FP32, eval mode, through the codes.
    """
    if not models:
        raise ValueError("evaluate_reconstructions needs at least one model ({label: model})")
    acc = None
    if fid:
        from lverse_core.evaluation.fid import FidAccumulator

        acc = FidAccumulator(cfg, [0], cuda=cuda, judge_path=judge_path)
    totals = {name: ReconstructionTotals(m.quantizer.codebook_size) for name, m in models.items()}
    shown = FirstImages(keep)
    for m in models.values():
        m.eval()
    for x in _image_batches(images, batch_size, cfg.data.num_workers):
        shown.add("input", x)
        if acc is not None:
            acc.add("input", x)
        for name, model in models.items():
            recon, codes = _reconstruct_batch(model, x)
            if acc is not None:
                acc.add(f"reconstructed by {name}", recon)  # still on the model's device, where FID's extractor may be
            totals[name].update(x, recon.cpu(), codes)
            shown.add(name, recon)
    if next(iter(totals.values())).n == 0:
        raise ValueError("evaluate_reconstructions: no images to evaluate")
    results = {name: t.result(acc.fid("input", f"reconstructed by {name}") if acc is not None else None)
               for name, t in totals.items()}
    return results, shown.tensors()


def evaluate_reconstruction(cfg: Config, model, images, fid: bool = True) -> dict[str, Any]:
    """PSNR, SSIM (means), FID in the profile's feature space, and code usage (all levels) of one model on
    ``images`` (a tensor or a Dataset): ``evaluate_reconstructions`` for one model."""
    return evaluate_reconstructions(cfg, {"model": model}, images, fid=fid)[0]["model"]


def _entries_used(level_codes: list[torch.Tensor], codebook_size: int) -> torch.Tensor:
    """(levels, codebook_size) bool: which codebook entries each level's maps use."""
    return torch.stack([torch.bincount(c.reshape(-1).long(), minlength=codebook_size) > 0 for c in level_codes])


def shared_code_matrix(level_codes: list[torch.Tensor], codebook_size: int) -> pd.DataFrame:
    """Level x level counts of codebook entries used by both levels (diagonal: entries used by that level), from
    per-level code maps of the same images: how much the one codebook is really shared (paper Figure 4)."""
    used = _entries_used(level_codes, codebook_size)
    names = [f"level {k} ({c.shape[-2]}x{c.shape[-1]})" for k, c in enumerate(level_codes)]
    m = [[int((a & b).sum()) for b in used] for a in used]
    return pd.DataFrame(m, index=names, columns=names)


def sharing_summary(matrix: pd.DataFrame, level_codes: list[torch.Tensor], codebook_size: int) -> dict[str, Any]:
    """Numbers behind the sentence under the matrix: per-level use, the union, entries used by 2+ levels."""
    used = _entries_used(level_codes, codebook_size)
    per_code = used.sum(0)
    return {"codebook_size": codebook_size, "per_level": [int(x) for x in used.sum(1)],
            "union": int((per_code > 0).sum()), "shared_by_2_or_more": int((per_code >= 2).sum()),
            "shared_by_all": int((per_code == len(level_codes)).sum()),
            "levels": list(matrix.index)}
