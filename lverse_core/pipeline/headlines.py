"""The headline numbers of a run, as the notebooks declared them in their results (``report.write_results``, a list
under ``report.HEADLINE_KEY`` of ``report.headline_number`` entries), read back for ``index.html`` and RESULTS.md.

Nothing here knows a result's own keys: a notebook that measures something new declares it and both pages show it.
A results file that cannot be read, holds a headline of the wrong kind, or was written before notebooks declared
headlines gives a problem line naming the file and the notebook to rerun; the other files still give theirs.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lverse_core.pipeline.manifest import manifest_entries
from lverse_core.report import HEADLINE_KEY


class UnreadableResult(ValueError):
    """A results file the pages cannot read (hand-edited, cut short, not a mapping)."""


def read_result(path: Path) -> dict:
    """A results JSON as a mapping; UnreadableResult (naming ``results/<file>``) when it cannot be read."""
    try:
        tree = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # ValueError: bad JSON, or bytes that are not UTF-8
        raise UnreadableResult(f"results/{path.name} is unreadable ({type(e).__name__})") from None
    if not isinstance(tree, dict):
        raise UnreadableResult(f"results/{path.name} holds a {type(tree).__name__}, not a mapping")
    return tree


def _number(v: Any, what: str) -> float | None:
    if v is None:
        return None
    try:
        x = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
    except OverflowError:  # an integer beyond any float
        x = math.nan
    if not math.isfinite(x):
        raise TypeError(f"{what} is {str(v)[:40]!r}, not a finite number")
    return x


def format_headline(entry: Any) -> str:
    """One declared headline as text: "label: 5.0% [2.5, 8.5]" (a value that was not computed shows as "—").
    TypeError when the entry is not what ``report.headline_number`` writes."""
    if not isinstance(entry, dict) or not isinstance(entry.get("label"), str):
        raise TypeError(f"a headline entry is {type(entry).__name__} without a text label")
    label, unit, digits = entry["label"], entry.get("unit", ""), entry.get("digits", 1)
    if not isinstance(unit, str) or isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= 12:
        raise TypeError(f"headline {label!r}: unit {unit!r} or digits {digits!r} of the wrong kind")
    value = _number(entry.get("value"), f"headline {label!r}: the value")
    interval = entry.get("interval")
    if interval is not None and not (isinstance(interval, list) and len(interval) == 2):
        raise TypeError(f"headline {label!r}: the interval is {interval!r}, not [low, high]")
    bounds = [_number(x, f"headline {label!r}: the interval") for x in interval or []]
    sep = " " if unit[:1].isalnum() else ""

    def show(x: float | None) -> str:
        return "—" if x is None else f"{x:.{digits}f}"

    text = f"{label}: {show(value)}{sep + unit if value is not None else ''}"
    if bounds:
        text += f" [{show(bounds[0])}, {show(bounds[1])}]"
    return text


@dataclass
class Declared:
    """What one results file gives the pages: its headline lines, or the problem that kept them out."""
    file: str  # results/<name>.json
    notebook: str  # the manifest's notebook that wrote it ("" when the manifest does not say)
    lines: list[str] = field(default_factory=list)
    problem: str = ""


def writers(manifest: dict[str, Any]) -> dict[str, str]:
    """{output path relative to the report: the notebook that wrote it}, from the manifest's entries."""
    out = {}
    for nb in manifest_entries(manifest):
        for path in nb["outputs"] + nb["earlier"]["outputs"]:
            out.setdefault(path, nb["name"])
    return out


def rerun(notebook: str, file: str) -> str:
    """How to fix a results file: the notebook that writes it, by number when the manifest names it."""
    return f"rerun notebook {notebook[:2]} ({notebook})" if notebook else f"rerun the notebook that writes {file}"


def declared(root: Path, manifest: dict[str, Any]) -> list[Declared]:
    """Every results file's declared headline numbers, in notebook order (files no notebook claims last)."""
    results = sorted((root / "results").glob("*.json")) if (root / "results").is_dir() else []
    by = writers(manifest)
    out = []
    for path in results:
        file = f"results/{path.name}"
        item = Declared(file, by.get(file, ""))
        try:
            tree = read_result(path)
            heads = tree.get(HEADLINE_KEY)
            if heads is None:
                item.problem = f"{file}: no headline declared; {rerun(item.notebook, file)}"
            elif not isinstance(heads, list):
                raise TypeError(f"'{HEADLINE_KEY}' is a {type(heads).__name__}, not a list")
            else:
                item.lines = [format_headline(h) for h in heads]
        except UnreadableResult as e:
            item.problem = f"{e}; {rerun(item.notebook, file)}"
        except TypeError as e:
            item.lines = []
            item.problem = f"{file} holds a headline of the wrong kind ({e}); {rerun(item.notebook, file)}"
        out.append(item)
    return sorted(out, key=lambda d: (d.notebook or "~", d.file))
