"""``reports/<profile>/manifest.json``: the run records (one ``NotebookResult`` per notebook), merged with the earlier
manifest's entries of notebooks a partial run (``--only``) left out, and read back leniently for the pages."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from lverse_core.pipeline.processes import peak_rss_mib
from lverse_core.report import cpu_info, git_commit, machine, write_json_atomic

PACKAGES = ["torch", "torchvision", "clip-anytorch", "torch-fidelity", "pycocoevalcap", "papermill", "nbconvert",
            "nbclient", "ipykernel", "numpy", "pandas", "seaborn", "matplotlib", "einops", "scikit-image"]



@dataclass
class NotebookResult:
    name: str
    status: str  # ok | failed | not run | running (written before it starts: a run killed meanwhile leaves it)
    seconds: float = 0.0
    peak_rss_mib: float = 0.0  # the largest resident set of this notebook's kernel or its workers (DescendantPeakRSS)
    executed: str = ""
    html: str = ""
    error: str = ""
    last_good: str = ""  # failed notebooks: the previous good executed copy, kept (see run)
    outputs: list[str] = field(default_factory=list)  # tables/figures/results it wrote, relative to the report


@dataclass
class RunRecord:
    profile: str
    started: str
    notebooks: list[NotebookResult] = field(default_factory=list)
    precision: dict = field(default_factory=dict)  # lverse_core.hardware.precision_plan
    estimate_s: float | None = None  # the expected time printed at the start (pipeline/estimate.py)
    # tells this run's own manifest entries (written while it runs) from an earlier run's, even one started in the
    # same second
    run_id: str = field(default_factory=lambda: os.urandom(8).hex())

def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out



def read_manifest(root: Path) -> dict[str, Any]:
    try:
        tree = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):  # none yet, or unreadable: nothing earlier to keep
        return {}
    return tree if isinstance(tree, dict) else {}


def _merge_notebooks(previous: dict[str, Any], record: RunRecord, commit: str) -> list[dict[str, Any]]:
    """This run's notebook entries plus the earlier manifest's entries of notebooks this run did not select
    (``--only``), each saying which run it comes from, so a partial rerun keeps the report's provenance whole.
    A notebook this run selected replaces its earlier entry, whose status and run are kept under ``earlier``."""
    this = {n.name: {**vars(n), "run_started": record.started, "run_id": record.run_id, "commit": commit}
            for n in record.notebooks}
    earlier: dict[str, dict] = {}
    carried: dict[str, Any] = {}  # this run's own entries written while it ran: the earlier run they replaced
    if previous.get("profile") == record.profile:
        notebooks = previous.get("notebooks")
        for n in notebooks if isinstance(notebooks, list) else []:
            if isinstance(n, dict) and isinstance(n.get("name"), str):
                if n.get("run_id") == record.run_id:
                    if n.get("earlier"):
                        carried[n["name"]] = n["earlier"]
                    continue
                earlier[n["name"]] = {"run_started": previous.get("started"), "commit": previous.get("commit"),
                                      **{k: v for k, v in n.items() if k != "earlier"}}
    merged = []
    for name in sorted(set(this) | set(earlier)):
        if name in this:
            entry = this[name]
            if name in carried:
                entry["earlier"] = carried[name]
            elif name in earlier:
                entry["earlier"] = {k: earlier[name].get(k) for k in ("status", "run_started", "commit", "outputs")}
        else:
            entry = {**earlier[name], "from_earlier_run": True}
        merged.append(entry)
    return merged


def write_manifest(cfg, record: RunRecord, params: dict[str, Any]) -> Path:
    """``manifest.json`` of this run; entries of notebooks it did not select are kept from the earlier manifest."""
    commit = git_commit()
    manifest = {
        "profile": record.profile,
        "started": record.started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit,
        "machine": machine(),
        "cpu": cpu_info(),
        "precision": record.precision,
        "estimate_seconds": record.estimate_s,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "seed": cfg.seed,
        "parameters": params,
        "config": cfg.to_dict(),
        "notebooks": _merge_notebooks(read_manifest(cfg.reports_root), record, commit),
        "total_seconds": round(sum(n.seconds for n in record.notebooks), 1),  # of this run
        "peak_rss_mib": max([n.peak_rss_mib for n in record.notebooks] + [peak_rss_mib()]),  # of this run
    }
    return write_json_atomic(cfg.reports_root / "manifest.json", manifest)


def relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def manifest_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's notebook entries with the fields the index reads, each of the kind it expects: a hand-edited
    entry (no status, a number as name, outputs as text) is shown as it can be, never a KeyError."""
    def text(v: Any, default: str = "") -> str:
        return v if isinstance(v, str) else default

    def paths(v: Any) -> list[str]:
        return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []

    entries = manifest.get("notebooks")
    out = []
    for n in entries if isinstance(entries, list) else []:
        if not isinstance(n, dict):
            continue
        seconds = n.get("seconds")
        earlier = n.get("earlier") if isinstance(n.get("earlier"), dict) else {}
        out.append({"name": text(n.get("name"), "?"), "status": text(n.get("status"), "unknown"),
                    "seconds": float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
                    else 0.0, "error": text(n.get("error")), "html": text(n.get("html")),
                    "executed": text(n.get("executed")), "last_good": text(n.get("last_good")),
                    "from_earlier_run": bool(n.get("from_earlier_run")), "run_started": n.get("run_started"),
                    "outputs": paths(n.get("outputs")), "earlier": {"outputs": paths(earlier.get("outputs"))}})
    return out
