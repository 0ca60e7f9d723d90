"""Reconstruction evaluation of AugVAE (paper §4.1, Table 1, Figures 3 and 5): PSNR, SSIM, FID, code usage.

Every reconstruction goes through the discrete codes (``decode(encode(x))``), the path BiART's images take.
PSNR is 10 log10(1 / MSE) on images mapped to [0, 1]; SSIM is scikit-image's ``structural_similarity``
(Gaussian-free 7x7 window, per channel, data_range 1), averaged over the images. FID comes from
``lverse_core.evaluation.fid.compute_fid`` in the feature space the profile names (``fid_label``): on the embedded profiles
that is the kit's judge features, NOT Inception, and never comparable with the paper's numbers.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from lverse_core.config import Config


def to_unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of (N, 3, H, W) images in [-1, 1]."""
    mse = (to_unit(x) - to_unit(y)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def ssim(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-image SSIM of (N, 3, H, W) images in [-1, 1] (scikit-image, channel_axis, data_range 1)."""
    from skimage.metrics import structural_similarity

    a = to_unit(x).permute(0, 2, 3, 1).numpy()
    b = to_unit(y).permute(0, 2, 3, 1).numpy()
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


def split_images(cfg: Config, split: str = "test", n: int | None = None) -> torch.Tensor:
    """``n`` images of ``split`` spread evenly over it (eval transform), (N, 3, S, S) in [-1, 1].

    Evenly spaced, not the first ``n``: an ImageFolder (ImageNet val on the paper profile) is sorted by class.
    """
    from lverse_core.data.loaders import image_dataset

    ds = image_dataset(cfg, split, train=False)
    n = len(ds) if n is None else min(n, len(ds))
    idx = torch.linspace(0, len(ds) - 1, n).round().long().tolist() if n > 1 else [0]
    return torch.stack([ds[i][0] for i in idx])


def code_usage(codes: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Distinct codes used, their fraction of the codebook, and the perplexity of the code histogram."""
    counts = torch.bincount(codes.reshape(-1).long(), minlength=codebook_size).float()
    p = counts / counts.sum()
    return {"codes_used": int((counts > 0).sum()), "fraction_used": float((counts > 0).float().mean()),
            "perplexity": math.exp(float(-(p[p > 0] * p[p > 0].log()).sum()))}


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


def evaluate_reconstruction(cfg: Config, model, images: torch.Tensor, fid: bool = True) -> dict[str, Any]:
    """PSNR, SSIM (means), FID in the profile's feature space, and SL/last-level code usage on ``images``."""
    recon, codes = reconstruct(model, images)
    out = {"psnr_db": float(psnr(images, recon).mean()), "ssim": float(ssim(images, recon).mean()),
           "n_images": len(images)}
    if fid:
        from lverse_core.evaluation.fid import compute_fid

        out["fid"] = compute_fid(images, recon, cfg)
    c = codes if torch.is_tensor(codes) else torch.cat([t.reshape(-1) for t in codes])
    out.update(code_usage(c, model.quantizer.codebook_size))
    return out


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
            ax.imshow(to_unit(imgs[c]).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=8)
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
            axes[r][c].imshow(to_unit(img).permute(1, 2, 0).numpy())
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
