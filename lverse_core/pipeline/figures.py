"""Figures more than one notebook draws: a grid of images, one row per caption (notebooks 02 and 05)."""
from __future__ import annotations

from typing import Sequence

import torch

from lverse_core.data.pixels import unit_from_signed


def image_grid_figure(rows: Sequence[torch.Tensor], titles: Sequence[str], ncols: int,
                      column_labels: Sequence[str] | None = None):
    """One row per caption: ``ncols`` images (3, S, S) in [-1, 1], the (wrapped) caption above the row, and a
    header naming the columns (default: the real image, then the generated ones, reranked)."""
    import textwrap

    import matplotlib.pyplot as plt

    labels = list(column_labels) if column_labels is not None else (
        ["real image"] + [f"generated #{c} (reranked)" for c in range(1, ncols)])
    fig, grid = plt.subplots(len(rows) + 1, ncols, figsize=(1.5 * ncols, 1.9 * len(rows) + 0.35), squeeze=False,
                             gridspec_kw={"height_ratios": [0.18] + [1] * len(rows)})
    for c, ax in enumerate(grid[0]):  # the header row
        ax.axis("off")
        if c < len(labels):
            ax.text(0.5, 0.0, textwrap.fill(labels[c], 14), ha="center", va="bottom", fontsize=7, fontweight="bold")
    axes = grid[1:]
    for r, (imgs, title) in enumerate(zip(rows, titles)):
        for c in range(ncols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(imgs):
                ax.imshow(unit_from_signed(imgs[c]).permute(1, 2, 0).cpu().numpy())
        axes[r][0].set_title(textwrap.fill(title, 12 * ncols), fontsize=7, loc="left")
    fig.tight_layout()
    return fig
