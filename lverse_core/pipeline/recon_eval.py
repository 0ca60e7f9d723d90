"""What notebooks 01 and 03 call besides the measures (``lverse_core.evaluation.reconstruction``): which test images
to read, Table 1 beside the paper's, the code-usage table, the figures (training curves, Figure 3's reconstruction grid,
Figure 5's out-of-domain photographs, code maps, the shared-code matrix) and the sentences under them.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Subset

from lverse_core.config import Config
from lverse_core.data.pixels import unit_from_signed
from lverse_core.evaluation.reconstruction import code_usage, psnr, reconstruct


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


CLAIM_OUTCOMES = {"supports": "supports the claim: AugVAE-SL beats the plain VQ-VAE on every metric",
                  "contradicts": "contradicts the claim: the plain VQ-VAE beats AugVAE-SL on every metric",
                  "mixed": "is mixed: neither model wins on every metric"}


def claim_outcome(augmented: dict[str, Any], plain: dict[str, Any]) -> str:
    """``supports`` if AugVAE-SL beats the plain VQ-VAE on PSNR, SSIM and (where both have it) FID, ``contradicts``
    if it loses on all of them, else ``mixed``; from two ``evaluate_reconstruction`` results."""
    better = [augmented["psnr_db"] > plain["psnr_db"], augmented["ssim"] > plain["ssim"]]
    if "fid" in augmented and "fid" in plain:
        better.append(augmented["fid"] < plain["fid"])
    return "supports" if all(better) else "contradicts" if not any(better) else "mixed"


def claim_verdict(augmented: dict[str, Any], plain: dict[str, Any]) -> str:
    """One plain sentence on the paper's central claim: ``claim_outcome`` and the numbers behind it."""
    d_psnr = augmented["psnr_db"] - plain["psnr_db"]
    parts = [f"PSNR {augmented['psnr_db']:.2f} vs {plain['psnr_db']:.2f} dB ({d_psnr:+.2f})",
             f"SSIM {augmented['ssim']:.3f} vs {plain['ssim']:.3f}"]
    if "fid" in augmented and "fid" in plain:
        parts.append(f"FID {augmented['fid']:.2f} vs {plain['fid']:.2f} (lower is better)")
    outcome = CLAIM_OUTCOMES[claim_outcome(augmented, plain)]
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


def surgery_summary(diff: pd.DataFrame) -> dict:
    """``ml_to_sl_diff``'s table in numbers: {"dropped" | "added" | "kept": (modules, weights)} and, where a kept
    module has a relative change, "most" and "least": (module, relative change in SL fine-tuning)."""
    out: dict[str, Any] = {
        s: (int((diff.status == s).sum()), int(diff.loc[diff.status == s, "SL weights" if s == "added" else
                                                        "ML weights"].sum()))
        for s in ("dropped", "added", "kept")}
    kept = diff[diff.status == "kept"].dropna(subset=["relative change in SL fine-tuning"])
    moved = kept.sort_values("relative change in SL fine-tuning", ascending=False)
    if len(moved):
        for name, row in (("most", moved.iloc[0]), ("least", moved.iloc[-1])):
            out[name] = (row["module"], float(row["relative change in SL fine-tuning"]))
    return out


def surgery_sentence(diff: pd.DataFrame) -> str:
    """``surgery_summary`` in words."""
    c = surgery_summary(diff)
    parts = [f"{c['dropped'][0]} modules dropped ({c['dropped'][1]:,} weights: the deeper levels' encoders "
             f"and decoders)",
             f"{c['added'][0]} added ({c['added'][1]:,} weights: the 1x1 connectors that replace the "
             f"concatenations)",
             f"{c['kept'][0]} kept ({c['kept'][1]:,} weights copied from ML)"]
    text = "The surgery: " + "; ".join(parts) + "."
    if "most" in c:
        text += (f" Fine-tuning moved the kept weights most in {c['most'][0]} ({c['most'][1]:.0%}) and least in "
                 f"{c['least'][0]} ({c['least'][1]:.0%}).")
    return text
