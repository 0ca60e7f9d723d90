"""``reports/<profile>/index.html``: the report in the paper's order, headline numbers first (as the notebooks
declared them, ``headlines``), every table and figure under its caption and verdict, then the notebook pages and
the run's provenance."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from lverse_core.hardware import describe_plan
from lverse_core.pipeline import headlines
from lverse_core.pipeline.manifest import RunRecord, manifest_entries, read_manifest, relative
from lverse_core.pipeline.notebook_html import scrub_local_paths
from lverse_core.pipeline.page_style import INDEX_CSS


def _made_from_other_checkpoints(cfg, manifest: dict[str, Any]) -> dict[str, str]:
    """Outputs of notebooks whose results JSON records ``made_from`` artefact ids that differ from this run's
    current ones (``pipeline.artefact_ids``): a table made from a data set, tokenizer, AugVAE, codes, BiART, reranker
    or judge remade since, each named with what changed and the notebook to rerun."""
    from lverse_core.pipeline import artefact_ids

    stale = {}
    for nb in manifest_entries(manifest):
        outputs = nb["outputs"]
        for out in outputs:
            if not (out.startswith("results/") and out.endswith(".json")):
                continue
            try:
                recorded = json.loads((cfg.reports_root / out).read_text()).get("made_from")
                changed = artefact_ids.changed(cfg, recorded)
            except (OSError, ValueError, AttributeError):
                continue
            if changed:
                stale.update({o: f"made from another {', '.join(changed)} than the run holds now: rerun "
                                 f"{nb['name']}" for o in outputs})
    return stale


# The report in the paper's order: (anchor, title, artefact-name prefixes in the order they are shown: the paper's
# table or figure first, then how it was made, then the look-inside). Unmatched artefacts go to "Other".
SECTIONS = (
    ("data", "1 · Data (paper §4)", ("data_samples", "data_split", "data_")),
    ("augvae", "2 · AugVAE and Table 1: reconstruction (§3.3, §4.1; Figures 3–5)",
     ("table1_reconstruction.", "table1", "figure3", "figure5", "augvae_", "01_")),
    ("biart", "3 · BiART: training and sampling (§3.4–3.6)", ("02_biart", "02_")),
    ("table2", "4 · Table 2: image-to-text (§4.2; Figure 6)", ("table2", "figure6", "04_")),
    ("table3", "5 · Table 3: text-to-image (§4.3; Figures 1 and 8)",
     ("table3_text_to_image", "table3_judge", "figure8", "table3", "05_")),
    ("figure7", "6 · Figure 7: human evaluation (§4.2)", ("06_figure7", "06_", "figure7")),
    ("claims", "7 · The paper's claims, checked", ("claims", "07_")),
)


def section_of(name: str) -> tuple[str, int]:
    """(section anchor, rank within the section) of an artefact file name."""
    for anchor, _, prefixes in SECTIONS:
        for rank, prefix in enumerate(prefixes):
            if name.startswith(prefix):
                return anchor, rank
    return "other", 0



def _table_html(df) -> str:
    from lverse_core.report import format_number

    return df.to_html(index=False, na_rep="—", float_format=format_number, border=0, classes="data")


def _humane(stem: str) -> str:
    return re.sub(r"^\d\d_", "", stem).replace("_", " ")


def write_index(cfg, record: RunRecord | None = None) -> Path:
    """``index.html``: the report in the paper's order (data, Table 1, BiART, Table 2, Table 3, Figure 7, claims),
    headline numbers first, every table and figure under its caption with the verdict its notebook computed, the
    rater forms linked, then the notebook pages and the run's provenance."""
    import pandas as pd

    from lverse_core.report import read_captions_checked

    root = cfg.reports_root
    manifest = read_manifest(root)
    captions, captions_problem = read_captions_checked(cfg)
    esc = html.escape
    parts = [f"<h1>L-Verse kit report — profile <code>{esc(cfg.profile)}</code></h1>"]
    if (root / "manifest.json").exists() and not manifest:
        parts.append("<p class='failed'>manifest.json is unreadable: the run's provenance and notebook list are "
                     "left out; the next run writes it again</p>")
    if captions_problem:
        parts.append(f"<p class='failed'>{esc(captions_problem)}: those captions and verdicts are left out; the "
                     f"notebooks write theirs again when they run</p>")
    plan = manifest.get("precision")
    plan = describe_plan(plan) if isinstance(plan, dict) and "augvae" in plan else ""
    prec = f" · {esc(plan)}" if plan else ""
    if manifest:
        total = manifest.get("total_seconds")
        total = total if isinstance(total, (int, float)) and not isinstance(total, bool) else 0
        parts.append(f"<p class='meta'>commit <code>{esc(str(manifest.get('commit')))}</code> · "
                     f"{esc(str(manifest.get('machine')))}{prec} · started {esc(str(manifest.get('started')))} · total "
                     f"{total:.0f} s · <a href='manifest.json'>manifest.json</a> · "
                     f"<a href='#notebooks'>notebook pages</a></p>")
    heads = headlines.declared(root, manifest)
    if any(d.lines or d.problem for d in heads):
        computed = f"<p class='meta'>computed in {esc(plan)}</p>" if plan else ""
        parts.append(f"<h2 id='headline'>Headline numbers of this run</h2>{computed}<ul class='headline'>"
                     + "".join(f"<li>{esc(x)}</li>" for d in heads for x in d.lines)
                     + "".join(f"<li class='failed'>not shown: {esc(d.problem)}</li>" for d in heads if d.problem)
                     + "</ul>")
    # outputs of notebooks whose latest run did not end ok: from an earlier run, no longer backed by the notebook
    entries = manifest_entries(manifest)
    stale = {}
    for nb in entries:
        if nb["status"] != "ok":
            for out in nb["outputs"] + nb["earlier"]["outputs"]:
                stale[out] = f"{nb['name']} {nb['status']}"
    stale.update(_made_from_other_checkpoints(cfg, manifest))

    def stale_note(rel: str) -> str:
        if rel not in stale:
            return ""
        why = stale[rel]
        return (f"<p class='failed'>stale: {esc(why)}</p>" if why.startswith("made")
                else f"<p class='failed'>stale: written by an earlier run of {esc(why)} in the latest run; "
                     f"re-run that notebook</p>")

    def heading(rel: str, stem: str) -> str:
        c = captions.get(rel, {})
        text = f"<h3>{esc(c.get('caption') or _humane(stem))}</h3>"
        if c.get("verdict"):
            text += f"<p class='verdict'>{esc(c['verdict'])}</p>"
        return text

    items: dict[str, list[tuple[int, str, str]]] = {}

    def add(name: str, body: str) -> None:
        anchor, rank = section_of(name)
        items.setdefault(anchor, []).append((rank, name, body))

    for t in sorted((root / "tables").glob("*.csv")) if (root / "tables").exists() else []:
        rel = relative(t, root)
        links = " · ".join(f"<a href='{relative(t.with_suffix(x), root)}'>{x[1:]}</a>"
                           for x in (".csv", ".md", ".tex")
                           if t.with_suffix(x).exists())
        try:
            table = _table_html(pd.read_csv(t))
        except Exception as e:  # a damaged CSV loses its own table only (pandas raises many kinds of error)
            table = f"<p class='failed'>{esc(rel)} is unreadable ({esc(type(e).__name__)}); re-run its notebook</p>"
        add(t.name, f"<div class='item'>{heading(rel, t.stem)}{stale_note(rel)}{table}<p class='links'>{links}</p>"
            f"</div>")
    for f in sorted((root / "figures").glob("*.png")) if (root / "figures").exists() else []:
        rel = relative(f, root)
        add(f.name, f"<div class='item'>{heading(rel, f.stem)}{stale_note(rel)}<figure><a href='{rel}'><img src='{rel}' "
            f"alt='{esc(_humane(f.stem))}'></a><figcaption>{esc(f.name)}</figcaption></figure></div>")
    forms = sorted((root / "human_eval" / "forms").glob("*.html")) if (root / "human_eval").exists() else []
    if forms:
        items.setdefault("figure7", []).append((99, "forms",
            "<div class='item'><h3>The rater forms (one self-contained page per rater)</h3><p>"
            + " · ".join(f"<a href='{relative(p, root)}'>{esc(p.stem)}</a>" for p in forms) + "</p></div>"))
    order = [*SECTIONS, ("other", "Other outputs", ())]
    parts.append("<nav>" + " · ".join(f"<a href='#{a}'>{esc(title.split(' (')[0])}</a>" for a, title, _ in order
                                      if items.get(a)) + "</nav>")
    for anchor, title, _ in order:
        if items.get(anchor):
            parts.append(f"<h2 id='{anchor}'>{esc(title)}</h2>" + "".join(b for _, _, b in sorted(items[anchor])))

    parts.append("<h2 id='notebooks'>Notebooks</h2><table class='data'><tr><th>notebook</th><th>status</th>"
                 "<th>wall time</th><th>pages</th></tr>")
    for nb in entries:
        links = []
        if nb.get("html"):
            links.append(f"<a href='{esc(nb['html'])}'>HTML</a>")
        if nb.get("executed"):
            links.append(f"<a href='{esc(nb['executed'])}'>ipynb</a>")
        err = f"<br><small>{esc(nb['error'])}</small>" if nb.get("error") else ""
        if nb.get("last_good"):
            err += f"<br><small><a href='{esc(nb['last_good'])}'>last good run</a></small>"
        if nb.get("from_earlier_run"):
            err += f"<br><small>from an earlier run ({esc(str(nb.get('run_started')))})</small>"
        parts.append(f"<tr><td>{esc(nb['name'])}</td><td class='{esc(nb['status'])}'>{esc(nb['status'])}{err}</td>"
                     f"<td>{nb['seconds']:.1f} s</td><td>{' · '.join(links)}</td></tr>")
    parts.append("</table>")
    results = sorted((root / "results").glob("*.json")) if (root / "results").exists() else []
    if results:
        def note(r: Path) -> str:
            try:
                headlines.read_result(r)
            except headlines.UnreadableResult:
                return " <span class='failed'>(unreadable)</span>"
            return ""

        parts.append("<h2 id='results'>Results (JSON)</h2><ul>" + "".join(
            f"<li><a href='{relative(r, root)}'>{esc(r.name)}</a>{note(r)}</li>" for r in results) + "</ul>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>L-Verse kit — {esc(cfg.profile)}</title>"
            f"<style>{INDEX_CSS}</style></head><body>{''.join(parts)}</body></html>")
    out = root / "index.html"
    out.write_text(scrub_local_paths(page), errors="replace")  # a lone surrogate from a hand-edited JSON string
    return out
