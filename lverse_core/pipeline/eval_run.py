"""What notebooks 04 (Table 2, image->text) and 05 (Table 3, text->image) call besides generation, the table
builders and Table 3's streamed evaluation (``t2i_eval``): caption variants, the minimum bars below, the judge's
table (its ceiling and floor: ``lverse_core.evaluation.verdicts``), decoding to uint8, and the figures (Figure 6 analogue, FID against blur
radius, sample grids as in Figures 1/8).

Minimum bars (smoke profile; an early acceptance check of the kit): captions must name the right objects at least
5x as often as the most frequent training caption does; generated images must be judged right at least 2x as often
as images generated from shuffled captions. The verdicts are computed, never tuned for: a shortfall is reported as
such.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch

from lverse_core.data.pixels import uint8_from_signed, unit_from_signed
from lverse_core.pipeline.eval_tables import TABLE2_METRICS

# The names of our two Table 2 rows; notebook 06 reads the COCO file of the truncated one by this name.
TRUNCATED = "L-Verse kit (cut at the first full stop)"
UNTRUNCATED = "*L-Verse kit (untruncated)"


def caption_variants(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, str]]:
    """Generated records -> the paper's two L-Verse rows: cut at the first full stop, and the whole sample."""
    return {TRUNCATED: {int(r["image_id"]): r["caption"] for r in records},
            UNTRUNCATED: {int(r["image_id"]): r["caption_untruncated"] for r in records}}


def truncation_reading(scores: Mapping[str, Mapping[str, Any]], paper: pd.DataFrame) -> dict[str, Any]:
    """Does cutting captions at the first full stop move each metric the way the paper's Table 2 does?

    ``scores``: this run's metrics by caption set (needs ``TRUNCATED`` and ``UNTRUNCATED``); ``paper``: the
    paper's Table 2 (``report.reference_table``), whose rows "L-Verse" and "L-Verse (untruncated)" give the
    paper's direction. Metrics that either side lacks (SPICE without CoreNLP) are left out, and said so. Returns
    per-metric rows and a sentence computed from them (nothing typed in advance).
    """
    ours_t, ours_u = scores[TRUNCATED], scores[UNTRUNCATED]
    ref = paper.set_index("model")
    rows, skipped = [], []
    for m in TABLE2_METRICS:
        a, b = ours_t.get(m), ours_u.get(m)
        pa, pb = float(ref.at["L-Verse", m]), float(ref.at["L-Verse (untruncated)", m])
        if a is None or b is None or math.isnan(pa) or math.isnan(pb):
            skipped.append(m)
            continue
        ours_dir, paper_dir = (a > b) - (a < b), (pa > pb) - (pa < pb)
        rows.append({"metric": m, "ours truncated": 100 * a, "ours untruncated": 100 * b,
                     "paper truncated": pa, "paper untruncated": pb,
                     "same direction as the paper": ours_dir == paper_dir})
    agree = [r["metric"] for r in rows if r["same direction as the paper"]]
    differ = [r["metric"] for r in rows if not r["same direction as the paper"]]
    parts = []
    if agree:
        parts.append(f"truncation moves {', '.join(agree)} the way it does in the paper")
    if differ:
        parts.append(f"{', '.join(differ)} {'moves' if len(differ) == 1 else 'move'} the other way")
    if skipped:
        parts.append(f"not compared: {', '.join(skipped)} (missing on one side)")
    return {"rows": rows, "agree": agree, "differ": differ, "skipped": skipped,
            "sentence": ("; ".join(parts) or "nothing to compare") + "."}


def acceptance(ours: float | None, baseline: float | None, factor: float, what: str, n: int | None = None
               ) -> dict[str, Any]:
    """{ours, baseline, ratio, factor, met, verdict}: is ``ours`` at least ``factor`` x ``baseline``?

    ``n`` (the number of images behind both shares) puts counts in the verdict, and a check that rests on fewer
    than 10 successes, or on a baseline of zero (then any success passes), says that it is weak evidence.
    """
    if ours is None or baseline is None:
        return {"ours": ours, "baseline": baseline, "ratio": None, "factor": factor, "met": None,
                "verdict": f"{what}: not measured (needs the embedded data set's ground truth)"}
    ratio = ours / baseline if baseline > 0 else None  # None: the baseline scored 0, no ratio exists
    met = bool(ours > 0 and ours >= factor * baseline)
    times = f"{ratio:.2f}x" if ratio is not None else "baseline at 0%"
    counts = f" = {round(ours * n)}/{n} vs {round(baseline * n)}/{n}" if n else ""
    verdict = (f"{what}: {ours:.1%} vs {baseline:.1%}{counts} ({times}; at least {factor:g}x needed): "
               f"{'met' if met else 'NOT met'}")
    weak = baseline == 0 or (n is not None and round(ours * n) < 10)
    if met and weak:
        verdict += " (weak evidence: " + ("a baseline of 0 passes any success" if baseline == 0
                                          else "fewer than 10 successes") + ")"
    return {"ours": ours, "baseline": baseline, "ratio": ratio, "factor": factor, "met": met, "n": n,
            "weak_evidence": bool(met and weak), "verdict": verdict}


# -- images ----------------------------------------------------------------------------------------------------------

@torch.no_grad()
def decode_to_uint8(decode: Callable[[torch.Tensor], torch.Tensor], codes: torch.Tensor,
                    batch_size: int = 64) -> torch.Tensor:
    """Code maps (M, g, g) -> uint8 images (M, 3, S, S) on the CPU, decoded ``batch_size`` at a time."""

    return torch.cat([uint8_from_signed(decode(codes[i:i + batch_size]).cpu())
                      for i in range(0, len(codes), batch_size)])


def codes_of(cfg, split: str, image_ids: Sequence[int]) -> torch.Tensor:
    """The AugVAE-SL codes (M, g, g) long of ``image_ids`` from the pre-tokenized split(s) ("val+test" joins)."""
    from lverse_core.training.pretokenize import load_codes

    where = {}
    for sp in split.split("+"):
        codes, ids = load_codes(cfg, sp)
        where.update({int(i): (codes, k) for k, i in enumerate(ids)})
    missing = [i for i in image_ids if int(i) not in where]
    if missing:
        raise ValueError(f"{len(missing)} image ids have no codes in split {split!r} (first: {missing[:5]})")
    return torch.stack([torch.from_numpy(where[int(i)][0][where[int(i)][1]].astype("int64")) for i in image_ids])


def judge_table(cfg, bounds: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per entry of ``judge_bounds``: % judged right, overall and by the number of objects named."""
    from lverse_core.report import provenance

    rows = []
    for name, r in bounds.items():
        row = {"images": name, "judged right for the caption (%)": 100 * r["judged_correct"]}
        if "ci95" in r:
            row["95% interval (%)"] = f"{100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}"
        row.update({f"{k.split('_')[2]}-object prompts (%)": 100 * v for k, v in r.items()
                    if k.startswith("judged_correct_") and k.endswith("_objects")})
        rows.append({**row, "n": r["n_images"], "source": provenance(cfg)})
    return pd.DataFrame(rows)


# -- figures ---------------------------------------------------------------------------------------------------------

def caption_figure(images: torch.Tensor, references: Sequence[str], ours: Sequence[str],
                   ours_untruncated: Sequence[str] | None = None):
    """Figure 6 analogue: each row an input image, a reference caption and our caption (and the untruncated text)."""
    import textwrap

    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(n, 2, figsize=(9, 1.55 * n), squeeze=False, gridspec_kw={"width_ratios": [1, 5]})
    for i in range(n):
        axes[i][0].imshow(unit_from_signed(images[i]).permute(1, 2, 0).cpu().numpy())
        lines = [("reference", references[i]), ("ours", ours[i])]
        if ours_untruncated is not None:
            lines.append(("ours, untruncated", ours_untruncated[i]))
        text = "\n".join(textwrap.fill(f"{k}: {v}", 90) for k, v in lines)
        axes[i][1].text(0, 0.5, text, va="center", fontsize=8, family="monospace")
        for ax in axes[i]:
            ax.axis("off")
    fig.suptitle("Test images: a reference caption and ours", fontsize=9)
    fig.tight_layout()
    return fig


def fid_curve_figure(paper: pd.DataFrame, ours: Mapping[str, float], ours_label: str):
    """FID-k against blur radius k: the paper's curves (Inception, MS-COCO) beside ours (our feature space).

    Two panels, never one axis: the feature spaces differ on the embedded profiles, so only the shapes of the
    curves (does FID fall as fine detail is blurred away?) can be compared, not the values.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    cols = [c for c in paper.columns if c.startswith("FID-")]
    long = paper.melt(id_vars=["model"], value_vars=cols, var_name="k", value_name="FID")
    long["blur radius k"] = long["k"].str[4:].astype(float)
    mine = pd.DataFrame({"blur radius k": [float(k.split("-")[1]) for k in ours], "FID": list(ours.values()),
                         "model": "L-Verse (ours)"})
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    sns.lineplot(data=long, x="blur radius k", y="FID", hue="model", marker="o", ax=axes[0])
    axes[0].set_title("L-Verse paper, Table 3 (Inception FID, MS-COCO val 30k)", fontsize=9)
    axes[0].legend(fontsize=7)
    sns.lineplot(data=mine, x="blur radius k", y="FID", hue="model", marker="o", ax=axes[1])
    axes[1].set_title(f"this run: {ours_label}", fontsize=9)
    fig.tight_layout()
    return fig


def grid_rows(real: torch.Tensor, generated: torch.Tensor) -> list[torch.Tensor]:
    """Rows for ``figures.image_grid_figure``: the real image behind each caption, then its generated images.
    real: (P, 3, S, S); generated: (P, k, 3, S, S); any range the figure accepts ([-1, 1] floats)."""
    return [torch.cat([real[p:p + 1].float(), generated[p].float()]) for p in range(len(real))]



EXCESS_WHERE = {"none": "none measurable: the generated images are as close to the real ones as the reconstructions",
                "fine": "mostly fine detail: blur removes most of it",
                "coarse": "coarse content (layout, colours, shapes): it survives the blur"}


def fid_ceiling_reading(generated: Mapping[str, float], reconstructed: Mapping[str, float]) -> dict[str, Any]:
    """FID-k of generated images against FID-k of the AugVAE-SL reconstructions (the decoder's ceiling), per blur k.

    A falling FID-k curve alone does not show that BiART drew the layout right: blur also shrinks the decoder's own
    error, so the reconstructions' curve falls too. The excess over the ceiling (generated - reconstructed) is the
    part BiART adds; if it stays as blur grows, BiART's error is in coarse content (layout, colours), if it shrinks,
    in fine detail; an excess under 5% of the unblurred FID counts as none. Returns the rows, "where" (``none``,
    ``fine`` or ``coarse``, as above; absent without a common radius) and a sentence.
    """
    ks = [k for k in generated if k in reconstructed]
    if not ks:
        return {"rows": [], "sentence": "no blur radius measured on both sides"}
    rows = [{"blur": k, "generated": max(generated[k], 0.0), "reconstructed (ceiling)": max(reconstructed[k], 0.0),
             "excess over the ceiling": max(generated[k], 0.0) - max(reconstructed[k], 0.0)} for k in ks]
    first, last = rows[0], rows[-1]

    def change(a: float, b: float) -> str:
        return f"{a:.3g} -> {b:.3g}" + (f" ({(b - a) / a:+.0%})" if a > 0 else "")

    e0, e1 = first["excess over the ceiling"], last["excess over the ceiling"]
    negligible = e0 <= 0.05 * max(first["generated"], 1e-12)  # within 5% of the FID itself: no excess to place
    where = "none" if negligible else "fine" if e1 < 0.5 * e0 else "coarse"
    sentence = (f"From {first['blur']} to {last['blur']}: generated {change(first['generated'], last['generated'])}, "
                f"reconstructions {change(first['reconstructed (ceiling)'], last['reconstructed (ceiling)'])}; "
                f"BiART's excess over the decoder's ceiling {change(e0, e1)}, so the error BiART adds is "
                f"{EXCESS_WHERE[where]}.")
    return {"rows": rows, "where": where, "sentence": sentence}
