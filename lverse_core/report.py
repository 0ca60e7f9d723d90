"""Every artefact of a run goes through here into ``reports/<profile>/`` under a stable name.

    reports/<profile>/tables/<name>.{csv,md,tex}   tables (each row says where it came from: ``source``)
    reports/<profile>/figures/<name>.png           figures
    reports/<profile>/results/<name>.json          machine-readable results that tests and the index read
    reports/<profile>/executed/, html/             executed notebooks and their HTML pages (written by the runner)

The paper's own numbers live in ``lverse_core/reference/*.csv`` (copied from the paper's tables) and appear only
as rows labelled "L-Verse paper ..." beside ours; ``provenance(cfg)`` is the label for rows of this run.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, Callable

from lverse_core import hardware
from lverse_core.config import REPO_ROOT, Config
from lverse_core.config.sources import data_source

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"


def report_dir(cfg: Config, kind: str = "") -> Path:
    d = cfg.reports_root / kind if kind else cfg.reports_root
    d.mkdir(parents=True, exist_ok=True)
    return d


@lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name (lverse_core/hardware.py; works without /proc)."""
    return hardware.cpu_model()


def cpu_info() -> dict[str, Any]:
    """What decides the CPU arithmetic of a run: model, class, the ISA flags torch uses, torch's kernel level, threads.

    Results repeat exactly on one machine type; across CPU kinds (Intel with AMX, AMD Zen 4 with AVX512-BF16, AVX2
    only) torch picks other kernels and sums in another order, so the last digits (and a sampled token) may differ.
    """
    return hardware.describe()


def machine() -> str:
    """A short description of where this ran: the GPU name if any, else the CPU model and core count."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"{cpu_model()}, {os.cpu_count()} cores"


def provenance(cfg: Config) -> str:
    """The ``source`` label of a row computed by this run."""
    return f"this run: profile {cfg.profile}, data {data_source(cfg).label}, commit {git_commit()}, {machine()}"


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (strict JSON), numpy/torch scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[IO], None], *, binary: bool = False, prefix: str | None = None) -> Path:
    """Write ``path`` through ``write(file)``: into a unique temp file in the same folder (``prefix`` + random +
    ``.tmp``; default prefix ``<name>.<pid>.``), flushed and fsynced, then renamed into place. A reader sees the old
    file or the whole new one, never half of it; a failed write removes its temp file and leaves ``path`` as it was.
    The file gets the permissions a plain ``open`` would give it (0666 less the umask: 0644 under the usual 022), or
    an existing file's own; the temp file is private (mkstemp's 0600) until then."""
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=prefix or f"{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: Path, obj: Any) -> Path:
    """Strict JSON (NaN -> null) written through ``atomic_write``: never half a file, two writers never share a
    temp file, and the file is readable as any file the user makes (0644 under the usual umask), as a results file
    served with the report should be."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(_clean(obj), indent=2, allow_nan=False, ensure_ascii=False) + "\n").encode("utf-8")
    return atomic_write(path, lambda f: f.write(data), binary=True)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0 and not isinstance(pid, bool)  # exists but is not ours (or an absurd pid)
    return True


def remove_stale_temps(paths, pid_of) -> list[Path]:
    """Delete the temp files/folders in ``paths`` whose writer is gone: ``pid_of(path)`` is the writer's pid,
    or None when the name holds none (earlier kit versions). Leftovers of a SIGKILLed write are never reused,
    only wasted space, so they go the next time the same artefact is written or checked. Returns what was removed."""
    import shutil

    gone = []
    for p in paths:
        pid = pid_of(p)
        if pid is not None and pid_alive(pid):
            continue  # a write in progress in another process
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        gone.append(p)
    return gone


def pid_suffix(name: str, sep: str) -> int | None:
    """The pid after the last ``sep`` of a temp name (``.ci.tmp-4242`` -> 4242), None if there is none."""
    tail = name.rsplit(sep, 1)[-1] if sep in name else ""
    return int(tail) if tail.isdigit() else None


def save_results(cfg: Config, name: str, results: dict[str, Any]) -> Path:
    """Write ``results/<name>.json`` (with the run's provenance added)."""
    return write_json_atomic(report_dir(cfg, "results") / f"{name}.json", {**results, "provenance": provenance(cfg)})


CAPTIONS_FILE = "captions.json"


def format_number(v: float) -> str:
    """A measured number at the precision it carries: 4 significant digits, no exponent for everyday magnitudes,
    and float noise around zero (|v| < 5e-7, e.g. an FID of -9.6e-13 between identical sets) shown as 0."""
    if v != v:  # NaN
        return "—"
    if abs(v) < 5e-7:
        return "0"
    if 1e-3 <= abs(v) < 1e7:
        text = f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
        return text if "e" not in text else f"{v:.4f}"
    return f"{v:.3g}"


def read_captions(cfg: Config) -> dict[str, dict[str, str]]:
    """{artefact path under reports/<profile>/: {"caption", "verdict"}}, as ``index.html`` shows them."""
    return read_captions_checked(cfg)[0]


def read_captions_checked(cfg: Config) -> tuple[dict[str, dict[str, str]], str]:
    """The captions registry and what was wrong with it ("" when nothing): a damaged registry (not JSON, not UTF-8,
    not a mapping of paths to {"caption", "verdict"} strings) only loses the entries it cannot give; the next
    notebooks write theirs again."""
    path = cfg.reports_root / CAPTIONS_FILE
    if not path.exists():
        return {}, ""
    try:
        tree = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bytes that are not UTF-8
        return {}, f"{CAPTIONS_FILE} is unreadable ({type(e).__name__})"
    if not isinstance(tree, dict):
        return {}, f"{CAPTIONS_FILE} holds a {type(tree).__name__}, not a mapping of artefacts to captions"
    good = {k: {"caption": v.get("caption", ""), "verdict": v.get("verdict", "")} for k, v in tree.items()
            if isinstance(v, dict) and all(isinstance(v.get(f, ""), str) for f in ("caption", "verdict"))}
    bad = sorted(set(tree) - set(good))
    return good, (f"{CAPTIONS_FILE}: unreadable entries for {', '.join(bad[:5])}" + (" ..." if len(bad) > 5 else "")
                  if bad else "")


def record_caption(cfg: Config, rel_path: str, caption: str = "", verdict: str = "") -> None:
    """Set an artefact's caption and one-line verdict (computed by the notebook) for ``index.html``, replacing what
    an earlier run recorded for it; ``save_table``/``save_figure`` call it."""
    known = read_captions(cfg)
    if not caption and not verdict and rel_path not in known:
        return
    known[rel_path] = {"caption": caption, "verdict": verdict}
    write_json_atomic(report_dir(cfg) / CAPTIONS_FILE, dict(sorted(known.items())))


def record_verdict(cfg: Config, rel_path: str, verdict: str) -> None:
    """Add the verdict a notebook computed after saving the artefact, keeping the caption it was saved with."""
    record_caption(cfg, rel_path, read_captions(cfg).get(rel_path, {}).get("caption", ""), verdict)


def save_table(cfg: Config, name: str, df, caption: str = "", verdict: str = "") -> dict[str, Path]:
    """Write a pandas table as CSV, Markdown and LaTeX under ``tables/``; returns the paths. ``caption`` heads the
    Markdown, LaTeX and the report index; ``verdict``, a sentence the notebook computed from the numbers, follows
    it in the index."""
    d = report_dir(cfg, "tables")
    paths = {"csv": d / f"{name}.csv", "md": d / f"{name}.md", "tex": d / f"{name}.tex"}
    df.to_csv(paths["csv"], index=False)
    md = df.to_markdown(index=False) if _has_tabulate() else _markdown(df)
    paths["md"].write_text((f"{caption}\n\n" if caption else "") + md + "\n")
    paths["tex"].write_text(df.to_latex(index=False, caption=caption or None, na_rep="--",
                                        float_format=format_number))
    record_caption(cfg, f"tables/{name}.csv", caption, verdict)
    return paths


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def _markdown(df) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "--" if math.isnan(v) else format_number(v)
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join(" --- " for _ in df.columns) + "|"
    rows = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *rows])


PANELS_KEY = "Panels"  # the PNG text chunk that lists a saved figure's panels (``figure_panels``)


def figure_panels(fig) -> list[dict[str, Any]]:
    """What each visible panel (axes) of ``fig`` holds: its title and axis labels, and how many things it draws
    (lines, patches, images, collections, texts). A panel that draws nothing has ``drawn == 0``; hidden axes and
    spare grid slots with their axis turned off are not panels."""
    out = []
    for ax in fig.get_axes():
        drawn = len(ax.lines) + len(ax.patches) + len(ax.images) + len(ax.collections) + len(ax.texts)
        if not ax.get_visible() or (not ax.axison and drawn == 0):  # hidden, or a spare slot of a grid turned off
            continue
        out.append({"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(), "drawn": drawn})
    return out


def save_figure(cfg: Config, name: str, fig, dpi: int = 110, caption: str = "", verdict: str = "") -> Path:
    """Write ``figures/<name>.png``; ``caption`` and ``verdict`` go to the report index (see ``save_table``). The
    PNG carries its panels (``figure_panels``, JSON in the text chunk ``PANELS_KEY``), so a reader or a test can
    tell what the image shows without looking at it."""
    path = report_dir(cfg, "figures") / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={PANELS_KEY: json.dumps(figure_panels(fig))})
    record_caption(cfg, f"figures/{name}.png", caption, verdict)
    return path


def reference_table(name: str):
    """One of the paper's tables (``table1_reconstruction_fid`` ...) as a DataFrame, rows labelled as the paper's."""
    import pandas as pd

    path = REFERENCE_DIR / f"{name}.csv"
    if not path.exists():
        valid = ", ".join(p.stem for p in REFERENCE_DIR.glob("*.csv"))
        raise FileNotFoundError(f"no reference table {name!r}; valid: {valid}")
    return pd.read_csv(path)


# -- headline numbers: each notebook declares its own in the results it writes ----------------------------------------

HEADLINE_KEY = "headline"  # the list of declared headline numbers in a results JSON (``write_results``)


def headline_number(label: str, value: float | None, interval: tuple | list | None = None, *, unit: str = "",
                    scale: float = 1.0, digits: int = 1) -> dict[str, Any]:
    """One headline number as a notebook declares it: ``label`` says what was measured (and on how much),
    ``value`` (and its ``interval``, e.g. a 95% bootstrap interval) times ``scale`` in ``unit`` ("%", "dB", ...),
    shown with ``digits`` decimals. The index and RESULTS.md render it as it is declared; nothing else knows the
    results' keys. ``headline_number("judged right", 0.05, (0.025, 0.085), unit="%", scale=100)`` reads
    "judged right: 5.0% [2.5, 8.5]"."""
    if interval is not None and len(interval) != 2:
        raise ValueError(f"headline {label!r}: an interval is (low, high), got {interval!r}")
    return {"label": str(label), "value": None if value is None else float(value) * scale,
            "interval": None if interval is None else [float(x) * scale for x in interval], "unit": unit,
            "digits": int(digits)}


def write_results(cfg: Config, name: str, data: dict[str, Any], *, headline: list[dict[str, Any]]) -> Path:
    """Write ``results/<name>.json`` like ``save_results``, with the notebook's headline numbers (a list of
    ``headline_number``; an empty list declares none) under ``HEADLINE_KEY``."""
    return save_results(cfg, name, {**data, HEADLINE_KEY: list(headline)})
