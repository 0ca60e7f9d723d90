# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Data preparation (paper §4)
#
# **What the paper uses.** L-Verse trains its image tokenizer, AugVAE, on **ImageNet1K** (1.28M training images,
# evaluated on the 50k validation images, Table 1), and BiART on **MS-COCO Captions 2014** with Karpathy's splits
# (113,287 training images including *restval*, 5,000 val, 5,000 test, about five captions each; Tables 2 and 3).
# **Conceptual Captions (CC3M)**, about 3.3M web image-text pairs, is used for the zero-shot scalability study.
# Images are $256\times256$ RGB; AugVAE-SL turns one into $32\times32 = 1024$ codes and a caption becomes 64 BPE
# tokens of CLIP's tokenizer, so BiART reads sequences of
#
# $$L = T_{\text{text}} + \left(\tfrac{S}{8}\right)^2 = 64 + 1024 = 1088 \text{ tokens.}$$
#
# Training images are augmented with a square random resized crop of area fraction $s \sim U[0.75, 1]$ and pixels
# are mapped to $[-1, 1]$ by $x \mapsto 2x - 1$.
#
# **What this kit uses on the `ci`, `smoke` and `gpu` profiles.** An *embedded* data set generated here from the
# profile's seed: scenes of 1–3 coloured shapes (3 shapes × 6 colours × 2 sizes) on textured backgrounds, each with
# five template captions that name every object's size, colour and shape and relations between them. It is written
# in the real formats (Karpathy's `dataset_coco.json`, an ImageFolder tree, a CC3M-style TSV), so the loaders that
# read COCO, ImageNet and CC3M on the `paper` profile are exactly the ones exercised here. Unlike COCO it has exact
# ground truth (`attributes.json`), which the later notebooks use to judge generated captions and images.
# On the `paper` profile this notebook locates and checks the real data instead (nothing is downloaded).
#
# **What to look for.** The sample grid (captions must describe their images), split sizes, the caption lengths
# against the text length $T_{\text{text}}$ (dashed line: captions longer than $T_{\text{text}} - 1$ BPE tokens
# would be truncated), and balanced object statistics. Results go to `results/data_summary.json` and
# `figures/data_samples.png`.

# %% tags=["parameters"]
PROFILE = "smoke"  # ci|smoke|gpu|paper
OVERRIDES = {}  # config overrides, dotted keys, e.g. {"augvae_train.sl_steps": 2600}: run in runs/ and reports/<profile>+<tag>/
N_SAMPLES = 16  # images in the sample grid, 1..64
SAMPLE_SPLIT = "val"  # train|val|test: split shown in the sample grid
VALIDATE_IMAGES = False  # True: decode every image of every split (slow on the paper's data)

# %%
import json

import pandas as pd
from IPython.display import display

from lverse_core import data, report
from lverse_core.pipeline import data_report
from lverse_core.config import available_profiles, load_run_config
from lverse_core.data.tokenizer import TextTokenizer

assert PROFILE in available_profiles(), f"PROFILE must be one of {available_profiles()}, got {PROFILE!r}"
assert isinstance(N_SAMPLES, int) and 1 <= N_SAMPLES <= 64, f"N_SAMPLES must be an integer in 1..64, got {N_SAMPLES!r}"
assert SAMPLE_SPLIT in ("train", "val", "test"), f"SAMPLE_SPLIT must be train|val|test, got {SAMPLE_SPLIT!r}"
assert isinstance(VALIDATE_IMAGES, bool), f"VALIDATE_IMAGES must be True or False, got {VALIDATE_IMAGES!r}"
cfg = load_run_config(PROFILE, OVERRIDES)
print(f"profile {cfg.profile}: data source {cfg.data.source}, {cfg.data.image_size} px, root {cfg.data_root}")

# %% [markdown]
# A dry run of the paper path (`assets.stand_ins`, profile `paper-dry`) reads stand-ins of the paper's assets, written
# here on first use: this data set generated at the paper's 256 px in the real formats (Karpathy JSON + images, an
# ImageNet-style ImageFolder, a CC3M TSV) and random-weight files of Inception-v3, CLIP ViT-B/32 and VGG16
# (`lverse_core/data/stand_ins.py`). Every other profile reads real assets, or the embedded set, and skips this.

# %%
if cfg.assets.stand_ins:
    from lverse_core.data.stand_ins import ensure_stand_ins
    for name, path in ensure_stand_ins(cfg).items():
        print(f"stand-in {name}: {path}")

# %% [markdown]
# Is this machine ready for the profile? The same checks as `python -m lverse_core doctor --profile P`: Java for METEOR, the assets the profile reads, stale artefacts, free disk; each problem comes with its fix.

# %%
from lverse_core.pipeline.doctor import doctor
problems = doctor(cfg)  # prints [ok] / [problem] lines; the notebook goes on, the later cells fail where it matters

# %% [markdown]
# Generate the embedded data set (or locate the real one) and read every split through the loaders.

# %%
info = data_report.prepare(cfg, validate=VALIDATE_IMAGES)
records = info["records"]
print(f"ready in {info['ensure_s']:.1f} s (generation took {info.get('generation_s', float('nan')):.1f} s when it "
      f"ran); {info['bytes_on_disk'] / 2**20:.1f} MiB on disk under {info['root']}")

# %% [markdown]
# Where the images fit in memory (`augvae_train.decode: once`, the embedded set), each split is decoded here once into
# `runs/<profile>/decoded/`: AugVAE's training, pre-tokenization, the CLIP reranker and the attribute judge read these
# pixels in the later notebooks instead of decoding every PNG again in each of them.

# %%
from lverse_core.data.decoded_store import write_store
if not write_store(cfg):
    print(f"no decoded store (augvae_train.decode = {cfg.augvae_train.decode}, data source {cfg.data.source}): "
          "each stage decodes its images")

# %% [markdown]
# The text tokenizer: CLIP's BPE, compact over the training captions when `biart.compact_vocab` is on. Built here
# once and saved to `runs/<profile>/tokenizer.json`, which the later notebooks read.

# %%
tokenizer = TextTokenizer.build(cfg, [c for r in records["train"] for c in r["captions"]])
print("saved to", tokenizer.save(cfg.runs_root / "tokenizer.json").relative_to(cfg.runs_root.parent.parent))
example = records[SAMPLE_SPLIT][0]["captions"][0]
ids = tokenizer.encode([example])
print(tokenizer)
print(example, "->", ids[0].tolist())
print("decoded:", tokenizer.decode(ids)[0])

# %% [markdown]
# A grid of samples with their first caption.

# %%
fig = data_report.sample_figure(records[SAMPLE_SPLIT], n=N_SAMPLES, seed=cfg.seed)
report.save_figure(cfg, "data_samples", fig, caption=f"{N_SAMPLES} {SAMPLE_SPLIT} images with their first caption")

# %% [markdown]
# Images and captions per split (`train` includes Karpathy's restval).

# %%
captions = data_report.caption_table(records, tokenizer)
objects = data_report.object_table(cfg, records)
counts = data_report.split_counts(captions)
report.save_table(cfg, "data_split_counts", counts.assign(source=report.provenance(cfg)),
                  caption="Images and captions per split")
counts

# %% [markdown]
# Caption lengths in words and in BPE tokens; the dashed line is the last position before `eot`.

# %%
fig = data_report.length_figure(captions, cfg.biart.text_len)
report.save_figure(cfg, "data_caption_lengths", fig, caption="Caption lengths in words and BPE tokens, per split")
captions.groupby("split")[["words", "bpe_tokens"]].describe().round(2)

# %% [markdown]
# Objects per image and shape / colour / size frequencies (embedded data set only).

# %%
if len(objects):
    fig = data_report.frequency_figure(objects)
    report.save_figure(cfg, "data_object_statistics", fig, caption="Objects per image and their attributes (embedded data)")
    display(pd.crosstab(objects["shape"], objects["colour"], margins=True))
else:
    print("real data: no ground-truth objects")

# %% [markdown]
# The out-of-domain photographs (from scikit-image, scikit-learn and matplotlib) used for the paper's Figure 5.

# %%
photos = data.ood_images(cfg)
if photos:
    fig = data_report.ood_figure(photos)
    report.save_figure(cfg, "data_ood_photos", fig, caption="Out-of-domain photographs shipped with scikit-image / scikit-learn (Figure 5 inputs)")
else:
    print("data.ood_images is 0")

# %% [markdown]
# The summary the tests and the report index read: `results/data_summary.json`.

# %%
from lverse_core.pipeline import artefact_ids

summary = data_report.summary(cfg, info, captions, objects, tokenizer)
summary["made_from"] = artefact_ids.ids(cfg, ("data set", "tokenizer"))  # index.html marks this stale if either changes
report.write_results(cfg, "data_summary", summary, headline=[])  # the data set has no headline number
print(json.dumps({k: summary[k] for k in ("splits", "bytes_on_disk", "lengths", "vocab_size")}, indent=1))

# %% [markdown]
# ## Summary (computed from this run) and exercises

# %%
sp = summary["splits"]
print("- " + "; ".join(f"{k}: {v['images']} images, {v['captions']} captions" for k, v in sp.items()) + ".")
print(f"- Captions: {summary['lengths']['bpe_tokens']['max']} BPE tokens at most (text_len {cfg.biart.text_len} holds "
      f"{1 - summary['lengths']['truncated_fraction']:.1%} of them whole); vocabulary {summary['vocab_size']} ids.")

# %% [markdown]
# **Exercises**:
# 1. Look at the test split (`SAMPLE_SPLIT="test"`): are its scenes drawn from the same distribution as training?
# 2. Draw a different data set (`OVERRIDES={"seed": 1}`, written to its own `data/<profile>+<tag>/`): which counts
#    change, and which stay fixed by the generator's design?

