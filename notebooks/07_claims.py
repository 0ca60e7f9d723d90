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
# # 07 · The paper's claims, each against its control (paper §3–4)
#
# Tables 1–3 say how good the models are; they do not say *why*. The paper credits its numbers to a handful of
# design choices. This notebook re-tests each one against a control that differs in that choice alone, trained under
# the same budget, for several seeds, and lets an interval decide:
#
# 1. **Cross-level augmentation** (§3.3, Table 1). (a) AugVAE-SL finetuned from the ML whose four levels share one
#    codebook vs the same SL finetuned (same steps) from an ML with one codebook per level (each level its own
#    quarter of the codes: the same total, no sharing), i.e. the tokenizer BiART uses; the same comparison of the
#    two MLs is a secondary row; (b) AugVAE-SL finetuned from ML vs the same SL trained from scratch for ML + SL
#    steps (the plain VQ-VAE).
# 2. **Segment embedding** (§3.4): BiART with and without the [REF]/[GEN] embedding, under the kit's per-modality
#    positions and under one position table over the whole sequence (the official README's snippet). With
#    per-modality positions the direction is already visible, so the two schemes may disagree.
# 3. **Bidirectional training** (§3.4): one model trained on both directions vs a model per direction, each with
#    half the steps and the warm-up scaled alike (equal steps per direction, equal total compute, the same
#    learning-rate schedule over its training).
# 4. **Caption truncation** (§3.6, Table 2): the same samples cut at the first full stop vs kept whole. The paper
#    reports BLEU-4 up and CIDEr down for the truncated ones.
# 5. **CLIP reranking** (§3.6): top-1 of N candidates (the profile's reranking rule) vs a single sample.
# 6. **Blur** (§4.3, Table 3): does the distance of generated images to real ones fall with the blur radius faster
#    than that of AugVAE-SL reconstructions (the decoder's ceiling)? Measured with KID (torch-fidelity's subset
#    estimator, defined at a hundred images, where FID's covariances are rank-deficient) on `claims.blur_images` test
#    images and as many generated (smoke: all 300; at 100 a good model's images could not always be told from the
#    real ones); both falls are shares of the generated images' KID at the smallest radius, since the
#    reconstructions' own KID can be zero.
#
# It runs on the embedded profiles (ci, smoke, gpu): the judged measures need the data set's ground truth. Each seed
# redraws the embedded data set, the initialisation and the batch order; the two instruments, the attribute judge and
# the CLIP reranker, are trained once on the first seed's draw and score every seed. Per seed the method and its
# control share all of that, and where a measure is an average over test items (PSNR per image, a caption right or
# not, an image judged right or not, held-out NLL per pair) they share the items too: the comparison is **paired**
# at both levels. With $d_{s,i}$ the method's value minus the control's on item $i$ of seed $s$ ($n$ seeds), the
# difference is $\bar d = \frac1n\sum_s \bar d_s$, and its standard error $\mathrm{se}$ comes from a bootstrap
# that resamples the seeds, then the items within each drawn seed (both sources of variation: which training, which
# test images). The interval and the p-value are
#
# $$\bar d \pm t_{1-\alpha/2,\,n-1}\,\mathrm{se}, \qquad p = 2\,P\big(T_{n-1} > |\bar d| / \mathrm{se}\big),$$
#
# Student-t on $n - 1$ degrees of freedom because only $n$ trainings vary (a percentile interval of 3 seeds cannot
# be wider than their range, and covered the truth ~85% of the time at a nominal 95% in simulation). It is never
# zero-width: with no spread at all, $\mathrm{se}$ is one step of the measure (one item in $N$ for a share), and a
# measure with no items and no spread between seeds has no interval. Measures with no items (FID, KID, corpus CIDEr)
# use the seeds alone (`lverse_core/evaluation/statistics.py`, `paired_difference`).
#
# Each claim has **one primary measure**, declared with an equivalence margin and its reason in the profile before
# the run (`claims.primaries`); every other row is secondary and describes. A claim is *supported* when the whole
# interval lies on the side the paper predicts, *contradicted* when it lies on the other side, *no difference within
# the margin* when it lies inside $[-\text{margin}, \text{margin}]$ (primaries only), and *inconclusive* otherwise
# (`lverse_core/evaluation/claims.py`). The six primaries are corrected for multiplicity with Holm's step-down: the
# $j$-th smallest of the $m = 6$ p-values is tested at $\alpha/(m-j+1)$, its interval is shown at that level, and $p$
# is Holm's adjusted value (`lverse_core/evaluation/scorecard.py`). A run of some claims (`CLAIMS`) counts each
# claim it did not run as a p of 1, so its verdicts are ones that Holm over all six would also give. Every row
# states its **minimum detectable effect**,
# $(t_{1-\alpha/2,\,n-1} + t_{0.8,\,n-1})\,\mathrm{se}$, the smallest true difference its design finds 4 times in
# 5; an inconclusive primary also the number of seeds that would bring it to its margin. A row whose measure is
# missing or NaN on a seed says *not measured* and why; the other rows still decide. One run never decides: a
# single-seed verdict on Table 1 once flipped between two machines of the same commit.
#
# **Budgets.** Every arm is trained with the profile's own recipe and steps (`claims.*` can set shared budgets; the
# ci profile uses tiny ones) and sampled with its candidates and reranking rule. The main run's seed reuses the main
# run's models where they were made from the same settings and inputs; `CLAIMS` (or `claims.only`) runs some
# claims' arms only, `PRIMARIES_ONLY` (or `claims.primaries_only`) only the arms their primary measures compare,
# `SEEDS` (or `claims.seeds`) other seeds: each seed's arms are kept, so a later run with more seeds adds to them.
# **What to look for**: each arm's own quality first (an arm that cannot caption or draw tests
# nothing), then which claims hold, which are inconclusive (an interval across zero and past the margin says
# "not resolved by these runs", not "false"), and whether any is contradicted.

# %% tags=["parameters"]
PROFILE = "smoke"  # ci|smoke|gpu|paper
OVERRIDES = {}  # config overrides, dotted keys, e.g. {"augvae_train.sl_steps": 2600}: run in runs/ and reports/<profile>+<tag>/
CLAIMS = ""  # claim numbers to run, space-separated, e.g. 1 3 (the make variable CLAIMS); empty: all six
PRIMARIES_ONLY = False  # True: train only the arms the primary measures compare (the make variable PRIMARIES_ONLY)
SEEDS = ""  # seeds to run, space-separated, e.g. 0 1 2 3 4 (the make variable SEEDS); empty: the profile's claims.seeds

# %%
import time
import pandas as pd
from IPython.display import display
from lverse_core.config import available_profiles, load_run_config

assert PROFILE in available_profiles(), f"PROFILE={PROFILE!r}; valid: {available_profiles()}"
cfg = load_run_config(PROFILE, OVERRIDES)
from lverse_core.evaluation.claims_experiment import blur_images, budgets, claims_selected, with_parameters
cfg = with_parameters(cfg, CLAIMS, PRIMARIES_ONLY, SEEDS)  # the same run folders: arms of earlier runs are reused
b = {**budgets(cfg), "blur_images": blur_images(cfg)}
print(f"profile {cfg.profile}: claims {', '.join(map(str, claims_selected(cfg)))}; seeds {cfg.claims.seeds}; "
      f"AugVAE-ML {b['ml_steps']} + SL {b['sl_steps']} steps (SL from scratch {b['ml_steps'] + b['sl_steps']}), "
      f"BiART {b['biart_steps']} steps per arm (one-direction controls {b['biart_steps'] // 2}); "
      f"{b['eval_images']} test images and prompts (claim 6's KIDs: {b['blur_images']}), "
      f"{b['n_candidates']} image candidates")

# %% [markdown]
# ## What this run will train, and for how long
#
# Before anything trains: every training the selected claims need, seed by seed, and which are reused (the main
# run's models for its seed, arms finished or measured by an earlier claims run, decided by the same provenance
# records as during the run), with the time of the rest from a few steps of each kind timed on this machine. The
# same lines go to the command line.

# %%
from lverse_core.evaluation.claims_measures import progress
from lverse_core.pipeline.estimate import claims_estimate
for line in claims_estimate(cfg).lines():
    progress(line)

# %% [markdown]
# ## The switches
#
# Each control is one configuration key away from the method (unit tests check that each really changes the model):
# `augvae.codebook: per_level`, `biart.segment_embedding: false`, `biart.positions: shared`,
# `biart_train.direction: t2i | i2t` (with half the steps and warm-up); truncation, reranking and blur are read off
# the same samples.

# %%
from lverse_core.evaluation.claims_experiment import AUGVAE_ARMS, BIART_ARMS, arms_selected, biart_arm_config, seed_config
cfg0 = seed_config(cfg, cfg.claims.seeds[0])
chosen = arms_selected(cfg)
arms = [{"arm": arm, "what": "AugVAE", "differs by": {
    "ml": "-", "ml_per_level": "augvae.codebook: per_level", "sl": "-",
    "sl_per_level": "augvae.codebook: per_level (SL finetuned from the per-level ML)",
    "baseline": "SL trained from scratch"}[arm]} for arm in AUGVAE_ARMS if arm in chosen]
KEYS = {"segment embedding": ("biart", "segment_embedding"), "positions": ("biart", "positions"),
        "direction": ("biart_train", "direction"), "steps": ("biart_train", "steps"),
        "warm-up": ("biart_train", "warmup_steps")}
for arm in (a for a in BIART_ARMS if a in chosen):
    a = biart_arm_config(cfg0, arm)
    value = {k: getattr(getattr(a, sec), key) for k, (sec, key) in KEYS.items()}
    paper = {k: getattr(getattr(cfg0, sec), key) for k, (sec, key) in KEYS.items()}
    arms.append({"arm": arm, "what": "BiART", "differs by": ", ".join(
        f"{k}: {v}" for k, v in value.items() if v != paper[k]) or "- (the paper's model)"})
display(pd.DataFrame(arms))

# %% [markdown]
# ## Train and measure every arm of every seed
#
# Finished runs and measures are reused (`runs/<profile>/claims/s<seed>/`, each arm saved as soon as it is measured),
# so an interrupted notebook continues with the next arm. One line per arm is printed here and at the command line.

# %%
from lverse_core.evaluation.claims_experiment import run_claims
t0 = time.monotonic()
measures = run_claims(cfg)
run_seconds = time.monotonic() - t0
print(f"{len(measures)} seeds in {run_seconds:.0f} s")

# %% [markdown]
# The raw measures, seed by seed (what every verdict below rests on).

# %%
raw = pd.DataFrame([{"seed": s, "arm": arm, **{k: v for k, v in m.items() if isinstance(v, (int, float))}}
                    for s, by_arm in measures.items() for arm, m in by_arm.items()])  # scalars; per-item lists aside
display(raw.set_index(["arm", "seed"]).sort_index().round(4))

# %% [markdown]
# Each arm's own quality, size and cost (mean over seeds): an arm that cannot caption or draw tests no claim.

# %%
QUALITY = {"captions_right": "captions right", "images_right": "images judged right",
           "judged_right": "reconstructions judged right", "parameters": "parameters", "steps": "steps",
           "train_seconds": "training s"}
quality = (raw.groupby("arm", sort=False)[[k for k in QUALITY if k in raw]].mean()
           .rename(columns=QUALITY).round(3))
display(quality)

# %% [markdown]
# Claim 6 as a picture: KID of generated images and of AugVAE-SL reconstructions (the decoder's ceiling) against the
# real test images, all blurred alike, over the blur radius; one line per seed.

# %%
import matplotlib.pyplot as plt
from lverse_core.evaluation.claims_measures import blur_kid_figure
from lverse_core.report import save_figure
fig = blur_kid_figure(measures, cfg.eval.blur_radii)
if fig is not None:
    save_figure(cfg, "07_claims_blur_kid", fig, caption="Claim 6: KID of generated images and of AugVAE-SL "
                "reconstructions (the decoder's ceiling) against the real test images over the blur radius, one "
                "line per seed")
    plt.show()

# %% [markdown]
# ## The scorecard
#
# One row per claim and measure; `role` says which row decides each claim (primary) and which describe it
# (secondary). `low`, `high` and `p` of a primary are at its Holm level; `MDE` is the minimum detectable effect at
# the row's level and 80% power, in the measure's units.

# %%
import torch
from lverse_core.evaluation.claims import NOT_MEASURED, VERDICTS
from lverse_core.evaluation.claims_experiment import claim_rows
from lverse_core.evaluation.scorecard import PRIMARY, scorecard, shortfall
from lverse_core.hardware import precision_plan
from lverse_core.report import cpu_info, git_commit, headline_number, machine, provenance, save_table, write_results
card = scorecard(measures, cfg.claims, claim_rows(cfg))  # the rows of the claims this run measured
primary = card[card["role"] == PRIMARY]
decided = primary["verdict"].str.split(":").str[0]
counts = {v: int((decided == v).sum()) for v in (*VERDICTS, NOT_MEASURED)}
sentence = (f"Of the {len(primary)} primary measures of this run (one per claim; Holm over the six declared) over "
            f"{len(measures)} seeds: " +
            ", ".join(f"{n} {v}" for v, n in counts.items() if n) + f"; {len(card) - len(primary)} secondary rows.")
gaps = shortfall(card)
save_table(cfg, "07_claims_scorecard", card.round(4).assign(source=provenance(cfg)),
           f"Claims scorecard: method vs control over seeds {cfg.claims.seeds}, the paired difference (seeds, then "
           f"test items) with its interval (primaries at their Holm level), p, minimum detectable effect, verdict",
           verdict=sentence)
write_results(cfg, "07_claims", {"seeds": list(cfg.claims.seeds), "budgets": b, "seconds": run_seconds,
                               "measures": {str(s): m for s, m in measures.items()},
                               "primaries": {k: vars(v) for k, v in vars(cfg.claims.primaries).items()},
                               "scorecard": card.to_dict(orient="records"), "shortfall": gaps,
                               "run": {"commit": git_commit(), "machine": machine(), "cpu": cpu_info(),
                                       "precision": precision_plan(cfg), "torch": torch.__version__}},
              headline=[headline_number(f"primary measures {verdict} (of {len(primary)}, {len(measures)} seeds)", n,
                                        digits=0) for verdict, n in counts.items()])
print(sentence)
for line in gaps:
    print("-", line)
display(card.drop(columns=["note"]).round(3))

# %% [markdown]
# ## The intervals
#
# Each bar is one claim measure's paired difference (method − control), divided by the larger of the two means so
# that measures of different units share an axis; the paper's predicted side is to the right (measures where lower
# is better are flipped). Colours are the verdicts; a primary's bar is thick and its margin is marked with two grey
# ticks. Bars are cut at ±2; rows not measured are left empty.

# %%
import matplotlib.pyplot as plt
from lverse_core.evaluation.claims import CONTRADICTED, INCONCLUSIVE, NO_DIFFERENCE, SUPPORTED
from lverse_core.report import save_figure
sign = card["paper predicts"].map({"method higher": 1.0, "method lower": -1.0})
scale = pd.concat([card["method"].abs(), card["control"].abs()], axis=1).max(axis=1)
scale = scale.where(scale > 1e-12, 1.0).fillna(1.0)
ends = pd.concat([sign * card["low"] / scale, sign * card["high"] / scale], axis=1)
left, right = ends.min(axis=1).clip(-2, 2), ends.max(axis=1).clip(-2, 2)
mid = (sign * card["difference"] / scale).clip(-2, 2)
palette = {SUPPORTED: "tab:green", CONTRADICTED: "tab:red", NO_DIFFERENCE: "tab:blue", INCONCLUSIVE: "tab:grey"}
colours = card["verdict"].map(palette).fillna("white")
is_primary = card["role"] == PRIMARY
fig, ax = plt.subplots(figsize=(10, 0.36 * len(card) + 1))
y = pd.Series(list(range(len(card)))[::-1], index=card.index)
for prim, width in ((False, 3), (True, 7)):
    rows = is_primary == prim
    ax.hlines(y[rows], left[rows], right[rows], colors=colours[rows], lw=width)
ax.plot(mid, y, "k|", ms=12)
margin = (card["margin"] / scale).clip(upper=2)
marked = is_primary & card["verdict"].isin(palette)  # measured primaries
ax.plot(margin[marked], y[marked], "|", color="0.4", ms=16, mew=2)
ax.plot(-margin[marked], y[marked], "|", color="0.4", ms=16, mew=2)
ax.axvline(0, color="k", lw=0.8)
ax.set_xlim(-2.1, 2.1)
def row_label(claim, method, control, measure, role):
    (m_arm, m_key), (c_arm, c_key) = method.split(": "), control.split(": ")
    pair = f"{m_arm} vs {c_arm}" if m_arm != c_arm else f"{m_key} vs {c_key}"  # same model: two readings of it
    return f"{'* ' if role == PRIMARY else ''}{claim.split(' ')[0]} {pair}: {measure}"


ax.set_yticks(y, [row_label(*r) for r in zip(card["claim"], card["method arm"], card["control arm"],
                                             card["measure"], card["role"])], fontsize=8)
ax.set_xlabel("(method - control) / max(|method|, |control|), signed so that the paper's side is > 0")
ax.legend(handles=[plt.Line2D([], [], color=c, lw=5, label=v) for v, c in palette.items()], fontsize=7,
          loc="upper left", bbox_to_anchor=(1.01, 1))
fig.tight_layout()
save_figure(cfg, "07_claims_intervals", fig, caption="Claims: paired differences with their intervals (seeds, then "
            "test items); * and thick bars: the primary measures at their Holm level, grey ticks their margins; green "
            "supported, red contradicted, blue no difference within the margin, grey inconclusive", verdict=sentence)
plt.show()
