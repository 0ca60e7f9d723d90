"""Reconstruction evaluation of AugVAE (paper §4.1, Table 1, Figures 3 and 5): PSNR, SSIM, FID, code usage.

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
from torch.utils.data import Subset

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


def split_size(cfg: Config, split: str = "test") -> int:
    """Number of images in ``split`` (as ``split_images`` sees them)."""
    from lverse_core.data.loaders import image_dataset

    return len(image_dataset(cfg, split, train=False))


def evenly_spaced(total: int, n: int | None = None) -> list[int]:
    """``n`` indices (all ``total`` if None, at most ``total``) spread evenly over range(total), first and last kept.

    Evenly spaced, not the first ``n``: an ImageFolder (ImageNet val on the paper profile) is sorted by class.
    """
    n = total if n is None else min(n, total)
    return torch.linspace(0, total - 1, n).round().long().tolist() if n > 1 else [0]


def split_subset(cfg: Config, split: str = "test", n: int | None = None) -> Subset:
    """A view of ``n`` images of ``split`` spread evenly over it (``evenly_spaced``), read only when indexed:
    (image (3, S, S) in [-1, 1], label) items, the eval transform."""
    from lverse_core.data.loaders import image_dataset

    ds = image_dataset(cfg, split, train=False)
    return Subset(ds, evenly_spaced(len(ds), n))


def split_images(cfg: Config, split: str = "test", n: int | None = None) -> torch.Tensor:
    """``n`` images of ``split`` spread evenly over it (eval transform), (N, 3, S, S) in [-1, 1], all in memory:
    for the few images a figure needs; ``evaluate_reconstructions`` on ``split_subset`` streams a whole split."""
    sub = split_subset(cfg, split, n)
    return torch.stack([sub[i][0] for i in range(len(sub))])


def usage_from_counts(counts: torch.Tensor) -> dict[str, float]:
    """Distinct codes used, their fraction of the codebook, and the perplexity of a code histogram (K,)."""
    counts = counts.double()
    p = counts / counts.sum()
    return {"codes_used": int((counts > 0).sum()), "fraction_used": float((counts > 0).double().mean()),
            "perplexity": math.exp(float(-(p[p > 0] * p[p > 0].log()).sum()))}


def code_usage(codes: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """``usage_from_counts`` of the histogram of ``codes`` (any shape) over a codebook of ``codebook_size``."""
    return usage_from_counts(torch.bincount(codes.reshape(-1).long(), minlength=codebook_size))


def usage_table(models: dict[str, Any], images: torch.Tensor) -> pd.DataFrame:
    """Per-level code usage on held-out images for each model ({label: model}); ML rows also give the union."""
    rows = []
    for label, model in models.items():
        K = model.quantizer.codebook_size
        _, codes = reconstruct(model, images)
        levels = codes if isinstance(codes, list) else [codes]
        names = [f"level {k} ({c.shape[1]}x{c.shape[2]})" for k, c in enumerate(levels)] if len(levels) > 1 \
            else [f"SL ({levels[0].shape[1]}x{levels[0].shape[2]})"]
        for name, c in zip(names, levels):
            rows.append({"model": label, "map": name, **code_usage(c, K)})
        if len(levels) > 1:
            rows.append({"model": label, "map": "all levels (shared codebook)",
                         **code_usage(torch.cat([c.reshape(-1) for c in levels]), K)})
    return pd.DataFrame(rows)


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


def table1(cfg: Config, ours: dict[str, dict[str, Any]], descriptions: dict[str, str]) -> pd.DataFrame:
    """Paper Table 1 rows beside ours. ``ours``: {model: evaluate_reconstruction(...)}; every row has a source."""
    from lverse_core.evaluation.fid import fid_label
    from lverse_core.report import provenance, reference_table

    ref = reference_table("table1_reconstruction_fid")
    fid_col = fid_label(cfg)
    paper = pd.DataFrame({
        "model": ref["model"], "latent maps": ref["codebook_size_N"], "codebook d_Z": ref["d_Z"],
        "rFID, paper (Inception, ImageNet val)": ref["rFID_imagenet_val"], fid_col: np.nan,
        "PSNR dB": np.nan, "SSIM": np.nan, "what it is": "", "source": ref["source"]})
    g, K = cfg.image_grid, cfg.augvae.codebook_size
    split = "held-out test split"
    rows = []
    for name, r in ours.items():
        maps = f"{g}x{g}" if name != "AugVAE-ML" else " / ".join(
            f"{cfg.data.image_size // 2 ** (len(cfg.augvae.ch_mult) - 1 + k)}" for k in range(cfg.augvae.n_levels))
        rows.append({"model": name, "latent maps": maps, "codebook d_Z": K,
                     "rFID, paper (Inception, ImageNet val)": np.nan, fid_col: r.get("fid", np.nan),
                     "PSNR dB": r["psnr_db"], "SSIM": r["ssim"], "what it is": descriptions.get(name, ""),
                     "source": f"{provenance(cfg)}, {split} ({r['n_images']} images)"})
    return pd.concat([paper, pd.DataFrame(rows)], ignore_index=True)


# -- figures ---------------------------------------------------------------------------------------------------

def training_log(cfg: Config, variant: str) -> pd.DataFrame:
    """The CSV training log of ``variant`` (ml | sl | baseline) written by ``augvae_train``."""
    path = cfg.runs_root / "logs" / f"augvae_{variant}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; train variant {variant!r} first")
    return pd.read_csv(path)


def logged_variants(cfg: Config, variants=("ml", "sl")) -> list[str]:
    """The ``variants`` trained here, i.e. with a training log: a checkpoint converted from official weights
    (``python -m lverse_core convert-official``) has none."""
    return [v for v in variants if (cfg.runs_root / "logs" / f"augvae_{v}.csv").exists()]


def training_curves_figure(cfg: Config, variants=("ml", "sl")):
    """Left: training PSNR per step of each variant. Right: per-level code perplexity of each batch."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    offset = 0
    for v in variants:
        log = training_log(cfg, v)
        # the SL finetune continues after ML: plot it on the same step axis
        x = log["step"] + (offset if v == "sl" else 0)
        a.plot(x, log["psnr"], label=f"{v} (train batch PSNR)")
        for col in [c for c in log.columns if c.startswith("perplexity_l")]:
            b.plot(x, log[col], label=f"{v} {col.replace('perplexity_', 'level ')}")
        if v == "ml":
            offset = int(log["step"].max())
    a.set(xlabel="optimizer step", ylabel="PSNR (dB)", title="Reconstruction during training")
    b.set(xlabel="optimizer step", ylabel="perplexity of codes in a batch", title="Codebook usage per level",
          yscale="log")
    a.legend(fontsize=8)
    b.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def recon_grid_figure(rows: dict[str, torch.Tensor], n: int = 8):
    """Rows of images (label -> (N, 3, H, W) in [-1, 1]), first ``n`` columns: paper Figure 3's layout."""
    import matplotlib.pyplot as plt

    n = min(n, min(len(v) for v in rows.values()))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n, 1.4 * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(unit_from_signed(imgs[c]).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.suptitle("Reconstructions through the codes (rows: input, then each model)", fontsize=9)
    fig.tight_layout()
    return fig


def ood_figure(names: list[str], images: torch.Tensor, recon: torch.Tensor):
    """Out-of-domain photographs (top) and their AugVAE-SL reconstructions with PSNR (bottom): paper Figure 5."""
    import matplotlib.pyplot as plt

    p = psnr(images, recon)
    n = len(names)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
    for c in range(n):
        for r, img in enumerate((images[c], recon[c])):
            axes[r][c].imshow(unit_from_signed(img).permute(1, 2, 0).numpy())
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
        axes[0][c].set_title(names[c], fontsize=7)
        axes[1][c].set_title(f"{float(p[c]):.1f} dB", fontsize=7)
    axes[0][0].set_ylabel("input", fontsize=8)
    axes[1][0].set_ylabel("AugVAE-SL", fontsize=8)
    fig.tight_layout()
    return fig


def claim_verdict(augmented: dict[str, Any], plain: dict[str, Any]) -> str:
    """One plain sentence on the paper's central claim from two ``evaluate_reconstruction`` results."""
    d_psnr = augmented["psnr_db"] - plain["psnr_db"]
    parts = [f"PSNR {augmented['psnr_db']:.2f} vs {plain['psnr_db']:.2f} dB ({d_psnr:+.2f})",
             f"SSIM {augmented['ssim']:.3f} vs {plain['ssim']:.3f}"]
    better = [d_psnr > 0, augmented["ssim"] > plain["ssim"]]
    if "fid" in augmented and "fid" in plain:
        parts.append(f"FID {augmented['fid']:.2f} vs {plain['fid']:.2f} (lower is better)")
        better.append(augmented["fid"] < plain["fid"])
    if all(better):
        outcome = "supports the claim: AugVAE-SL beats the plain VQ-VAE on every metric"
    elif not any(better):
        outcome = "contradicts the claim: the plain VQ-VAE beats AugVAE-SL on every metric"
    else:
        outcome = "is mixed: neither model wins on every metric"
    return f"On this run the comparison {outcome}. AugVAE-SL vs plain VQ-VAE: " + "; ".join(parts) + "."


# -- look inside AugVAE (notebook 01) ---------------------------------------------------------------------------------
def code_colours(codes: torch.Tensor) -> np.ndarray:
    """An RGB colour per code id, the same for a code wherever it appears (golden-ratio hues): (..., 3) in [0, 1]."""
    import colorsys

    ids = codes.long().numpy()
    hue = (ids * 0.6180339887) % 1.0
    light = 0.45 + 0.25 * ((ids * 7) % 3) / 2  # three lightness steps separate neighbouring hues
    flat = [colorsys.hls_to_rgb(h, l, 0.75) for h, l in zip(hue.reshape(-1), light.reshape(-1))]
    return np.asarray(flat, dtype=np.float32).reshape(*ids.shape, 3)


def code_maps_figure(image: torch.Tensor, maps: dict[str, torch.Tensor], annotate_up_to: int = 8):
    """One image and its code maps ({label: (h, w) long}), each code drawn in its own colour (``code_colours``):
    a colour that recurs across panels is one codebook entry serving several maps. Maps no larger than
    ``annotate_up_to`` on a side also print the code ids."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(2.3 * (len(maps) + 1), 2.6))
    axes[0].imshow(unit_from_signed(image).permute(1, 2, 0).numpy())
    axes[0].set_title(f"input ({image.shape[-1]} px)", fontsize=9)
    for ax, (label, m) in zip(axes[1:], maps.items()):
        ax.imshow(code_colours(m), interpolation="nearest")
        h, w = m.shape
        ax.set_title(f"{label}\n{h}x{w}, {len(torch.unique(m))} distinct codes", fontsize=9)
        if max(h, w) <= annotate_up_to:
            for (r, c), v in np.ndenumerate(m.numpy()):
                ax.text(c, r, str(v), ha="center", va="center", fontsize=5 if max(h, w) > 4 else 7, color="black")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("One image through the shared codebook: colour = code id (same colour, same codebook entry)",
                 fontsize=10)
    fig.tight_layout()
    return fig


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


def sharing_sentence(s: dict[str, Any]) -> str:
    per = ", ".join(f"{n.split(' (')[0]} {u}" for n, u in zip(s["levels"], s["per_level"]))
    share = s["shared_by_2_or_more"] / max(s["union"], 1)
    verdict = ("most entries serve more than one level" if share > 0.5 else
               "the levels mostly use their own entries: the codebook is shared in principle, partitioned in practice"
               if share < 0.2 else "a minority of entries serve more than one level")
    return (f"Codes used per level: {per}; {s['union']} of {s['codebook_size']} entries in all, "
            f"{s['shared_by_2_or_more']} ({share:.0%}) used by two or more levels and {s['shared_by_all']} by all: "
            f"{verdict}.")


def shared_code_figure(matrix: pd.DataFrame):
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(1.2 * len(matrix) + 2.5, 1.0 * len(matrix) + 1.5))
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", cbar_kws={"label": "codebook entries"}, ax=ax)
    ax.set(title="Codebook entries used by both levels (diagonal: by the level)", xlabel="level", ylabel="level")
    fig.tight_layout()
    return fig


def _module_group(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] in ("encoders", "decoders", "connectors") else parts[0]


def ml_to_sl_diff(ml, sl) -> pd.DataFrame:
    """What the ML -> SL surgery (``AugVAE.ml_to_sl``, paper §3.3) did, per module: dropped (ML only), added (SL
    only: the 1x1 connectors), kept (copied from ML), with their weights (parameters and float buffers such as the
    EMA codebook); for kept modules, how far SL fine-tuning moved the weights
    (relative L2 change of the parameters and EMA codebook, ||w_SL - w_ML|| / ||w_ML||)."""
    a, b = ml.state_dict(), sl.state_dict()
    rows: dict[str, dict[str, Any]] = {}
    for key in sorted(set(a) | set(b)):
        g = rows.setdefault(_module_group(key), {"module": _module_group(key), "ML weights": 0,
                                                  "SL weights": 0, "diff2": 0.0, "norm2": 0.0})
        if key in a and a[key].is_floating_point():
            g["ML weights"] += a[key].numel()
        if key in b and b[key].is_floating_point():
            g["SL weights"] += b[key].numel()
        if key in a and key in b and a[key].is_floating_point():
            g["diff2"] += float((b[key].float() - a[key].float()).pow(2).sum())
            g["norm2"] += float(a[key].float().pow(2).sum())
    out = []
    for g in rows.values():
        status = "kept" if g["ML weights"] and g["SL weights"] else (
            "dropped" if g["ML weights"] else "added")
        change = math.sqrt(g["diff2"] / g["norm2"]) if status == "kept" and g["norm2"] > 0 else float("nan")
        out.append({"module": g["module"], "status": status, "ML weights": g["ML weights"],
                    "SL weights": g["SL weights"], "relative change in SL fine-tuning": change})
    order = {"encoders": 0, "quant_conv": 1, "quantizer": 2, "post_quant_conv": 3, "connectors": 4, "decoders": 5}
    return pd.DataFrame(out).sort_values("module", key=lambda s: s.map(
        lambda m: (order.get(m.split(".")[0], 9), m))).reset_index(drop=True)


def surgery_sentence(diff: pd.DataFrame) -> str:
    count = {s: (int((diff.status == s).sum()),
                 int(diff.loc[diff.status == s, "SL weights" if s == "added" else "ML weights"].sum()))
             for s in ("dropped", "added", "kept")}
    kept = diff[diff.status == "kept"].dropna(subset=["relative change in SL fine-tuning"])
    moved = kept.sort_values("relative change in SL fine-tuning", ascending=False)
    most = moved.iloc[0] if len(moved) else None
    least = moved.iloc[-1] if len(moved) else None
    parts = [f"{count['dropped'][0]} modules dropped ({count['dropped'][1]:,} weights: the deeper levels' encoders "
             f"and decoders)",
             f"{count['added'][0]} added ({count['added'][1]:,} weights: the 1x1 connectors that replace the "
             f"concatenations)",
             f"{count['kept'][0]} kept ({count['kept'][1]:,} weights copied from ML)"]
    text = "The surgery: " + "; ".join(parts) + "."
    if most is not None:
        text += (f" Fine-tuning moved the kept weights most in {most['module']} "
                 f"({most['relative change in SL fine-tuning']:.0%}) and least in {least['module']} "
                 f"({least['relative change in SL fine-tuning']:.0%}).")
    return text
