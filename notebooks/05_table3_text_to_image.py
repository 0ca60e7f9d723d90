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
# # 05 · Table 3: text → image (paper §4.3, §3.6, Table 3, Figures 1 and 8)
#
# **What the paper reports.** Images for 30,000 MS-COCO validation captions, compared with the real images by FID
# after a Gaussian blur of radius $k$ on both sides (FID-$k$, $k \in \{0, 1, 2, 4, 8\}$): L-Verse 45.8 / 41.9 / 35.5 /
# 30.2 / 29.8. Blurring removes fine detail, so FID falls as $k$ grows; but it falls for *any* image set whose
# errors are partly fine detail, including the decoder's own reconstructions. Read the curve against the AugVAE-SL
# reconstructions' curve (the ceiling for any generated image): only the excess over that ceiling is BiART's.
#
# **How an image is made** (§3.6). BiART reads the caption's BPE tokens $y$ and samples the $N = g^2$ AugVAE-SL codes
#
# $$p(x \mid y) = \prod_{t=1}^{N} p(x_t \mid x_{<t}, y),$$
#
# `sampling.n_candidates` times; AugVAE-SL decodes each candidate (in FP32) and CLIP keeps the best,
# $\hat x = \arg\max_i 100\cos(E_I(D(x^{(i)})), E_T(y))$, `sampling.n_repeats` times with other seeds.
# With `sampling.image_likelihood_weight` $w > 0$ (the smoke profile; **not in the paper**) the kept one maximises
# $z(\text{clip-score}) + w\,z(\log p_\text{BiART}(y \mid x^{(i)}))$, both z-scored over the prompt's candidates:
# BiART's image$\to$text direction reads each image it drew and says how likely the prompt is given it. The small
# CLIP reranker of the embedded profiles keeps a right image far less often than the candidates hold one; the model's
# other direction is a second, independent reader (bench/README.md, "Images: reranking by BiART's own likelihood").
# Set it to 0 (`OVERRIDES={"sampling.image_likelihood_weight": 0.0}`) for the paper's rule and compare the judge's row.
# **FID**: $\lVert \mu_r - \mu_g \rVert^2 + \mathrm{tr}(\Sigma_r + \Sigma_g - 2(\Sigma_r\Sigma_g)^{1/2})$ over features of
# real and generated images (torch-fidelity's feature extractor; the means and covariances accumulated batch by batch,
# so 30,000 prompts never sit in memory at once). The `paper` profile uses Inception-v3 from a local file;
# the embedded profiles use the kit's own judge network as feature extractor (named in every column header): those
# values are **not** Inception FIDs and are not comparable with the paper's, only the shape of the curve is.
#
# **Embedded profiles.** The judge (a small CNN trained on real embedded images) says whether a generated image shows
# what its caption names. In the same run it also scores the real images behind the captions (its ceiling) and images
# generated from shuffled captions (the floor). The kit's minimum bar on `smoke` is 2× the floor.
#
# **What to look for.** The FID-$k$ curve; generated images judged right far above the floor and below the ceiling;
# sample grids whose shapes, colours and sizes follow their captions.

# %% tags=["parameters"]
PROFILE = "smoke"  # ci|smoke|gpu|paper
OVERRIDES = {}  # config overrides, dotted keys, e.g. {"augvae_train.sl_steps": 2600}: run in runs/ and reports/<profile>+<tag>/
N_GRID = 6  # captions in the sample grid (Figures 1/8), 1..16
GRID_IMAGES = 4  # reranked images per caption in the sample grid, 1..8
GENERATED_IMAGES = ""  # path of an images .npz written by lverse_core.sampling.generate under torchrun; empty: generate here

# %%
import time
import pandas as pd
import torch
from IPython.display import display
from lverse_core.config import available_profiles, data_source, load_run_config

assert PROFILE in available_profiles(), f"PROFILE={PROFILE!r}; valid: {available_profiles()}"
assert isinstance(N_GRID, int) and 1 <= N_GRID <= 16, "N_GRID must be an integer in 1..16"
assert isinstance(GRID_IMAGES, int) and 1 <= GRID_IMAGES <= 8, "GRID_IMAGES must be an integer in 1..8"
assert isinstance(GENERATED_IMAGES, str), "GENERATED_IMAGES must be a path string or empty"
cfg = load_run_config(PROFILE, OVERRIDES)
device = cfg.resolved_device()
embedded = data_source(cfg).ground_truth  # the judge needs every image's objects
timings = {}
print(f"profile {cfg.profile}: {cfg.eval.t2i_prompts} prompts from {cfg.eval.t2i_split}, {cfg.sampling.n_candidates} "
      f"candidates each, {cfg.sampling.n_repeats} round(s), on {device}")

# %% [markdown]
# Inputs: the Table 3 prompts (`eval.t2i_prompts` captions of `eval.t2i_split`, round-robin over each image's captions), the models of notebooks 01-02 and, on embedded data, the judge.

# %%
from lverse_core.sampling.generate import load_models, t2i_prompts
if embedded:
    from lverse_core.evaluation.judge import ensure_judge
    from lverse_core.data.shapes_dataset import ensure_dataset
    ensure_dataset(cfg)
    judge = ensure_judge(cfg)  # trained on real training images (notebook 03 trains it first in a full run)
m = load_models(cfg, device)
prompts = t2i_prompts(cfg)
captions = prompts["captions"]
pd.DataFrame([{"prompts": len(captions), "distinct real images": len(prompts["real_ids"]),
               "split": cfg.eval.t2i_split, "candidates": cfg.sampling.n_candidates,
               "rounds (k)": cfg.sampling.n_repeats, "image tokens": cfg.image_tokens,
               "kept by": ("clip-score (paper)" if not cfg.sampling.image_likelihood_weight else
                           f"z(clip-score) + {cfg.sampling.image_likelihood_weight:g} z(BiART log p(caption | image))")}])

# %% [markdown]
# Images: every prompt's candidates are seeded by (seed, prompt id, round, candidate) and reranked by CLIP, with BiART's likelihood of the prompt when its weight is on (`lverse_core.sampling.generate`; the same code shards over torchrun ranks for 30,000 prompts).

# %%
from lverse_core.sampling.generate import generate_images, load_generated_images, made_from
t0 = time.perf_counter()
if GENERATED_IMAGES:
    loaded = load_generated_images(GENERATED_IMAGES, cfg)  # refused if made from other checkpoints
    assert loaded["prompt_ids"] == prompts["prompt_ids"], f"{GENERATED_IMAGES} was generated for other prompts"
    codes, clip_scores = loaded["codes"], loaded["clip_scores"]
else:
    codes, records = generate_images(cfg, m["model"], m["tokenizer"], captions, prompts["prompt_ids"], m["scorer"],
                                     m["decode"])
    clip_scores = torch.tensor([r["clip_scores"] for r in records])
timings["generate_s"] = time.perf_counter() - t0
print(f"{codes.shape[0]} prompts x {codes.shape[1]} image(s) in {timings['generate_s']:.1f} s; "
      f"mean CLIP score of the chosen images {float(clip_scores.mean()):.2f}")

# %% [markdown]
# The image sets Table 3 compares, as loaders that read or decode images only when asked (nothing is read yet):
# the **generated** images (the first reranked image of every prompt, as in the paper, decoded from its codes), the
# **real** images (FID's real side: the distinct images behind the prompts), their AugVAE-SL **reconstructions**
# (decoded from their own codes) and, for the judge, the **real image behind each prompt**. At paper scale these are
# 30,000 + 10,000 + 10,000 + 30,000 images of 256 px (about 15 GB as uint8), so they are never held whole.

# %%
from lverse_core.pipeline.t2i_eval import table3_sets
sets = table3_sets(cfg, prompts, codes[:, 0], m["decode"])
pd.DataFrame([{"generated (FID fake side)": sets.n_prompts, "real (FID real side)": sets.n_real,
               "reconstructed": sets.n_real, "real behind each prompt (judge)": sets.n_prompts if embedded else 0}])

# %% [markdown]
# Table 3: FID-k for every blur radius k in `eval.blur_radii` (both sides blurred alike) and, on embedded data, the share of images the judge finds right. Two reference rows of this run: AugVAE-SL reconstructions of the real images (the best any BiART sample can be) and a random real image per caption (the real distribution with the wrong content: FID 0, judged right only by chance).
#
# One pass over each set, a batch at a time (`lverse_core.pipeline.t2i_eval.evaluate_text_to_image`): every batch is
# blurred by every radius and its features are added to running sums (mean and covariance per set and radius,
# `FeatureStatistics`), and the judge's verdicts are kept as one yes/no per image and caption. FID-k is then the
# Fréchet distance between the real set's statistics and each row's. The random-real row needs no pass of its own: FID
# compares sets of images and never sees which caption an image stands for, so its FID is that of the images behind
# the prompts; only the judge sees that each is paired with another prompt's caption.

# %%
from lverse_core.pipeline.t2i_eval import RANDOM_REAL, RECONSTRUCTED, evaluate_text_to_image
from lverse_core.pipeline.eval_tables import ours_label, table3, table3_paper
from lverse_core.evaluation.fid import fid_label
from lverse_core.report import save_table
t0 = time.perf_counter()
evaluated = evaluate_text_to_image(cfg, sets, judge=judge if embedded else None)
scored = evaluated["rows"]
OURS = ours_label(cfg)  # "L-Verse-CC ..." when BiART trained on CC3M (data.train_source, the paper's zero-shot row)
timings["fid_s"] = time.perf_counter() - t0
s = cfg.sampling
kept_by = f"CLIP top-1 of {s.n_candidates}" + (f" (+ {s.image_likelihood_weight:g} x BiART log p(caption | image), "
                                                f"z-scored)" if s.image_likelihood_weight else "")
table = table3(cfg, scored, {OURS: f"{kept_by}, {len(captions)} prompts, {sets.n_real} real images",
                             RECONSTRUCTED: "ceiling for generated images",
                             RANDOM_REAL: "baseline: right distribution, wrong content"})
save_table(cfg, "table3_text_to_image", table, f"Table 3 (this run): text-to-image FID-k in {fid_label(cfg)}, "
                                                f"and images judged right for their caption")
paper_table3 = table3_paper()
save_table(cfg, "table3_paper_reference", paper_table3,
           "Table 3 as printed in the paper (Inception FID-k, MS-COCO val 30k): not comparable with the rows above")
ours = scored[OURS]
display(table.round(2))
paper_table3

# %% [markdown]
# FID against blur radius: the paper's curves (left) beside ours (right, our feature space).

# %%
from lverse_core.pipeline.eval_run import fid_ceiling_reading, fid_curve_figure
from lverse_core.report import reference_table, save_figure
fig = fid_curve_figure(reference_table("table3_t2i_fid_coco_val_30k"), ours["fid"], fid_label(cfg))
ceiling_reading = fid_ceiling_reading(ours["fid"], scored[RECONSTRUCTED]["fid"])
save_figure(cfg, "table3_fid_vs_blur", fig, caption="FID-k against blur radius k: the paper's curves (Inception, "
            "MS-COCO) and ours (kit feature space)", verdict=ceiling_reading["sentence"])

# %% [markdown]
# **Look inside the curve**: does it fall because BiART draws the layout right, or because blur hides the decoder's
# own error? The excess of the generated images' FID-k over the reconstructions' FID-k is the part BiART adds.

# %%
print(ceiling_reading["sentence"])
pd.DataFrame(ceiling_reading["rows"]).round(3)

# %% [markdown]
# The judge on generated images, with its ceiling (real images) and floor (images generated from shuffled captions) from this run, and the kit's minimum bar (at least 2x the floor). The reconstructions row is the ceiling the AugVAE-SL decoder sets for any generated image.

# %%
from lverse_core.pipeline.eval_run import acceptance, judge_table
from lverse_core.evaluation.verdicts import FLOOR, GENERATED
from lverse_core.report import record_verdict
bounds, check = evaluated["judge"], acceptance(None, None, 2, "generated images judged right vs the shuffled-caption floor")
if embedded:
    check = acceptance(bounds[GENERATED]["judged_correct"],
                       bounds[FLOOR]["judged_correct"], 2,
                       "generated images judged right vs the shuffled-caption floor", n=len(captions))
    jt = judge_table(cfg, bounds)
    save_table(cfg, "table3_judge", jt, "Images judged right for their caption (95% bootstrap intervals over "
               "images): ours, ceiling and floor")
    display(jt.round(1))
    fl = bounds[FLOOR]
    print(f"floor: {fl['matches']} matches in {fl['n_pairs']} shuffled (image, caption) pairs "
          f"({fl['floor_rounds']} derangements of {fl['n_images']} prompts)")
print(check["verdict"])
if embedded:
    record_verdict(cfg, "tables/table3_judge.csv", check["verdict"])

# %% [markdown]
# Sample grids (Figures 1/8): for the first `N_GRID` prompts the real image, then `GRID_IMAGES` reranked images (the first is the image scored above; the others come from further sampling rounds with other seeds).

# %%
from lverse_core.pipeline.figures import image_grid_figure
from lverse_core.data.pixels import signed_from_uint8
from lverse_core.pipeline.eval_run import decode_to_uint8, grid_rows
n = min(N_GRID, len(captions))
grid_codes, _ = generate_images(cfg, m["model"], m["tokenizer"], captions[:n], prompts["prompt_ids"][:n],
                                m["scorer"], m["decode"], n_repeats=GRID_IMAGES)
g = cfg.image_grid
drawn = signed_from_uint8(decode_to_uint8(m["decode"], grid_codes.view(-1, g, g)))
drawn = drawn.view(n, GRID_IMAGES, *drawn.shape[1:])
real_shown = sets.real_per_prompt(list(range(n)))  # only the few images the grid shows, read here
fig = image_grid_figure(grid_rows(real_shown, drawn), captions[:n], GRID_IMAGES + 1)
save_figure(cfg, "figure8_text_to_image_samples", fig, caption=f"Figures 1/8 analogue: for {n} test captions the real image, then {GRID_IMAGES} reranked generated images")

# %% [markdown]
# What this run measured (`reports/<profile>/results/table3.json`; tests read it).

# %%
from lverse_core.report import headline_number, provenance, write_results
results = {"profile": cfg.profile, "source": provenance(cfg), "n_prompts": len(captions),
           "n_real_images": sets.n_real, "split": cfg.eval.t2i_split, "n_candidates": cfg.sampling.n_candidates,
           "image_likelihood_weight": cfg.sampling.image_likelihood_weight, "n_repeats": int(codes.shape[1]),
           "fid_feature_space": ours["fid_feature_space"], "fid": ours["fid"],
           "rows": scored,
           "mean_clip_score": float(clip_scores.mean()), "judge": bounds, "acceptance_2x_floor": check,
           "generated_from": GENERATED_IMAGES or "this notebook", "made_from": made_from(cfg), "timings_s": timings}
write_results(cfg, "table3", results, headline=[
    headline_number(f"Table 3, {len(captions)} prompts: FID-0 of our images ({ours['fid_feature_space']})",
                    max(ours["fid"]["FID-0"], 0), digits=3)] + [
    headline_number(f"{name} judged right for their caption", b["judged_correct"], b.get("ci95"), unit="%", scale=100)
    for name, b in bounds.items()])
print(check["verdict"])
pd.Series(timings, name="seconds")

# %% [markdown]
# ## Summary (computed from this run) and exercises

# %%
print(f"- {len(captions)} test captions, {ours['fid_feature_space']}: FID-0 {max(ours['fid']['FID-0'], 0):.3g} for our images.")
print(f"- {ceiling_reading['sentence']}")
if embedded:
    g, fl = bounds[GENERATED], bounds[FLOOR]
    print(f"- The judge finds {g['judged_correct']:.1%} [{g['ci95'][0]:.1%}, {g['ci95'][1]:.1%}] of our images right for "
          f"their caption, against {fl['judged_correct']:.1%} when the caption is shuffled: {check['verdict']}")

# %% [markdown]
# **Exercises**:
# 1. Rerank by the paper's rule (`OVERRIDES={"sampling.image_likelihood_weight": 0.0}`), or among fewer candidates
#    (`{"sampling.n_candidates": 8}`): how much of the share judged right is the reranker's? (`python
#    bench/rerank_analysis.py` judges every candidate under each rule at once.)
# 2. Sample more greedily (`OVERRIDES={"sampling.temperature": 0.5}`): which moves more, FID-0 or the judge?
# 3. Widen the blur sweep (`OVERRIDES={"eval.blur_radii": [0, 1, 2, 4, 8, 16]}`): where does BiART's excess over the
#    ceiling vanish?

# 4. The paper's L-Verse-CC row, zero-shot: train BiART on the data set's CC3M-format TSV (one caption per image)
#    and draw for the same test captions (`OVERRIDES={"data.train_source": "cc3m"}`, notebooks 00-05; at paper scale
#    the `paper-cc` profile). How far does the row fall behind the model trained on five captions per image?
