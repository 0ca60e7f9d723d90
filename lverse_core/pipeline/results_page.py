"""``reports/<profile>/RESULTS.md``, generated from the run, never typed: the run's provenance from ``manifest.json``
(commit, machine, CPU model and class, precision, torch, wall time and peak memory per notebook), each notebook's
headline numbers as it declared them (``headlines``), then the paper's tables as this run wrote them (rows copied
from the paper are labelled "L-Verse paper ..." in their ``source`` column).

    python -m lverse_core results --profile smoke [--readme]

``--readme`` also refreshes README.md's block between ``<!-- results:<profile> begin -->`` and
``<!-- results:<profile> end -->`` (the run line and the headline numbers); nothing outside the markers changes.
A results file or table that cannot be read is marked unreadable in its own section; the rest is written.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lverse_core.config import REPO_ROOT
from lverse_core.hardware import describe_plan
from lverse_core.pipeline import headlines
from lverse_core.pipeline.index_page import section_of
from lverse_core.pipeline.manifest import read_manifest
from lverse_core.pipeline.notebook_html import scrub_local_paths
from lverse_core.report import atomic_write, format_number, read_captions_checked

RESULTS_FILE = "RESULTS.md"
README = REPO_ROOT / "README.md"
# Tables RESULTS.md shows in full: the paper's Tables 1-3 and their companions, the Figure 7 data, the claims'
# scorecard (by file-name prefix); the other tables (data, look-inside) are listed by name.
RESULT_TABLES = ("table", "figure", "06_", "07_")


class ResultsError(RuntimeError):
    """The results page cannot be made: no report, no manifest, or a README without its markers."""


def _num(v: Any) -> float | None:
    """``v`` as a finite float, None when it is anything else (a hand-edited manifest)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        x = float(v)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def _text(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ") if v is not None else "—"


def _markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        n = _num(v)
        if n is not None and not isinstance(v, int):
            return format_number(n)
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else _text(v)

    lines = ["| " + " | ".join(_text(h) for h in header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def load_manifest(root: Path, profile: str) -> dict[str, Any]:
    """The run's manifest; ResultsError naming the file and the command that writes it when it is absent or
    damaged."""
    run = f"python -m lverse_core run --profile {profile}"
    if not root.is_dir():
        raise ResultsError(f"{root} does not exist: no run of profile {profile} here yet; run `{run}` (or `make "
                           f"reproduce PROFILE={profile}`) first")
    path = root / "manifest.json"
    if not path.exists():
        raise ResultsError(f"{path} is missing: the runner writes it at the end of every run; run `{run}` (a "
                           f"notebook run alone with papermill writes none)")
    manifest = read_manifest(root)
    if not manifest:
        raise ResultsError(f"{path} is unreadable (not a JSON object); run `{run}` again to rewrite it")
    return manifest


def _run_section(manifest: dict[str, Any]) -> list[str]:
    cpu = manifest.get("cpu") if isinstance(manifest.get("cpu"), dict) else {}
    plan = manifest.get("precision")
    packages = manifest.get("packages") if isinstance(manifest.get("packages"), dict) else {}
    total, peak = _num(manifest.get("total_seconds")), _num(manifest.get("peak_rss_mib"))
    rows = [["commit", manifest.get("commit")], ["started", manifest.get("started")],
            ["finished", manifest.get("finished")], ["machine", manifest.get("machine")],
            ["CPU model", cpu.get("model")], ["CPU class", cpu.get("class")],
            ["precision", describe_plan(plan) if isinstance(plan, dict) and "augvae" in plan else None],
            ["torch", packages.get("torch")], ["python", manifest.get("python")],
            ["wall time of the run (s)", None if total is None else f"{total:.0f}"],
            ["peak memory (MiB)", None if peak is None else f"{peak:.0f}"]]
    entries = manifest.get("notebooks") if isinstance(manifest.get("notebooks"), list) else []
    books = []
    for n in entries:
        if not isinstance(n, dict):
            continue
        seconds, mib = _num(n.get("seconds")), _num(n.get("peak_rss_mib"))
        books.append([n.get("name", "?"), n.get("status", "unknown")
                      + (" (from an earlier run)" if n.get("from_earlier_run") else ""),
                      None if seconds is None else f"{seconds:.1f}", None if mib is None else f"{mib:.0f}"])
    return ["## The run", "", _markdown_table(["", "this run"], rows), "", "## Notebooks", "",
            _markdown_table(["notebook", "status", "wall time (s)", "peak memory (MiB)"], books), ""]


def _headline_lines(root: Path, manifest: dict[str, Any]) -> list[str]:
    declared = headlines.declared(root, manifest)
    lines = []
    for d in declared:
        if d.problem:
            lines.append(f"- **not shown**: {d.problem}")
        lines += [f"- {x}" for x in d.lines]
    return lines or ["- no results files yet: run the notebooks"]


def _tables_section(cfg, root: Path, manifest: dict[str, Any]) -> list[str]:
    import pandas as pd

    captions, problem = read_captions_checked(cfg)
    by = headlines.writers(manifest)
    tables = sorted((root / "tables").glob("*.csv")) if (root / "tables").is_dir() else []
    shown = [t for t in tables if t.name.startswith(RESULT_TABLES)]
    shown.sort(key=lambda t: (section_of(t.name), t.name))
    out = ["## Tables", ""]
    if problem:
        out += [f"**unreadable**: {problem}; those captions are left out", ""]
    for t in shown:
        rel = f"tables/{t.name}"
        caption = captions.get(rel, {})
        out += [f"### {caption.get('caption') or t.stem} (`{rel}`)", ""]
        if caption.get("verdict"):
            out += [f"*{caption['verdict']}*", ""]
        try:
            df = pd.read_csv(t)
        except Exception as e:  # a damaged CSV loses its own table only (pandas raises many kinds of error)
            out += [f"**unreadable**: {rel} ({type(e).__name__}); {headlines.rerun(by.get(rel, ''), rel)}", ""]
            continue
        rows = [[None if isinstance(v, float) and math.isnan(v) else v for v in row]
                for row in df.itertuples(index=False)]
        out += [_markdown_table([str(c) for c in df.columns], rows), ""]
    others = [t.stem for t in tables if t not in shown]
    if others:
        out += [f"Other tables (in `tables/` and index.html): {', '.join(others)}.", ""]
    return out


def results_markdown(cfg) -> str:
    """RESULTS.md's text for ``cfg``'s report folder (ResultsError when there is no run to describe)."""
    root = cfg.reports_root
    manifest = load_manifest(root, cfg.profile)
    head = [f"# Results: profile `{cfg.profile}`", "",
            f"Generated by `python -m lverse_core results --profile {cfg.profile}` from `reports/{root.name}/` "
            f"(manifest.json, results/*.json, tables/*.csv); regenerate it rather than editing it. Rows labelled "
            f"\"L-Verse paper ...\" are the paper's own numbers, copied beside ours.", ""]
    text = "\n".join(head + _run_section(manifest) + ["## Headline numbers", ""]
                     + _headline_lines(root, manifest) + [""] + _tables_section(cfg, root, manifest))
    return scrub_local_paths(text)  # the page is shared; where the kit lives on this machine is not


def _notebook_runs(manifest: dict[str, Any]) -> tuple[str, float | None]:
    """Which commit made each notebook's outputs, and their wall times summed: a run of some notebooks
    (``--only 07``) keeps the others' entries from the runs that made them, and the README's line says so."""
    entries = [n for n in manifest.get("notebooks") or [] if isinstance(n, dict)]
    groups: dict[str, list[str]] = {}
    for n in entries:
        groups.setdefault(str(n.get("commit") or manifest.get("commit")), []).append(str(n.get("name", "?"))[:2])
    if len(groups) <= 1:
        made = f"commit {manifest.get('commit')}"
    else:
        made = "notebooks " + "; ".join(f"{', '.join(names)} at commit {c}" for c, names in groups.items())
    seconds = [_num(n.get("seconds")) for n in entries]
    total = sum(x for x in seconds if x is not None) if entries else _num(manifest.get("total_seconds"))
    return made, total


def readme_block(cfg) -> str:
    """What README.md's marked block holds: the run line and the headline numbers."""
    root = cfg.reports_root
    manifest = load_manifest(root, cfg.profile)
    cpu = manifest.get("cpu") if isinstance(manifest.get("cpu"), dict) else {}
    plan = manifest.get("precision")
    made, total = _notebook_runs(manifest)
    packages = manifest.get("packages") if isinstance(manifest.get("packages"), dict) else {}
    facts = [made, f"{manifest.get('machine')}",
             f"CPU class {cpu.get('class', '?')}",
             describe_plan(plan) if isinstance(plan, dict) and "augvae" in plan else "precision not recorded",
             f"torch {packages.get('torch', '?')}",
             f"notebooks {total:.0f} s" if total is not None else "wall time not recorded",
             f"started {manifest.get('started')}"]
    return scrub_local_paths("\n".join([f"Profile `{cfg.profile}` ({', '.join(facts)}); generated by `python -m "
                                         f"lverse_core results --profile {cfg.profile} --readme`.", ""]
                                        + _headline_lines(root, manifest)))


def markers(profile: str, kind: str = "results") -> tuple[str, str]:
    """The comments around a generated block: ``<!-- <kind>:<profile> begin -->`` and ``... end -->``."""
    return f"<!-- {kind}:{profile} begin -->", f"<!-- {kind}:{profile} end -->"


def replace_block(text: str, profile: str, block: str, where: str = "README.md", kind: str = "results") -> str:
    """``text`` with what lies between the profile's markers replaced by ``block`` (the markers and everything
    outside them kept byte for byte); ResultsError when a marker is missing, doubled or out of order."""
    begin, end = markers(profile, kind)
    counts = {m: text.count(m) for m in (begin, end)}
    if counts[begin] != 1 or counts[end] != 1:
        wrong = "; ".join(f"{m} appears {n} times" for m, n in counts.items() if n != 1)
        raise ResultsError(f"{where}: {wrong}; it needs each marker exactly once, e.g.\n{begin}\n{end}\n"
                           f"where the {kind} of profile {profile} go (nothing was changed)")
    start, stop = text.index(begin) + len(begin), text.index(end)
    if stop < start:
        raise ResultsError(f"{where}: {end} comes before {begin}; put the begin marker first (nothing was changed)")
    return text[:start] + "\n" + block.strip("\n") + "\n" + text[stop:]


def _read_readme(readme: Path) -> str:
    try:
        return readme.read_bytes().decode("utf-8")
    except OSError as e:
        raise ResultsError(f"{readme} cannot be read ({type(e).__name__}: {e})") from None
    except UnicodeDecodeError:
        raise ResultsError(f"{readme} is not UTF-8 text; nothing was changed") from None


def _write_text(path: Path, text: str) -> Path:
    """``text`` into ``path`` atomically, keeping the file's permissions (a new file's: 0666 less the umask)."""
    data = text.encode("utf-8", errors="replace")  # a lone surrogate from a hand-edited JSON string
    return atomic_write(path, lambda f: f.write(data), binary=True)


def refresh_readme(cfg, readme: Path = README) -> Path:
    """Rewrite README.md's block for ``cfg.profile`` (atomically: a reader sees the old file or the new one)."""
    new = replace_block(_read_readme(readme), cfg.profile, readme_block(cfg), readme.name)
    return _write_text(readme, new)


def write_results_page(cfg, readme: Path | None = None) -> Path:
    """Write ``reports/<profile>/RESULTS.md`` (and refresh ``readme``'s marked block when given); returns its path.
    A README whose markers are wrong is refused before anything is written."""
    text = results_markdown(cfg)
    if readme is not None:
        replace_block(_read_readme(readme), cfg.profile, "", readme.name)
    out = _write_text(cfg.reports_root / RESULTS_FILE, text)
    if readme is not None:
        refresh_readme(cfg, readme)
    return out
