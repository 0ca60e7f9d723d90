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
# # 01 · Train AugVAE-ML, finetune AugVAE-SL, pre-tokenize (paper §3.3, §3.5, Figure 3)
#
# **What the paper does.** AugVAE is a VQ-VAE whose codebook is *augmented across feature levels*. The multi-level
# model (AugVAE-ML) encodes a $256\times256$ image into four latent maps of side 64, 32, 16 and 8
# ($h_0 = E(4, 256)(x)$, $h_k = E(2, 256)(h_{k-1})$), and quantizes **all four with one shared codebook** of
# $d_Z = 8192$ vectors, so patterns seen at every scale fill the same codebook. Each vector is replaced by its
# nearest code, $k(z) = \arg\min_j \lVert z - e_j \rVert^2$, and the codebook follows the encoder by an exponential
# moving average (decay $\gamma = 0.99$, Laplace smoothing $\epsilon = 10^{-5}$):
#
# $$N_j \leftarrow \gamma N_j + (1-\gamma)\, n_j, \qquad m_j \leftarrow \gamma m_j + (1-\gamma) \sum_{k(z)=j} z,
# \qquad e_j = \frac{m_j}{\tilde N_j}.$$
#
# The decoders work from coarse to fine, $d_k = G(\mathrm{cat}(\hat z_k, d_{k+1}))$, and training minimises
#
# $$\mathcal{L} = \lVert x - \hat x \rVert^2 + \beta \sum_k \lVert z_k - \mathrm{sg}(e_{k(z_k)}) \rVert^2
# \;(+\,0.1\,\mathrm{LPIPS}), \qquad \beta = 0.25.$$
#
# AugVAE-SL keeps only the $32\times32$ map (1024 codes per image): the 16/8 encoders and decoders are dropped,
# each concatenation becomes a $1\times1$ conv that doubles the channels, and the model is finetuned from ML.
# Finally every image of the caption data set is encoded once (FP32) into a compact code file for BiART.
#
# **On the embedded profiles** the same code runs at small sizes (64 px: levels 16/8/4/2, SL grid 8×8); dead-code
# restarts and a data-based codebook init are on, because short runs otherwise collapse to a few codes.
#
# **Three additions of ours for short runs (smoke profile; not in the paper or the official code).** A 300-step ML
# reconstructs from its finest level and leaves the H/8 level (the SL grid) nearly empty: there its encoder
# vectors for a red and a yellow object differ by a few hundredths. SL must then learn that level almost from
# scratch, and an EMA codebook that grows out of one point tends to keep warm colours (or blue and purple) on one
# code. So the SL finetune first trains `augvae_train.unquantized_steps` steps as a plain autoencoder (the
# continuous latent is decoded as it is; the training log shows commitment 0 and no code usage there), then sets
# the whole codebook by k-means on the encoder vectors of the last `kmeans_batches` of those steps, and quantizes
# from then on. `augvae_train.edge_weight` adds an L1 loss on image gradients, which keeps the corners of small
# shapes that MSE blurs (in SL only when `edge_in_ml` is false, as here). Set both to 0 (`OVERRIDES`) to see the
# plain recipe. And the rate: the official `ReduceLROnPlateau` halves it when the mean training loss stops falling,
# checked once per epoch; a smoke run is ~4 epochs, so it checks every `plateau_every` steps, and the last
# `lr_decay_fraction` of each training's steps take the rate linearly to ~0. Without that decay the noisy loss
# (batch 16, edge term) either halved the rate to nothing by mid-run or never lowered it: the training log's `lr`
# column shows which (bench/README.md, "The tokenizer's learning rate": seed 0's SL alone, 2,300 steps, went from
# 75% to 87% of the test reconstructions judged right).
#
# **What to look for.** PSNR rising during training; every level using many codes (perplexity well above 1 —
# a collapsed codebook shows perplexity near 1 and flat grey reconstructions); the reconstruction grid (inputs,
# ML, SL: paper Figure 3 layout); the code files written for train/val/test.

# %% tags=["parameters"]
PROFILE = "smoke"  # ci|smoke|gpu|paper
OVERRIDES = {}  # config overrides, dotted keys, e.g. {"augvae_train.sl_steps": 2600}: run in runs/ and reports/<profile>+<tag>/
N_SHOW = 8  # images in the reconstruction grid, 1..16
N_USAGE = 256  # held-out images for the code-usage table, 1..10000
PRETOKENIZE = True  # True|False: encode train/val/test into runs/<profile>/codes/

# %%
import json
import time

from lverse_core import report
from lverse_core.evaluation import reconstruction
from lverse_core.pipeline import recon_eval
from lverse_core.models.augvae import count_parameters
from lverse_core.training.augvae_train import effective_lr, load_augvae, planned_steps, train_augvae
from lverse_core.config import available_profiles, data_source, load_run_config
from lverse_core.training.pretokenize import load_codes, pretokenize
from lverse_core.data.shapes_dataset import ensure_dataset

assert PROFILE in available_profiles(), f"PROFILE must be one of {available_profiles()}, got {PROFILE!r}"
assert isinstance(N_SHOW, int) and 1 <= N_SHOW <= 16, f"N_SHOW must be an integer in 1..16, got {N_SHOW!r}"
assert isinstance(N_USAGE, int) and N_USAGE >= 1, f"N_USAGE must be a positive integer, got {N_USAGE!r}"
assert isinstance(PRETOKENIZE, bool), f"PRETOKENIZE must be True or False, got {PRETOKENIZE!r}"
cfg = load_run_config(PROFILE, OVERRIDES)
if data_source(cfg).embedded:
    ensure_dataset(cfg)
t = cfg.augvae_train
print(f"profile {cfg.profile}: {cfg.data.image_size} px, codebook {cfg.augvae.codebook_size} x {cfg.augvae.z_channels}, "
      f"ML {planned_steps(cfg, 'ml')} steps + SL {planned_steps(cfg, 'sl')} steps at batch {t.batch_size}, "
      f"lr {effective_lr(cfg, 1):.2e} (one process), EMA update {cfg.augvae.ema_update}")
print(f"SL: {t.unquantized_steps} unquantized steps, then k-means over {t.kmeans_batches} batches"
      if t.unquantized_steps else "SL: quantized from the first step (the paper's recipe)",
      f"| edge-loss weight {t.edge_weight} ({'ML and SL' if t.edge_in_ml else 'SL only'})")
print("rate: ReduceLROnPlateau on the mean loss of "
      + (f"every {t.plateau_every} steps" if t.plateau_every else "every epoch (the official code)")
      + f", patience {t.plateau_patience}"
      + (f"; then the last {t.lr_decay_fraction:.0%} of each training's steps fall linearly to ~0 (our addition)"
         if t.lr_decay_fraction else ""))
timings = {}

# %% [markdown]
# Train AugVAE-ML (resumes from `runs/<profile>/augvae_ml.pt` if a run was interrupted; skipped if finished).

# %%
t0 = time.monotonic()
train_augvae(cfg, "ml")
timings["ml_s"] = time.monotonic() - t0
ml = load_augvae(cfg, "ml")
print(f"AugVAE-ML: {count_parameters(ml) / 1e6:.2f}M parameters, {timings['ml_s']:.0f} s")

# %% [markdown]
# Build AugVAE-SL from ML (`AugVAE.ml_to_sl`: shared weights kept, 1x1 connectors added) and finetune it.

# %%
t0 = time.monotonic()
train_augvae(cfg, "sl")
timings["sl_s"] = time.monotonic() - t0
sl = load_augvae(cfg, "sl")
print(f"AugVAE-SL: {count_parameters(sl) / 1e6:.2f}M parameters, {timings['sl_s']:.0f} s")

# %% [markdown]
# Training curves: PSNR of each training batch and the perplexity of the codes each level uses.

# %%
logged = recon_eval.logged_variants(cfg, ("ml", "sl"))  # weights converted from official ones have no log
if logged:
    fig = recon_eval.training_curves_figure(cfg, logged)
    _ = report.save_figure(cfg, "augvae_training_curves", fig, caption="AugVAE training: batch PSNR and per-level code perplexity (ML, then SL fine-tuning)")

# %% [markdown]
# Code usage per level on held-out (validation) images: how many entries of the one codebook each level's map uses
# (perplexity: the effective number of entries, from the histogram). Whether the levels *share* entries is the next
# question; the look-inside cells below answer it.

# %%
val = recon_eval.split_images(cfg, "val", N_USAGE)
usage = recon_eval.usage_table({"AugVAE-ML": ml, "AugVAE-SL": sl}, val)
report.save_table(cfg, "augvae_code_usage", usage.assign(source=report.provenance(cfg)),
                  caption=f"Code usage on {len(val)} validation images (codebook of {cfg.augvae.codebook_size})")
usage.round(3)

# %% [markdown]
# Reconstructions of validation images through the codes (paper Figure 3: input, ML, SL).

# %%
rec_ml, _ = reconstruction.reconstruct(ml, val[:N_SHOW])
rec_sl, _ = reconstruction.reconstruct(sl, val[:N_SHOW])
fig = recon_eval.recon_grid_figure({"input": val[:N_SHOW], "AugVAE-ML": rec_ml, "AugVAE-SL": rec_sl}, N_SHOW)
_ = report.save_figure(cfg, "augvae_reconstructions", fig, caption="Validation images and their reconstructions through the codes: input, AugVAE-ML, AugVAE-SL (Figure 3 layout)")
print(f"PSNR on these images: ML {reconstruction.psnr(val[:N_SHOW], rec_ml).mean():.2f} dB, "
      f"SL {reconstruction.psnr(val[:N_SHOW], rec_sl).mean():.2f} dB")

# %% [markdown]
# ## Look inside: one image through the shared codebook
#
# Below, one validation image and the code map of every ML level, then AugVAE-SL's single map. Each cell of a map is
# one codebook entry, drawn in a colour fixed by its id, so **a colour that appears in two panels is the same entry
# serving two levels** — the weight sharing of §3.3 made visible.

# %%
_, ml_maps = reconstruction.reconstruct(ml, val[:1])
_, sl_map = reconstruction.reconstruct(sl, val[:1])
maps = {f"ML level {k}": m[0] for k, m in enumerate(ml_maps)}
maps["SL (BiART's tokens)"] = sl_map[0]
fig = recon_eval.code_maps_figure(val[0], maps)
_ = report.save_figure(cfg, "01_code_maps_one_image", fig, caption="One image's code maps per ML level and SL, coloured by code id")
in_common = set(ml_maps[0][0].unique().tolist()) & set(sl_map[0].unique().tolist())
print(f"On this image the finest ML level uses {len(ml_maps[0][0].unique())} distinct entries and SL "
      f"{len(sl_map[0].unique())}; {len(in_common)} entries appear in both maps.")

# %% [markdown]
# **How much is really shared?** The paper's argument (Figure 4) is that similar patches recur across scales, so one
# codebook filled from every level holds fewer duplicates. The matrix counts, over the `N_USAGE` validation images,
# the codebook entries that two levels both use (the diagonal: the entries each level uses at all).

# %%
_, ml_codes_val = reconstruction.reconstruct(ml, val)
shared = reconstruction.shared_code_matrix(ml_codes_val, cfg.augvae.codebook_size)
sharing = reconstruction.sharing_summary(shared, ml_codes_val, cfg.augvae.codebook_size)
report.save_table(cfg, "01_shared_code_matrix", shared.reset_index(names="level").assign(source=report.provenance(cfg)),
                  caption=f"Codebook entries used by both levels on {len(val)} validation images (paper Figure 4 "
                          f"analogue; diagonal: entries the level uses)")
_ = report.save_figure(cfg, "01_shared_code_matrix", recon_eval.shared_code_figure(shared),
                       caption="Codebook entries shared between ML levels (Figure 4 analogue)",
                       verdict=recon_eval.sharing_sentence(sharing))
print(recon_eval.sharing_sentence(sharing))

# %% [markdown]
# **What the ML → SL surgery changes** (`AugVAE.ml_to_sl`, §3.3): the deeper levels' encoders and decoders are
# dropped, 1×1 connectors replace the concatenations, everything else is copied from ML and then fine-tuned. The table
# compares the trained ML and SL weights module by module.

# %%
surgery = recon_eval.ml_to_sl_diff(ml, sl)
report.save_table(cfg, "01_ml_to_sl_surgery", surgery.assign(source=report.provenance(cfg)),
                  caption="AugVAE-ML -> AugVAE-SL per module: dropped, added, kept, and how far SL fine-tuning "
                          "moved the kept weights (relative L2 change)", verdict=recon_eval.surgery_sentence(surgery))
print(recon_eval.surgery_sentence(surgery))
surgery.round(3)

# %% [markdown]
# Pre-tokenize train/val/test with AugVAE-SL (resumable; a finished split is not redone).

# %%
t0 = time.monotonic()
if PRETOKENIZE:
    pretokenize(cfg)
timings["pretokenize_s"] = time.monotonic() - t0
codes_summary = {}
for split in ("train", "val", "test") if PRETOKENIZE else ():
    codes, ids = load_codes(cfg, split)
    codes_summary[split] = {"images": len(ids), "grid": list(codes.shape[1:]),
                            "distinct_codes": int(len(set(codes.reshape(-1).tolist())))}
print(json.dumps(codes_summary, indent=1), f"\n{timings['pretokenize_s']:.0f} s")

# %% [markdown]
# The summary that tests and the report index read: `results/augvae_training.json`.

# %%
logs = {v: recon_eval.training_log(cfg, v).iloc[-1].to_dict() for v in logged}
summary = {"params": {"ml": count_parameters(ml), "sl": count_parameters(sl)},
           "steps": {"ml": planned_steps(cfg, "ml"), "sl": planned_steps(cfg, "sl")},
           "final_train_log": logs, "code_usage": usage.to_dict(orient="records"), "codes": codes_summary,
           "timings_s": timings}
from lverse_core.pipeline import artefact_ids

summary["made_from"] = artefact_ids.ids(cfg, ("data set", "augvae_ml", "augvae_sl", "codes train", "codes val",
                                              "codes test"))  # index.html marks this stale if one is remade
report.write_results(cfg, "augvae_training", summary, headline=[])  # Table 1 (notebook 03) gives the headline
print(json.dumps({k: summary[k] for k in ("params", "steps", "timings_s")}, indent=1))

# %% [markdown]
# ## Summary (computed from this run) and exercises

# %%
ml_psnr = float(reconstruction.psnr(val[:N_SHOW], rec_ml).mean())
sl_psnr = float(reconstruction.psnr(val[:N_SHOW], rec_sl).mean())
sl_row = usage[usage.model == "AugVAE-SL"].iloc[0]
print(f"- AugVAE-ML ({count_parameters(ml) / 1e6:.2f}M parameters, {planned_steps(cfg, 'ml')} steps) reconstructs the "
      f"shown validation images at {ml_psnr:.1f} dB; AugVAE-SL ({count_parameters(sl) / 1e6:.2f}M, "
      f"{planned_steps(cfg, 'sl')} more steps) at {sl_psnr:.1f} dB, from one {sl_row['map']} map per image.")
print(f"- SL uses {int(sl_row['codes_used'])} of {cfg.augvae.codebook_size} entries (perplexity "
      f"{sl_row['perplexity']:.0f}): that is the vocabulary BiART's image tokens come from.")
print(f"- {recon_eval.sharing_sentence(sharing)}")
print(f"- {recon_eval.surgery_sentence(surgery)}")

# %% [markdown]
# **Exercises** (each changes one parameter of this notebook; a run with `OVERRIDES` trains into its own folders,
# `runs/<profile>+<tag>/` and `reports/<profile>+<tag>/`, and leaves the default run alone):
# 1. Pool the EMA update over the levels (`OVERRIDES={"augvae.ema_update": "pooled"}`): does the shared-code matrix
#    fill in, and does PSNR move?
# 2. Halve the codebook (`OVERRIDES={"augvae.codebook_size": 128}` on `smoke`, which has 256): how many entries
#    does each level use now, and what happens to the SL reconstructions?
# 3. Give SL twice the fine-tuning (`OVERRIDES={"augvae_train.sl_steps": 5600}` on `smoke`): which modules move
#    further in the surgery table?
# 4. Train without the final decay of the rate (`OVERRIDES={"augvae_train.lr_decay_fraction": 0.0}`): follow the
#    `lr` column of `runs/<profile>+<tag>/logs/augvae_sl.csv` and the PSNR curve; how many reconstructions in the
#    grid above keep their small shapes?
