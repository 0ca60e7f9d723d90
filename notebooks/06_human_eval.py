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
# # 06 · Human evaluation of captions (paper §4.2, Figure 7)
#
# The paper showed 150 people 50 random sets each (from a pool of 500) of an image, its ground-truth caption (GT) and
# L-Verse's caption (Pred), in random order, and asked "Which caption well describes the given image?" — the first,
# the second, or both. L-Verse received **30.4%** of votes (Pred + Both). With $v_i\in\{\mathrm{GT},\mathrm{Pred},
# \mathrm{Both}\}$ the $n$ votes,
#
# $$\hat s_c = \tfrac1n\textstyle\sum_i [v_i = c],\qquad \text{95\% CI: percentiles 2.5 and 97.5 of } \hat s_c
# \text{ over bootstrap replicates that resample sets and raters.}$$
#
# Votes are not independent: all votes on one set share its image and captions, all votes of one rater share that
# person's taste. Resampling single votes would give intervals that are too narrow, so each replicate draws the sets
# with replacement (and the raters, when there are several) and weights each vote by how often its set and its rater
# were drawn (the two-way bootstrap, `human_eval.vote_shares`).
#
# This notebook builds the same study from notebook 04's captions: one self-contained HTML form per rater
# (`reports/<profile>/human_eval/forms/`, images embedded, no network), the blinding key in a separate file, and an
# append-only store of validated answer files. On embedded profiles **simulated** raters answer from the ground-truth
# attributes: a caption's score is the share of the scene it names right; each rater has their own strictness (a
# lenient one accepts a caption that gets most of the scene right) and answers 5% of sets at random (lapses). Every
# number from them says "simulated". **Their limits**: here the ground-truth caption is right by construction, so a
# "Pred only" vote can only be a lapse, while human raters of COCO can prefer a prediction over an incomplete
# reference; strictness and lapse rate are assumptions, not measurements of people. For real raters, collect their
# `answers_<form>.json` files in `ANSWERS_DIR` and re-run.
#
# **What to look for**: the Pred + Both share beside the paper's 30.4% (different data and raters: a shape, not a
# replication), and how wide the confidence intervals are for the number of votes.

# %% tags=["parameters"]
PROFILE = "smoke"  # ci|smoke|gpu|paper
OVERRIDES = {}  # config overrides, dotted keys, e.g. {"augvae_train.sl_steps": 2600}: run in runs/ and reports/<profile>+<tag>/
SIMULATE = True  # True|False: answer the forms with the simulated rater (embedded profiles; real data has no ground truth)
ANSWERS_DIR = ""  # folder of real answer files to ingest; empty means reports/<profile>/human_eval/inbox

# %%
from lverse_core.config import available_profiles, data_source, load_run_config

assert PROFILE in available_profiles(), f"PROFILE={PROFILE!r}; valid: {available_profiles()}"
from pathlib import Path
assert isinstance(SIMULATE, bool), "SIMULATE must be True or False"
assert isinstance(ANSWERS_DIR, str), "ANSWERS_DIR must be a folder path (a string)"
cfg = load_run_config(PROFILE, OVERRIDES)
simulate = SIMULATE and data_source(cfg).ground_truth  # the simulated rater answers from the ground truth
if SIMULATE and not simulate:
    print(f"SIMULATE is on, but data.source is {cfg.data.source!r}: there is no ground truth to simulate raters from, "
          "so the forms wait for people's answers (ANSWERS_DIR)")
print(f"profile {cfg.profile}: pool {cfg.eval.human_eval_pool}, {cfg.eval.human_eval_form_size} sets per form, "
      f"{cfg.eval.human_eval_raters} forms")

# %% [markdown]
# The captions of notebook 04 (truncated at the first full stop) and the test references.

# %%
from lverse_core.pipeline.eval_run import TRUNCATED
from lverse_core.pipeline.eval_tables import captions_made_from, slug
from lverse_core.evaluation.metrics import read_caption_results, read_coco_references
from lverse_core.provenance import require
from lverse_core.pipeline import artefact_ids
cap_dir = cfg.reports_root / "results" / "captions"
path = cap_dir / f"captions_{slug(TRUNCATED)}_test.json"
assert path.exists(), f"{path} is missing: run notebooks/04_table2_image_to_text.ipynb with PROFILE={PROFILE!r} first"
require(path, captions_made_from(cfg, "test"))  # drawn by this run's models and settings, else refused as stale
preds = read_caption_results(path)
refs = read_coco_references(cap_dir / "references_test.json")
print(f"{len(preds)} generated captions, {len(refs)} images with references")

# %% [markdown]
# Build the study: pool, blinded forms (one HTML page per rater) and the separate key.

# %%
from lverse_core.evaluation import human_eval as H
from lverse_core.data import caption_records
paths = {int(r["image_id"]): r["path"] for r in caption_records(cfg, "test")}
study = H.build_study(cfg, preds, paths, refs)
forms = sorted((H.study_dir(cfg) / "forms").glob("*.html"))
print(f"study {study['study']}: {len(study['pool'])} sets, {len(forms)} forms, e.g. {forms[0].relative_to(cfg.reports_root)}")

# %% [markdown]
# Answers: simulated raters (embedded profiles) and/or real answer files, validated and appended.

# %%
inbox = Path(ANSWERS_DIR) if ANSWERS_DIR else H.study_dir(cfg) / "inbox"
files = sorted(inbox.glob("answers_*.json")) if inbox.exists() else []
if simulate:
    from lverse_core.data import load_attributes
    files += H.simulate_raters(cfg, load_attributes(cfg), H.study_dir(cfg) / "simulated")
report = H.ingest_answers(cfg, files)
votes = H.unblind(cfg)
print(f"ingested {len(report['ingested'])} new file(s), {len(report['already'])} already in the store; "
      f"{len(votes)} votes in all")
votes_in = len(votes) > 0  # real data before anyone answered: the forms above wait for people, nothing to count yet
if not votes_in:
    print(f"no votes yet: send the forms in {H.study_dir(cfg)} to raters, put their answer files into {inbox} "
          "(or ANSWERS_DIR) and run this notebook again")

# %% [markdown]
# Vote shares with bootstrap 95% intervals (`eval.bootstrap` replicates over sets and raters), and Figure 7 with
# the paper's 30.4% drawn over the one bar it describes, Pred + Both.

# %%
if votes_in:
    from IPython.display import display
    from lverse_core.report import save_figure, save_table, headline_number, write_results, provenance
    simulated = bool(len(votes)) and bool(votes["simulated"].all())
    shares = H.vote_shares(votes, cfg.eval.bootstrap, seed=cfg.seed)
    who = "simulated raters (ground-truth attributes)" if simulated else "human raters"
    shares_t = shares.assign(raters=who, source=provenance(cfg))
    save_table(cfg, "06_human_eval_vote_shares", shares_t, f"Figure 7 data: vote shares with 95% bootstrap CIs ({who})")
    fig = H.figure7(shares, simulated=simulated)
    row = shares.set_index("vote").loc["Pred + Both"]
    save_figure(cfg, "06_figure7_human_eval", fig, caption=f"Figure 7 analogue: vote shares with 95% bootstrap intervals ({who})",
                verdict=f"Pred + Both {row['share']:.1%} [{row['ci_low']:.1%}, {row['ci_high']:.1%}] from {len(votes)} "
                        f"votes on {int(row['n_sets'])} sets; the paper's human raters gave L-Verse "
                        f"{H.paper_pred_plus_both_percent():.1f}% on MS-COCO.")
    display(shares_t)

# %%
if votes_in:
    row = shares.set_index("vote").loc["Pred + Both"]
    write_results(cfg, "06_human_eval", {"study": study["study"], "raters": who, "simulated": simulated,
                                        "n_votes": int(len(votes)), "pred_plus_both": float(row["share"]),
                                        "ci": [float(row["ci_low"]), float(row["ci_high"])],
                                        "paper_pred_plus_both_percent": H.paper_pred_plus_both_percent(),
                                        "made_from": artefact_ids.ids(cfg, ("biart", "augvae_sl", "clip_reranker"))},
                  headline=[headline_number(f"Pred + Both, {who}, {len(votes)} votes", row["share"],
                                            (row["ci_low"], row["ci_high"]), unit="%", scale=100),
                            headline_number("Pred + Both, L-Verse paper (human raters, MS-COCO)",
                                            H.paper_pred_plus_both_percent(), unit="%")])
    print(f"Pred + Both: {row['share']:.1%} [{row['ci_low']:.1%}, {row['ci_high']:.1%}] ({who}); paper: "
          f"{H.paper_pred_plus_both_percent():.1f}% (human)")

# %% [markdown]
# ## Summary (computed from this run) and exercises

# %%
if votes_in:
    naive = H.vote_shares(votes["vote"].tolist(), cfg.eval.bootstrap, seed=cfg.seed).set_index("vote").loc["Pred + Both"]
    by = shares.set_index("vote")
    print(f"- {len(votes)} votes on {int(row['n_sets'])} sets by {int(row['n_raters'])} {who}: GT {by.loc['GT', 'share']:.1%}, "
          f"Pred {by.loc['Pred', 'share']:.1%}, Both {by.loc['Both', 'share']:.1%}.")
    print(f"- Pred + Both {row['share']:.1%} [{row['ci_low']:.1%}, {row['ci_high']:.1%}]; the paper's L-Verse got "
          f"{H.paper_pred_plus_both_percent():.1f}% from human raters on MS-COCO (other data, other raters: a shape to "
          f"compare, not a replication).")
    width, naive_width = row["ci_high"] - row["ci_low"], naive["ci_high"] - naive["ci_low"]
    print(f"- Treating the votes as independent would have given [{naive['ci_low']:.1%}, {naive['ci_high']:.1%}]"
          + (f", {naive_width / width:.0%} of the width of the interval that resamples sets and raters." if width > 0
             else ": every vote agrees, so neither interval has any width."))

# %% [markdown]
# **Exercises**:
# 1. Be a rater: open one form under `reports/<profile>/human_eval/forms/`, answer it, save the file into
#    `ANSWERS_DIR`, run with `SIMULATE=False`, and compare your Pred + Both with the simulated raters'.
# 2. More raters (`OVERRIDES={"eval.human_eval_raters": 30}`): which interval narrows, and by how much?
# 3. Better captions make a different study: rerank among more candidates in notebook 04
#    (`OVERRIDES={"sampling.caption_candidates": 32}` for notebooks 04 and 06) and compare the Both share.
