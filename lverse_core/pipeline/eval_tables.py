"""Tables 2 and 3 of the paper beside ours: what notebooks 04 (image->text) and 05 (text->image) call.

Paper rows come from ``lverse_core/reference`` and say so in ``source``; our rows carry ``report.provenance``.
Scales follow the paper: caption metrics x100 (Table 2), FID-k as numbers (Table 3). On embedded profiles our FID
is in the kit's judge feature space (``fid.fid_label``), never comparable with the paper's Inception FIDs, and the
column names say which feature space they are in.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from lverse_core.config import Config

TABLE2_METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")


def slug(name: str) -> str:
    """A file-name form of a variant name (``captions_<slug>_<split>.json``)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


# -- Table 2: image -> text ------------------------------------------------------------------------------------------

def captions_made_from(cfg: Config, split: str = "test"):
    """What the caption files of ``split`` are made from (``lverse_core.provenance``): the sampling settings and the
    checkpoints that drew them (BiART, AugVAE-SL, CLIP reranker: ``generate.made_from``) and the codes they caption.
    Notebook 04 records it beside each file; notebook 06 reads only files whose record matches."""
    from lverse_core import provenance
    from lverse_core.sampling.generate import made_from
    from lverse_core.training.pretokenize import codes_dir

    inputs = {**made_from(cfg), f"codes ({split})": provenance.input_id(codes_dir(cfg) / f"{split}_codes.npy")}
    return provenance.made_from(cfg, "captions", inputs, f"generated captions ({split})")


def save_caption_files(cfg: Config, variants: Mapping[str, Mapping[int, str]], refs: Mapping[int, Sequence[str]],
                       split: str = "test", made=None) -> dict[str, Path]:
    """COCO-format files under reports/<profile>/results/captions/: one results file per variant, references.
    ``made`` (``captions_made_from``): recorded beside each results file, what notebook 06 checks before reading."""
    from lverse_core.evaluation.metrics import write_caption_results, write_coco_references
    from lverse_core.report import report_dir

    d = report_dir(cfg, "results") / "captions"
    out = {name: write_caption_results(d / f"captions_{slug(name)}_{split}.json", preds)
           for name, preds in variants.items()}
    if made is not None:
        from lverse_core import provenance

        for path in out.values():
            provenance.record(path, made)
    out["references"] = write_coco_references(d / f"references_{split}.json", refs,
                                              description=f"L-Verse kit, profile {cfg.profile}, split {split}")
    return out


def score_variants(cfg: Config, variants: Mapping[str, Mapping[int, str]], refs: Mapping[int, Sequence[str]],
                   objects: Mapping[int, Sequence[dict]] | None = None) -> dict[str, dict[str, Any]]:
    """``metrics.score_captions`` of every variant, plus the attribute accuracy when ground truth is given."""
    from lverse_core.evaluation.metrics import caption_accuracy, score_caption_sets

    out = score_caption_sets(variants, refs, cfg)
    if objects is not None:
        for name, preds in variants.items():
            out[name]["attribute_accuracy"] = caption_accuracy(preds, objects)
    return out


def table2(cfg: Config, scores: Mapping[str, Mapping[str, Any]], descriptions: Mapping[str, str] | None = None,
           split: str = "test") -> pd.DataFrame:
    """Paper Table 2 rows, then ours (x100 like the paper; SPICE empty with the reason when not computed)."""
    from lverse_core.report import provenance, reference_table

    ref = reference_table("table2_captioning_coco_karpathy_test")
    paper = ref[["model", *TABLE2_METRICS]].copy()
    paper["captions naming the right objects (%)"] = np.nan
    paper["note"] = ref["note"].fillna("")
    paper["source"] = "L-Verse paper Table 2 (MS-COCO Karpathy test; scored with nlg-eval, paper §4)"
    rows = []
    for name, s in scores.items():
        note = (descriptions or {}).get(name, "")
        for metric in ("METEOR", "SPICE"):
            if s.get(metric) is None and s.get(f"{metric}_reason"):
                why = f"{metric} {s[f'{metric}_reason']}"
                note = f"{note}; {why}" if note else why
        acc = s.get("attribute_accuracy")
        rows.append({"model": name, **{m: (np.nan if s.get(m) is None else 100 * s[m]) for m in TABLE2_METRICS},
                     "captions naming the right objects (%)": np.nan if acc is None else 100 * acc,
                     "note": note, "source": f"{provenance(cfg)}, {split} split ({s['n_images']} images), "
                                             f"{_scored_with(s)}"})
    return pd.concat([paper, pd.DataFrame(rows)], ignore_index=True)


def _scored_with(scores: Mapping[str, Any]) -> str:
    """The caption-metrics pipeline a row was scored with (``metrics.tool_label``); older results say nothing."""
    from lverse_core.evaluation.metrics import tool_label

    tool = scores.get("tool")
    if tool is None:
        return "scoring pipeline not recorded"
    return tool_label(tool, scores.get("references") if tool == "nlg-eval" else 0)


# -- Table 3: text -> image ------------------------------------------------------------------------------------------

def ours_label(cfg: Config) -> str:
    """The name of our generated-images row in Table 3: L-Verse-CC when BiART trained on CC3M (``data.train_source``:
    its TSV, or tar shards) and draws for captions of ``data.source`` it never trained on (zero-shot)."""
    if cfg.data.train_source == "cc3m":
        return f"L-Verse-CC kit (BiART trained on CC3M, zero-shot on {cfg.data.source} captions)"
    if cfg.data.train_source == "wds":  # img2dataset shards: CC3M's, or a LAION-style set
        return (f"L-Verse-CC kit (BiART trained on the tar shards of assets.wds_shards, zero-shot on "
                f"{cfg.data.source} captions)")
    return "L-Verse kit (BiART + AugVAE-SL)"


def table3_paper() -> pd.DataFrame:
    """Paper Table 3 as the paper printed it (Inception FID-k on MS-COCO val 30k), labelled as the paper's: shown
    beside ``table3``, never mixed into its columns (other data, other feature space)."""
    from lverse_core.report import reference_table

    ref = reference_table("table3_t2i_fid_coco_val_30k")
    cols = [c for c in ref.columns if c.startswith("FID-")]
    paper = ref[["model", *cols]].copy()
    paper["note"] = ref["note"].fillna("")
    paper["source"] = "L-Verse paper Table 3 (Inception features, MS-COCO val 30k)"
    return paper


def table3(cfg: Config, ours: Mapping[str, Mapping[str, Any]], descriptions: Mapping[str, str] | None = None
           ) -> pd.DataFrame:
    """Our Table 3 rows: FID-k in the profile's feature space (``fid_label``) and, on embedded data, the share of
    images the judge finds right for their caption. FID values below zero are float noise of a zero distance and
    are shown as 0. The paper's rows are ``table3_paper``."""
    from lverse_core.report import provenance

    rows = []
    for name, r in ours.items():
        row: dict[str, Any] = {"model": name}
        for k, v in r["fid"].items():
            row[k] = max(float(v), 0.0)
        if "judged_correct" in r:
            row["images judged right for the caption (%)"] = 100 * r["judged_correct"]
        row["note"] = (descriptions or {}).get(name, "")
        row["source"] = f"{provenance(cfg)} ({r.get('n_images', '?')} prompts)"
        rows.append(row)
    return pd.DataFrame(rows)
