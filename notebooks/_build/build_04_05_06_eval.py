"""Writes notebooks 04 (Table 2), 05 (Table 3) and 06 (human evaluation), without outputs.
Run from the repo root: python notebooks/_build/build_04_05_06_eval.py"""
from pathlib import Path

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell

VALIDATE_COMMON = """import time
import torch
import pandas as pd
from IPython.display import display
from lverse_core.config import load_profile, available_profiles

assert PROFILE in available_profiles(), f"PROFILE={PROFILE!r}; valid: {available_profiles()}"
"""

NB04 = [
    ("markdown", r"""# 04 · Image → text: caption metrics (paper §4.2, Table 2)

BiART captions every held-out test image: `sampling.n_candidates` captions of `sampling.caption_tokens` tokens are
sampled with the image codes as the [REF] part, each is cut at the first full stop, and the one with the highest
clip-score $100\cos(E_I(x), E_T(y))$ is kept (§3.6). Table 2 scores them with the coco-caption metrics:

$$\mathrm{BLEU}\text{-}n = \mathrm{BP}\cdot\exp\Big(\sum_{k\le n}\tfrac1n\log p_k\Big),\qquad
\mathrm{BP} = \min\big(1, e^{1 - r/c}\big)$$

with $p_k$ the clipped $k$-gram precision, $r$ and $c$ the reference and candidate lengths; METEOR (aligned unigram
F-mean with a fragmentation penalty), ROUGE-L (longest common subsequence F-measure) and CIDEr (TF-IDF weighted
$n$-gram cosine, $\times 10$). SPICE needs Stanford CoreNLP 3.6.0 on this machine (`assets.corenlp_dir`); without
it the column stays empty and says why. The untruncated captions are the paper's "*L-Verse" row.

On the embedded data we also count the captions that name **exactly** the image's objects (size, colour, shape),
against two baselines: the most frequent training caption and a random training caption.

**What to look for**: our rows far above both baselines; truncated vs untruncated (the paper found untruncated
captions score higher on CIDEr/SPICE but lower on BLEU/METEOR/ROUGE). Our numbers are on embedded template
captions, so they are not comparable with the paper's MS-COCO rows, which are shown above ours for reference."""),
    ("parameters", """PROFILE = "smoke"  # ci|smoke|gpu|paper
N_SHOW = 8  # captions shown as examples
BASELINES = True  # True|False: score the most-frequent and random training-caption baselines"""),
    ("code", VALIDATE_COMMON + """assert isinstance(N_SHOW, int) and N_SHOW >= 0, "N_SHOW must be a non-negative integer"
assert isinstance(BASELINES, bool), "BASELINES must be True or False"
cfg = load_profile(PROFILE)
print(f"profile {cfg.profile}: {cfg.sampling.n_candidates} candidates per image, {cfg.sampling.caption_tokens} tokens")"""),
    ("markdown", "The trained models (notebooks 01 and 02) and the test split with its reference captions."),
    ("code", """from lverse_core.eval_run import load_stack, load_test_split
stack = load_stack(cfg)
test = load_test_split(cfg, "test")
print(f"{len(test.image_ids)} test images, {sum(map(len, test.refs.values()))} reference captions")"""),
    ("markdown", "Sample and rerank a caption for every test image (the first `N_SHOW` are shown)."),
    ("code", """from lverse_core.eval_run import caption_test_images
t0 = time.perf_counter()
captions = caption_test_images(cfg, stack, test, seed=cfg.seed)
caption_seconds = time.perf_counter() - t0
print(f"captioned {len(captions)} images in {caption_seconds:.1f} s")
captions.head(N_SHOW)"""),
    ("markdown", "Every variant as a COCO caption-results file (any standard evaluator can re-score them), with the "
                 "references beside them in the COCO annotation format."),
    ("code", """from lverse_core.eval_run import caption_variants
from lverse_core.eval_tables import save_caption_files
variants = caption_variants(cfg, captions, with_baselines=BASELINES and cfg.data.source == "shapes")
files = save_caption_files(cfg, variants, test.refs)
pd.DataFrame([{"variant": k, "file": str(v.relative_to(cfg.reports_root))} for k, v in files.items()])"""),
    ("markdown", "Table 2: the paper's rows (MS-COCO Karpathy test) and ours (×100 like the paper)."),
    ("code", """from lverse_core.eval_tables import score_variants, table2
from lverse_core.report import save_table
objects = None
if cfg.data.source == "shapes":
    from lverse_core.data import load_attributes
    objects = load_attributes(cfg)
scores = score_variants(cfg, variants, test.refs, objects)
t2 = table2(cfg, scores, {"most frequent training caption": "baseline", "random training caption": "baseline (seeded)"})
save_table(cfg, "04_table2_image_to_text", t2, "Table 2. Image-to-text metrics (x100). Paper rows: MS-COCO "
           "Karpathy test; our rows: this run's held-out split (not comparable with the paper's data).")
t2"""),
    ("markdown", "Saved results (`reports/<profile>/results/04_table2.json`), read by notebook 06 and the tests."),
    ("code", """from lverse_core.report import save_results
summary = {"profile": cfg.profile, "n_images": len(captions), "caption_seconds": caption_seconds,
           "scores": scores, "files": {k: str(v) for k, v in files.items()}}
save_results(cfg, "04_table2", summary)
{k: {m: v.get(m) for m in ("BLEU-4", "CIDEr", "attribute_accuracy")} for k, v in scores.items()}"""),
]

NB05 = [
    ("markdown", r"""# 05 · Text → image: FID-k and judged correctness (paper §4.3, Table 3)

BiART draws an image for each held-out caption: `sampling.n_candidates` code maps are sampled with the caption as
the [REF] part, decoded by AugVAE-SL, and the one with the highest clip-score is kept (§3.6). Table 3 compares
generated and real images with the Fréchet distance of their features after a Gaussian blur of radius $k$
(FID-$k$, applied identically to both sets; PIL's `GaussianBlur(radius=k)`):

$$\mathrm{FID} = \lVert\mu_r - \mu_g\rVert^2 + \mathrm{Tr}\big(\Sigma_r + \Sigma_g - 2(\Sigma_r\Sigma_g)^{1/2}\big)$$

On the embedded profiles the features are the kit's attribute judge (not Inception), so the numbers are only
comparable with each other; the judge also says whether each image shows **exactly** the objects its caption
names, which FID cannot see. Reference rows: AugVAE-SL reconstructions of the real images (the ceiling of any
image BiART can draw) and a random real image per caption (perfect FID, wrong content).

**What to look for**: the shuffled real images have FID ≈ 0 but are judged right only by chance; our images sit
between that and the reconstructions; the paper saw its FID fall as the blur grows (Table 3)."""),
    ("parameters", """PROFILE = "smoke"  # ci|smoke|gpu|paper
N_PROMPTS = 0  # captions to draw images for; 0 = eval.t2i_prompts
N_SHOW = 8  # generated images shown"""),
    ("code", VALIDATE_COMMON + """assert isinstance(N_PROMPTS, int) and N_PROMPTS >= 0, "N_PROMPTS must be a non-negative integer"
assert isinstance(N_SHOW, int) and N_SHOW >= 0, "N_SHOW must be a non-negative integer"
cfg = load_profile(PROFILE)
n_prompts = N_PROMPTS or cfg.eval.t2i_prompts
print(f"profile {cfg.profile}: {n_prompts} prompts, {cfg.sampling.n_candidates} candidates each")"""),
    ("markdown", "The trained models, the FID feature network, and the prompts: the first caption of each test image."),
    ("code", """from lverse_core.eval_run import load_stack, load_test_split
from lverse_core.fid import fid_label
stack = load_stack(cfg)
test = load_test_split(cfg, "test", limit=n_prompts)
prompts = [test.refs[i][0] for i in test.image_ids]
if cfg.eval.fid_extractor == "kit":
    from lverse_core.judge import ensure_judge
    ensure_judge(cfg)
print(f"{len(prompts)} prompts; {fid_label(cfg)}")"""),
    ("markdown", "Draw one reranked image per prompt; decode the real images' codes too (the reconstruction ceiling)."),
    ("code", """from lverse_core.eval_run import draw_images
t0 = time.perf_counter()
generated = draw_images(cfg, stack, prompts, seed=cfg.seed)
draw_seconds = time.perf_counter() - t0
recon = torch.cat([stack.decode(test.codes[i:i + 64].to(stack.device)).cpu() for i in range(0, len(test.codes), 64)])
shuffled = test.images.roll(1, dims=0)
print(f"drew {len(generated)} images in {draw_seconds:.1f} s")"""),
    ("markdown", "Examples: real image, AugVAE-SL reconstruction, generated image, for the first `N_SHOW` prompts."),
    ("code", """from lverse_core.biart_run import image_grid_figure
from lverse_core.report import save_figure
k = min(N_SHOW, len(prompts))
fig = image_grid_figure([torch.stack([test.images[j], recon[j], generated[j]]) for j in range(k)], prompts[:k], 3)
save_figure(cfg, "05_t2i_examples", fig)"""),
    ("markdown", "FID-k for every blur radius of `eval.blur_radii`, and the judge's verdicts by number of objects."),
    ("code", """from lverse_core.eval_tables import text_to_image_scores, table3
from lverse_core.report import save_table
ours = {name: text_to_image_scores(cfg, test.images, imgs, prompts)
        for name, imgs in (("L-Verse kit (BiART + AugVAE-SL)", generated),
                           ("AugVAE-SL reconstructions of the real images", recon),
                           ("a random real test image per caption", shuffled))}
t3 = table3(cfg, ours, {"AugVAE-SL reconstructions of the real images": "ceiling for generated images",
                        "a random real test image per caption": "baseline: right distribution, wrong content"})
save_table(cfg, "05_table3_text_to_image", t3, f"Table 3. Text-to-image FID-k. Paper: Inception on MS-COCO val "
           f"(30k). Ours: {fid_label(cfg)}, {len(prompts)} held-out prompts.")
t3"""),
    ("markdown", "Saved results (`reports/<profile>/results/05_table3.json`)."),
    ("code", """from lverse_core.report import save_results
summary = {"profile": cfg.profile, "n_prompts": len(prompts), "draw_seconds": draw_seconds,
           "fid_feature_space": fid_label(cfg),
           "rows": {k: {kk: vv for kk, vv in v.items() if kk != "per_image"} for k, v in ours.items()}}
save_results(cfg, "05_table3", summary)
pd.DataFrame({k: {**v["fid"], "judged right": v.get("judged_correct")} for k, v in ours.items()}).T"""),
]

NB06 = [
    ("markdown", r"""# 06 · Human evaluation of captions (paper §4.2, Figure 7)

The paper showed 150 people 50 random sets each (from a pool of 500) of an image, its ground-truth caption (GT) and
L-Verse's caption (Pred), in random order, and asked "Which caption well describes the given image?" — the first,
the second, or both. L-Verse received **30.4%** of votes (Pred + Both). With $v_i\in\{\mathrm{GT},\mathrm{Pred},
\mathrm{Both}\}$ the $n$ votes,

$$\hat s_c = \tfrac1n\textstyle\sum_i [v_i = c],\qquad \text{95\% CI: percentiles 2.5 and 97.5 of } \hat s_c
\text{ over bootstrap resamples of the votes.}$$

This notebook builds the same study from notebook 04's captions: one self-contained HTML form per rater
(`reports/<profile>/human_eval/forms/`, images embedded, no network), the blinding key in a separate file, and an
append-only store of validated answer files. On embedded profiles a **simulated** rater answers from the ground-truth
attributes (a caption is good when it names exactly the image's objects); every number from it says "simulated".
For real raters, collect their `answers_<form>.json` files in `ANSWERS_DIR` and re-run.

**What to look for**: the Pred + Both share beside the paper's 30.4% (different data and raters: a shape, not a
replication), and how wide the confidence intervals are for the number of votes."""),
    ("parameters", """PROFILE = "smoke"  # ci|smoke|gpu|paper
SIMULATE = True  # True|False: answer the forms with the simulated rater (embedded profiles only)
ANSWERS_DIR = ""  # folder of real answer files to ingest ("" = reports/<profile>/human_eval/inbox)"""),
    ("code", VALIDATE_COMMON + """from pathlib import Path
assert isinstance(SIMULATE, bool), "SIMULATE must be True or False"
assert isinstance(ANSWERS_DIR, str), "ANSWERS_DIR must be a folder path (a string)"
cfg = load_profile(PROFILE)
assert not (SIMULATE and cfg.data.source != "shapes"), "the simulated rater needs the embedded data (ground truth)"
print(f"profile {cfg.profile}: pool {cfg.eval.human_eval_pool}, {cfg.eval.human_eval_form_size} sets per form, "
      f"{cfg.eval.human_eval_raters} forms")"""),
    ("markdown", "The captions of notebook 04 (truncated at the first full stop) and the test references."),
    ("code", """from lverse_core.eval_run import TRUNCATED
from lverse_core.eval_tables import slug
from lverse_core.metrics import read_caption_results, read_coco_references
cap_dir = cfg.reports_root / "results" / "captions"
path = cap_dir / f"captions_{slug(TRUNCATED)}_test.json"
assert path.exists(), f"{path} is missing: run notebooks/04_table2_image_to_text.ipynb with PROFILE={PROFILE!r} first"
preds = read_caption_results(path)
refs = read_coco_references(cap_dir / "references_test.json")
print(f"{len(preds)} generated captions, {len(refs)} images with references")"""),
    ("markdown", "Build the study: pool, blinded forms (one HTML page per rater) and the separate key."),
    ("code", """from lverse_core import human_eval as H
from lverse_core.data import caption_records
paths = {int(r["image_id"]): r["path"] for r in caption_records(cfg, "test")}
study = H.build_study(cfg, preds, paths, refs)
forms = sorted((H.study_dir(cfg) / "forms").glob("*.html"))
print(f"study {study['study']}: {len(study['pool'])} sets, {len(forms)} forms, e.g. {forms[0].relative_to(cfg.reports_root)}")"""),
    ("markdown", "Answers: simulated raters (embedded profiles) and/or real answer files, validated and appended."),
    ("code", """inbox = Path(ANSWERS_DIR) if ANSWERS_DIR else H.study_dir(cfg) / "inbox"
files = sorted(inbox.glob("answers_*.json")) if inbox.exists() else []
if SIMULATE:
    from lverse_core.data import load_attributes
    files += H.simulate_raters(cfg, load_attributes(cfg), H.study_dir(cfg) / "simulated")
report = H.ingest_answers(cfg, files)
votes = H.unblind(cfg)
print(f"ingested {len(report['ingested'])} new file(s), {len(report['already'])} already in the store; "
      f"{len(votes)} votes in all")"""),
    ("markdown", "Vote shares with bootstrap 95% intervals (`eval.bootstrap` resamples), and Figure 7 beside the paper."),
    ("code", """from lverse_core.report import save_figure, save_table, save_results, provenance
simulated = bool(len(votes)) and bool(votes["simulated"].all())
shares = H.vote_shares(votes["vote"], cfg.eval.bootstrap, seed=cfg.seed)
who = "simulated raters (ground-truth attributes)" if simulated else "human raters"
shares_t = shares.assign(raters=who, source=provenance(cfg))
save_table(cfg, "06_human_eval_vote_shares", shares_t, f"Figure 7 data: vote shares with 95% bootstrap CIs ({who})")
fig = H.figure7(shares, simulated=simulated)
save_figure(cfg, "06_figure7_human_eval", fig)
shares_t"""),
    ("code", """row = shares.set_index("vote").loc["Pred + Both"]
save_results(cfg, "06_human_eval", {"study": study["study"], "raters": who, "simulated": simulated,
                                   "n_votes": int(len(votes)), "pred_plus_both": float(row["share"]),
                                   "ci": [float(row["ci_low"]), float(row["ci_high"])],
                                   "paper_pred_plus_both_percent": 30.4})
print(f"Pred + Both: {row['share']:.1%} [{row['ci_low']:.1%}, {row['ci_high']:.1%}] ({who}); paper: 30.4% (human)")"""),
]


def build(cells) -> nbf.NotebookNode:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, src in cells:
        if kind == "markdown":
            nb.cells.append(md(src))
        elif kind == "parameters":
            nb.cells.append(code(src, metadata={"tags": ["parameters"]}))
        else:
            nb.cells.append(code(src))
    return nb


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    for name, cells in (("04_table2_image_to_text", NB04), ("05_table3_text_to_image", NB05),
                        ("06_human_eval", NB06)):
        nbf.write(build(cells), root / f"{name}.ipynb")
        print(root / f"{name}.ipynb")
