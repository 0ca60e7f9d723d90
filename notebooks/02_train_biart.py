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
# # 02 · Training BiART and sampling both directions (paper §3.4–3.6)
#
# This notebook trains the **bidirectional auto-regressive transformer** (BiART) of L-Verse on the pre-tokenized
# images of notebook 01 (AugVAE-SL codes) and the BPE-tokenized captions, then samples captions for held-out images
# and images for held-out captions, both reranked by CLIP. It first trains the small CLIP reranker that the embedded
# profiles use in place of OpenAI's ViT-B/32 (the `paper` profile loads that file from `assets.clip_vit_b32`).
#
# **One transformer, two sequences** (§3.4). With $L$ text tokens $y$ and $N = g^2$ image codes $x$:
#
# $$\text{text}\to\text{image}:\ [\mathrm{SOC}]\, y_1..y_L\, [\mathrm{SOI}]\, x_1..x_N \qquad
#   \text{image}\to\text{text}:\ [\mathrm{SOI}]\, x_1..x_N\, [\mathrm{SOC}]\, y_1..y_L$$
#
# Every input is token + position + **segment** embedding, the segment being [REF] (the condition) or [GEN] (the
# target). Directions alternate per iteration and both parts are learned:
#
# $$\mathcal{L} = w_\mathrm{ref}\,\underbrace{\big(-\tfrac{1}{|R|}\textstyle\sum_{t\in R}\log p(s_t\mid s_{<t})\big)}_{\text{NLL of [REF]}}
#   + w_\mathrm{gen}\,\underbrace{\big(-\tfrac{1}{|G|}\textstyle\sum_{t\in G}\log p(s_t\mid s_{<t})\big)}_{\text{NLL of [GEN]}}$$
#
# with [PAD] targets excluded. **Sampling** (§3.6) draws $n$ candidates per prompt with a KV cache and keeps the one
# with the highest clip-score $100\cos(E_I(x), E_T(y))$, $k$ times with different seeds; captions are sampled for
# `sampling.caption_tokens` tokens and cut at the first full stop (the untruncated text is kept too).
#
# **What to look for**: all four NLL curves fall (the [REF] text part falls fastest: captions are templates); on the
# embedded data the share of held-out captions that name every object correctly (`correct`); generated images whose
# shapes and colours follow the caption. The `ci` profile is a plumbing check only.

# %% tags=["parameters"]
PROFILE = "smoke"  # ci|smoke|gpu|paper
OVERRIDES = {}  # config overrides, dotted keys, e.g. {"augvae_train.sl_steps": 2600}: run in runs/ and reports/<profile>+<tag>/
N_EXAMPLES = 8  # held-out images to caption and captions to draw (shown and saved)
IMAGES_PER_CAPTION = 4  # reranked images drawn per held-out caption (k in §3.6)
RETRAIN = False  # True: delete this profile's clip_reranker.pt and biart.pt first and train from scratch

# %%
import time
import torch
import pandas as pd
from IPython.display import display
from lverse_core.config import available_profiles, data_source, load_run_config

assert PROFILE in available_profiles(), f"PROFILE={PROFILE!r}; valid: {available_profiles()}"
assert isinstance(N_EXAMPLES, int) and N_EXAMPLES > 0, "N_EXAMPLES must be a positive integer"
assert isinstance(IMAGES_PER_CAPTION, int) and IMAGES_PER_CAPTION > 0, "IMAGES_PER_CAPTION must be a positive integer"
assert isinstance(RETRAIN, bool), "RETRAIN must be True or False"
cfg = load_run_config(PROFILE, OVERRIDES)
device = cfg.resolved_device()
print(f"profile {cfg.profile}: BiART {cfg.biart.n_layer} layers x {cfg.biart.n_embd}, text_len {cfg.biart.text_len}, "
      f"{cfg.image_tokens} image tokens, {cfg.biart_train.steps} steps on {device}")

# %% [markdown]
# The data set and the run's text tokenizer (built from the training captions on first use; with `biart.compact_vocab` only the BPE ids the captions use).

# %%
from lverse_core.data.shapes_dataset import ensure_dataset
from lverse_core.data.tokenizer import ensure_tokenizer
if data_source(cfg).embedded:
    ensure_dataset(cfg)
if RETRAIN:
    from lverse_core.training.checkpoint_paths import checkpoint_path
    for path in (cfg.runs_root / "clip_reranker.pt", checkpoint_path(cfg, "biart")):
        path.unlink(missing_ok=True)
tok = ensure_tokenizer(cfg)
pd.DataFrame([{"vocabulary": "compact" if tok.compact else "full CLIP BPE", "text ids": tok.vocab_size,
               "text_len": tok.text_len, "pad": tok.pad_id, "eot": tok.eot_id}])

# %% [markdown]
# The CLIP reranker: trained here on the training split for the embedded profiles (config section `clip`), opened like OpenAI's file by `open_clip` (weights read without unpickling).

# %%
from lverse_core.sampling.clip_reranker import ensure_reranker, load_reranker
t0 = time.perf_counter()
clip_path = ensure_reranker(cfg)
scorer = load_reranker(cfg, device)
clip_seconds = time.perf_counter() - t0
print(f"CLIP reranker {clip_path.name} ready in {clip_seconds:.1f} s")

# %% [markdown]
# Training pairs: every caption with the AugVAE-SL codes of its image (written by notebook 01).

# %%
from lverse_core.training.biart_train import paired_tokens
train = paired_tokens(cfg, tok, "train")
pd.DataFrame([{"captions": len(train.text), "images": len(train.codes), "codes per image": train.codes.shape[1],
               "mean caption tokens": float((train.text != tok.pad_id).sum(1).float().mean())}])

# %% [markdown]
# ## Look inside: what BiART is trained on
#
# The same (caption, image) pair is written as two sequences. The table shows one training pair of each direction
# token by token: what the token is, its position id, its segment, and whether it is a target of the loss (the
# first rows of every run of similar tokens; `…` stands for the rest). This is the whole of the paper's §3.4 in
# one table: the condition comes first as [REF], the target follows as [GEN], and both are learned.

# %%
import dataclasses
from lverse_core.models.biart import BiART, I2T, T2I
from lverse_core.pipeline.biart_run import condense, layout_sentence, layout_table
from lverse_core.report import provenance, save_table
# the layout needs only the sequence sizes and vocabularies, not trained weights: a 1-layer, 8-wide stand-in
_shape_model = BiART(dataclasses.replace(BiART.args_from_config(cfg, tok.vocab_size, tok.pad_id), n_layer=1,
                                         n_head=1, n_embd=8))
layouts = {d: layout_table(_shape_model, tok, d, train.text[0], train.codes[0]) for d in (T2I, I2T)}
for d, table in layouts.items():
    save_table(cfg, f"02_sequence_layout_{d}", table.assign(source=provenance(cfg)),
               f"One {d} training sequence token by token: position id, segment, loss target (paper §3.4)",
               verdict=layout_sentence(table, d))
    print(layout_sentence(table, d))
    display(condense(table))

# %% [markdown]
# Train BiART (resumes from `runs/<profile>/biart.pt`; a finished run is loaded, not retrained).

# %%
from lverse_core.training.biart_train import train_biart
t0 = time.perf_counter()
model = train_biart(cfg, train, text_vocab_size=tok.vocab_size, pad_id=tok.pad_id).to(device)
train_seconds = time.perf_counter() - t0
pd.DataFrame([{"parameters": model.num_params(), "transformer blocks": model.num_params("blocks"),
               "embeddings": model.num_params("embeddings"), "heads": model.num_params("heads"),
               "steps": cfg.biart_train.steps, "seconds (this call)": round(train_seconds, 1)}])

# %% [markdown]
# Loss curves per direction and per part ([REF] = the condition, [GEN] = the target).

# %%
from lverse_core.pipeline.biart_run import loss_curves, plot_loss_curves
from lverse_core.report import save_figure, save_table, headline_number, write_results, provenance
curves = loss_curves(cfg)
fig = plot_loss_curves(curves)
save_figure(cfg, "02_biart_loss_curves", fig, caption="BiART training NLL per direction and part ([REF] condition, [GEN] target)")
final = curves.groupby(["direction", "part"])["nll"].last().unstack()
final.columns.name = None
final = final.reset_index().assign(source=provenance(cfg))
save_table(cfg, "02_biart_final_nll", final, "BiART training NLL at the last logged step, per direction and part")
final

# %% [markdown]
# **Is the condition used?** The same NLL on held-out test pairs (teacher forcing, both directions). Image tokens are the [GEN] part of text->image (the caption comes first) and the [REF] part of image->text (nothing comes first), so the difference between the two is what the caption tells the model about the image; the text rows measure the same for the image. Paper §3.4 trains both parts; only the gap shows that the [GEN] part learned to read its condition.

# %%
from lverse_core.evaluation.likelihood import heldout_pass
from lverse_core.pipeline.biart_run import conditioning_gap
test_pairs = paired_tokens(cfg, tok, "test")
held, token_gaps = heldout_pass(model, test_pairs, device)  # the table, and the per-token gaps used below
gap = conditioning_gap(held)
save_table(cfg, "02_biart_heldout_nll", held.assign(source=provenance(cfg)),
           "BiART NLL on held-out test pairs per direction and part ([REF] condition, [GEN] target)",
           verdict=gap["sentence"])
print(gap["sentence"])
held

# %% [markdown]
# **How clearly, and where, the caption helps.** One mean hides both. For every held-out pair and every image code
# we take the NLL of the code with nothing before it ([REF], image->text) minus its NLL after the caption ([GEN],
# text->image): positive where the caption made the code more predictable. Averaged per test image, the mean comes
# with a 95% interval over images, so "below" can be told from noise. Why the gap per token is small next to the ~3
# nats each code costs: a code also records what no caption says (here the background's hue, gradient, stripes and
# noise; in COCO, everything the five captions leave out), and the caption can only remove the part it describes. On
# the embedded data the object boxes are known, so the gap is split between the cells an object touches and the
# background cells, and the maps below show it code by code (red: the caption helped).

# %%
from lverse_core.evaluation.likelihood import object_cells, per_image_gaps
from lverse_core.pipeline.biart_run import gap_by_region, gap_map_figure
from lverse_core.data import caption_records
from lverse_core.sampling.generate import real_images
from lverse_core.training.pretokenize import load_codes
codes, ids = load_codes(cfg, "test")  # the codes test_pairs was built from, in the same order (also used below)
records = {r["image_id"]: r for r in caption_records(cfg, "test")}
test_ids = [int(i) for i in ids]
cells = None
if data_source(cfg).ground_truth:
    from lverse_core.data.loaders import load_attributes
    attributes = load_attributes(cfg)
    cells = torch.stack([object_cells(attributes[i], cfg.data.image_size, cfg.image_grid) for i in test_ids])
where = gap_by_region(token_gaps, test_pairs.owner, len(test_ids), cells)
gap["by_region"] = {k: v for k, v in where.items() if k != "sentence"}
gap["sentence"] = gap["sentence"].rstrip(".") + "; " + where["sentence"] + "."
print(where["sentence"])
n_map = min(N_EXAMPLES, 6, len(test_ids))
maps = per_image_gaps(token_gaps, test_pairs.owner, len(test_ids))[:n_map].view(-1, cfg.image_grid, cfg.image_grid)
pictures = real_images(cfg, "test", test_ids[:n_map])(list(range(n_map)))
first_captions = [records[i]["captions"][0] for i in test_ids[:n_map]]
save_figure(cfg, "02_biart_gap_maps", gap_map_figure(pictures, maps, first_captions),
            caption="Per code: NLL with nothing before it ([REF]) minus NLL after the caption ([GEN]), averaged over "
                    "each test image's captions", verdict=where["sentence"])

# %% [markdown]
# Captions for the held-out test images: `sampling.caption_candidates` samples each (0: `sampling.n_candidates`), cut at the first full stop, the best kept (and its untruncated text); the first `N_EXAMPLES` are shown. "Best" is the highest clip-score (paper §3.6) or, when `sampling.caption_likelihood_weight` $w > 0$ (the smoke profile), the highest $z(\text{clip-score}) + w\,z(\log p_\text{BiART}(\text{caption} \mid \text{image codes}))$, both z-scored over one image's candidates: our addition: the small CLIP reranker and BiART's own likelihood are right on different images, and together keep a right caption more often than either (bench/README.md, "Captions: candidates and reranking").
# The candidates are sampled and reranked a few images at a time and each test image is read from disk only when its candidates are scored, so memory does not grow with the test split (the paper's 5,000 images x 64 candidates).
# This is the very draw Table 2 scores: `generate_captions` writes it under `runs/<profile>/generated/` (keyed by the settings, the codes and both models' weights) and notebook 04 reads it back instead of sampling again.

# %%
from lverse_core.pipeline.biart_run import caption_frame, clip_score_fns
from lverse_core.sampling.candidates import caption_candidate_count
from lverse_core.sampling.generate import caption_cache_dir, generate_captions
images = real_images(cfg, "test", ids)  # image k of the codes, read from disk only when its captions are scored
_, i2t_score = clip_score_fns(scorer, None, cfg.image_grid, images)
model.eval()
generated = generate_captions(cfg, model, tok, codes, [int(i) for i in ids], scorer, images=images,
                              shard_dir=caption_cache_dir(cfg, "test", model, scorer, codes, ids))
captions = caption_frame(cfg, generated, references=[records[int(i)]["captions"] for i in ids])
pick = list(range(min(N_EXAMPLES, len(ids))))
save_table(cfg, "02_biart_caption_examples", captions.iloc[pick].assign(source=provenance(cfg)),
           "BiART captions for held-out images (first N_EXAMPLES of the test split)")
if "correct" in captions:
    print(f"{captions['correct'].mean():.1%} of {len(captions)} test captions name every object correctly")
captions.iloc[pick]

# %% [markdown]
# **Look inside the caption reranking** (§3.6): every candidate sampled for the first test image, cut at its first
# full stop, with its clip-score (and its ranking score when the likelihood weight is on); the highest is kept.

# %%
from lverse_core.pipeline.biart_run import i2t_candidates, reranking_sentence
one_caption = i2t_candidates(cfg, model, tok, torch.as_tensor(codes[:1].astype("int64")).to(device), int(ids[0]),
                             i2t_score)
save_table(cfg, "02_caption_candidates_one_image", one_caption.assign(source=provenance(cfg)),
           f"All {len(one_caption)} sampled captions for test image {int(ids[0])}, their clip-scores and the one kept",
           verdict=reranking_sentence(one_caption.get("ranking score", one_caption["clip-score"]),
                                      one_caption.get("names every object")))
print(reranking_sentence(one_caption.get("ranking score", one_caption["clip-score"]), one_caption.get("names every object")))
one_caption

# %% [markdown]
# Images for held-out captions: for each caption, `IMAGES_PER_CAPTION` images, each the best of `sampling.n_candidates` (decoded by AugVAE-SL in FP32) by the clip-score or, when `sampling.image_likelihood_weight` $w > 0$ (the smoke profile; our addition, as for captions), by $z(\text{clip-score}) + w\,z(\log p_\text{BiART}(\text{caption} \mid \text{image codes}))$: the image$\to$text direction reads back each image the text$\to$image direction drew. The real test image comes first.

# %%
from lverse_core.pipeline.biart_run import image_samples
from lverse_core.sampling.candidates import load_augvae_decoder
from lverse_core.pipeline.figures import image_grid_figure
decode = load_augvae_decoder(cfg, device)
t2i_score, _ = clip_score_fns(scorer, decode, cfg.image_grid)
prompts = [records[int(ids[i])]["captions"][0] for i in pick]
drawn = image_samples(cfg, model, tok, prompts, score_fn=t2i_score, n_repeats=IMAGES_PER_CAPTION)
rows = [torch.cat([images([j]), decode(drawn["codes"][j]).cpu()]) for j in range(len(prompts))]
fig = image_grid_figure(rows, prompts, IMAGES_PER_CAPTION + 1)
save_figure(cfg, "02_biart_image_examples", fig, caption=f"Held-out captions: the real image, then {IMAGES_PER_CAPTION} reranked BiART images")

# %% [markdown]
# **Look inside the image reranking**: all candidates drawn for the first held-out caption, their clip-scores (and
# ranking scores, when BiART's likelihood takes part), and the one kept (framed).

# %%
from lverse_core.pipeline.biart_run import candidates_figure, t2i_candidates
one_prompt = t2i_candidates(cfg, model, tok, prompts[0], t2i_score, decode)
one_prompt_ok = None
if data_source(cfg).ground_truth:
    from lverse_core.data.pixels import signed_from_uint8, uint8_from_signed
    from lverse_core.evaluation.judge import ensure_judge, image_matches
    judge = ensure_judge(cfg)
    verdicts = judge.judge_image(signed_from_uint8(uint8_from_signed(one_prompt["images"])))
    one_prompt_ok = [image_matches(v, prompts[0]) for v in verdicts]
t2i_reading = reranking_sentence(one_prompt["ranking"].tolist(), one_prompt_ok,
                                 criterion="judged right for the caption by the kit's judge")
with_ll = cfg.sampling.image_likelihood_weight > 0
save_figure(cfg, "02_image_candidates_one_caption",
            candidates_figure(one_prompt["images"], one_prompt["scores"], one_prompt["chosen"], prompts[0],
                              ranking=one_prompt["ranking"] if with_ll else None),
            caption="Every image candidate for one caption with its clip-score"
                    + (" and ranking score" if with_ll else "") + "; the kept one framed",
            verdict=t2i_reading)
print(t2i_reading)

# %% [markdown]
# What this run measured (saved to `reports/<profile>/results/02_biart.json`).

# %%
summary = {"profile": cfg.profile, "source": provenance(cfg), "parameters": model.num_params(),
           "steps": cfg.biart_train.steps, "train_seconds_this_call": train_seconds, "clip_seconds": clip_seconds,
           "final_nll": {f"{r.direction} {p}": r[p] for _, r in final.iterrows() for p in ("[REF]", "[GEN]")},
           "heldout_nll": held.to_dict(orient="records"), "conditioning_gap": gap,
           "test_images_captioned": len(captions), "image_examples": len(pick),
           "caption_correct_fraction": float(captions["correct"].mean()) if "correct" in captions else None,
           "mean_clip_score_chosen_images": float(drawn["scores"].max(-1).values.mean())}
from lverse_core.pipeline import artefact_ids

summary["made_from"] = artefact_ids.ids(cfg, ("tokenizer", "augvae_sl", "codes train", "codes val", "codes test",
                                              "biart", "clip_reranker"))  # index.html marks this stale if one is remade
write_results(cfg, "02_biart", summary, headline=[
    headline_number(f"BiART held-out NLL of {m} tokens, [REF] minus [GEN] (what the condition is worth)",
                    gap[m]["gap_nats"], unit="nats/token", digits=3) for m in ("image", "text")])
summary

# %% [markdown]
# ## Summary (computed from this run) and exercises

# %%
print(f"- BiART ({model.num_params() / 1e6:.2f}M parameters) trained {cfg.biart_train.steps} steps, alternating "
      f"text->image and image->text sequences.")
print(f"- Held-out conditioning: {gap['sentence']}")
if "correct" in captions:
    print(f"- {captions['correct'].mean():.1%} of the {len(captions)} test captions name every object right "
          f"(reranked among {caption_candidate_count(cfg.sampling)} candidates, temperature {cfg.sampling.temperature}).")
print(f"- Reranking, one caption: "
      f"{reranking_sentence(one_caption.get('ranking score', one_caption['clip-score']), one_caption.get('names every object'))}")

# %% [markdown]
# **Exercises** (each one parameter; `OVERRIDES` runs train into their own folders):
# 1. Turn the condition's loss off (`OVERRIDES={"biart_train.ref_loss_weight": 0.0}`): do the [GEN] NLLs and the
#    caption accuracy move? The paper trains both parts.
# 2. Rerank among fewer or more caption candidates (`OVERRIDES={"sampling.caption_candidates": 8}`), or by the
#    clip-score alone (`{"sampling.caption_likelihood_weight": 0.0}`, the paper's rule): how often does the kept
#    caption change, and how does the share of right captions move?
# 3. Train twice as long (`OVERRIDES={"biart_train.steps": 6400}` on `smoke`, which trains 3,200; ~6 more minutes):
#    which of the four NLL curves was still falling?
