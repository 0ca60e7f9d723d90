"""Tables, statistics and figures of a data set, for notebook 00 (paper §4: the data each experiment uses).

Works on the embedded shapes set (with its ground-truth objects) and on the paper's data (MS-COCO Karpathy
splits; no object table there). Everything is computed from the same loaders the training notebooks use.
"""
from __future__ import annotations

import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lverse_core import data

from lverse_core.data import shapes, shapes_dataset
from lverse_core.config import Config, data_source
from lverse_core.data.tokenizer import TextTokenizer

SUMMARY_SPLITS = ("train", "val", "test")  # "train" holds Karpathy's restval, as the training notebooks use it


def prepare(cfg: Config, validate: bool = False) -> dict:
    """Generate (shapes) or locate and check (real data) the data set; returns timing and where it lives."""
    t0 = time.perf_counter()
    root = shapes_dataset.ensure_dataset(cfg)
    records = {s: data.caption_records(cfg, s, validate=validate) for s in SUMMARY_SPLITS}
    info = {"root": str(root), "source": cfg.data.source, "ensure_s": round(time.perf_counter() - t0, 3),
            "validated_images": validate}
    marker = shapes_dataset.read_marker(root) if data_source(cfg).embedded else None
    if marker:
        info["generation_s"] = marker["generation_s"]  # when it was generated (maybe by an earlier run)
        info["bytes_on_disk"] = marker["bytes"]
    else:
        info["bytes_on_disk"] = bytes_on_disk(records)
    info["records"] = records
    return info


def bytes_on_disk(records: dict[str, list[dict]]) -> int:
    """Bytes of the files the records live in: each image file, or each tar shard once (``data.source: wds``)."""
    files = {getattr(r["path"], "shard", r["path"]) for rs in records.values() for r in rs}
    return sum(Path(f).stat().st_size for f in files)


def caption_table(records: dict[str, list[dict]], tokenizer: TextTokenizer) -> pd.DataFrame:
    """One row per caption: split, image_id, caption, words, bpe_tokens (without eot)."""
    rows = [(split, r["image_id"], c) for split, rs in records.items() for r in rs for c in r["captions"]]
    df = pd.DataFrame(rows, columns=["split", "image_id", "caption"])
    df["words"] = [len(shapes.caption_tokens(c)) for c in df["caption"]]
    df["bpe_tokens"] = tokenizer.lengths(df["caption"])
    return df


def object_table(cfg: Config, records: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per ground-truth object of the embedded set (empty for real data)."""
    cols = ["split", "image_id", "n_objects", "shape", "colour", "size"]
    if not data_source(cfg).ground_truth:
        return pd.DataFrame(columns=cols)
    attrs = data.load_attributes(cfg)
    rows = [(split, r["image_id"], len(attrs[r["image_id"]]), o["shape"], o["colour"], o["size"])
            for split, rs in records.items() for r in rs for o in attrs[r["image_id"]]]
    return pd.DataFrame(rows, columns=cols)


def split_counts(captions: pd.DataFrame) -> pd.DataFrame:
    g = captions.groupby("split", sort=False)
    return pd.DataFrame({"split": list(g.groups), "images": g["image_id"].nunique().values,
                         "captions": g.size().values})


def length_stats(captions: pd.DataFrame, text_len: int) -> dict:
    out = {}
    for col in ("words", "bpe_tokens"):
        v = captions[col].to_numpy()
        out[col] = {"mean": float(v.mean()), "median": float(np.median(v)), "p95": float(np.percentile(v, 95)),
                    "max": int(v.max()), "min": int(v.min())}
    # a caption needs its BPE tokens + eot within text_len; longer ones are truncated by the tokenizer
    out["truncated_fraction"] = float((captions["bpe_tokens"] > text_len - 1).mean())
    out["text_len"] = text_len
    return out


def summary(cfg: Config, info: dict, captions: pd.DataFrame, objects: pd.DataFrame,
            tokenizer: TextTokenizer) -> dict:
    """The content of results/data_summary.json."""
    out = {k: v for k, v in info.items() if k != "records"}
    out["splits"] = {row.split: {"images": int(row.images), "captions": int(row.captions)}
                     for row in split_counts(captions).itertuples()}
    out["restval_in_train"] = len(data.caption_records(cfg, "restval")) if data_source(cfg).restval else 0
    out["image_size"] = cfg.data.image_size
    out["lengths"] = length_stats(captions, cfg.biart.text_len)
    out["vocab_size"] = tokenizer.vocab_size
    out["compact_vocab"] = tokenizer.compact
    if len(objects):
        per_image = objects.drop_duplicates("image_id")["n_objects"]
        out["objects_per_image"] = {int(k): int(v) for k, v in per_image.value_counts().sort_index().items()}
        for col in ("shape", "colour", "size"):
            out[f"{col}_counts"] = {str(k): int(v) for k, v in objects[col].value_counts().sort_index().items()}
    return out


# -- figures -------------------------------------------------------------------------------------------------------

def sample_figure(records: list[dict], n: int = 16, seed: int = 0, cols: int = 4):
    """A grid of n images of one split with their first caption underneath."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    pick = rng.choice(len(records), size=min(n, len(records)), replace=False)
    rows = int(np.ceil(len(pick) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, pick):
        r = records[i]
        ax.imshow(data.load_image(r["path"]), interpolation="nearest")
        ax.set_title("\n".join(textwrap.wrap(r["captions"][0], 34)), fontsize=7.5)
    fig.tight_layout()
    return fig


def length_figure(captions: pd.DataFrame, text_len: int):
    """Histograms of words and BPE tokens per caption, by split; the dashed line is text_len - 1 (eot)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, col, label in zip(axes, ("words", "bpe_tokens"), ("words per caption", "BPE tokens per caption")):
        sns.histplot(captions, x=col, hue="split", discrete=True, stat="density", common_norm=False,
                     element="step", ax=ax)
        ax.set_xlabel(label)
        ax.set_ylabel("share of the split's captions")
        ax.set_title(f"{label[0].upper()}{label[1:]}, by split (each split sums to 1)", fontsize=9)
    axes[1].axvline(text_len - 1, ls="--", c="k", lw=1, label=f"text_len - 1 = {text_len - 1}")
    fig.tight_layout()
    return fig


def frequency_figure(objects: pd.DataFrame):
    """Objects per image and shape / colour / size frequencies of the embedded set."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    per_image = objects.drop_duplicates("image_id")
    # splits differ in size: compare their shares, not their counts
    shares = (per_image.groupby("split")["n_objects"].value_counts(normalize=True).rename("share of images")
              .reset_index())
    sns.barplot(shares, x="n_objects", y="share of images", hue="split", ax=axes[0])
    axes[0].set(xlabel="objects per image", title="Objects per image, by split")
    palette = {c: tuple(v / 255 for v in shapes.RGB[c]) for c in shapes.COLOURS}
    sns.countplot(objects, x="colour", order=list(shapes.COLOURS), hue="colour", palette=palette, legend=False,
                  ax=axes[1])
    sns.countplot(objects, x="shape", order=list(shapes.SHAPES), ax=axes[2])
    sns.countplot(objects, x="size", order=list(shapes.SIZES), ax=axes[3])
    for ax, what in zip(axes[1:], ("Colour", "Shape", "Size")):
        ax.tick_params(axis="x", rotation=30)
        ax.set(ylabel="objects (all splits)", title=f"{what} of the objects")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def ood_figure(photos: list[tuple[str, "torch.Tensor"]]):
    """The out-of-domain photographs (paper Figure 5) as the models will see them."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(photos), figsize=(2.0 * len(photos), 2.3), squeeze=False)
    for ax, (name, x) in zip(axes[0], photos):
        ax.imshow(data.to_pil(x), interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle("Out-of-domain photographs (inputs of the Figure 5 analogue)", fontsize=10)
    fig.tight_layout()
    return fig
