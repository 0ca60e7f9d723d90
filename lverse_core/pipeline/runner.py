"""Run the kit's notebooks in order with papermill and assemble ``reports/<profile>/``.

    python -m lverse_core run --profile smoke [--only 00,01] [-p NAME VALUE ...]
    python -m lverse_core doctor --profile smoke      (is this machine ready? see lverse_core.pipeline.doctor)
    python -m lverse_core convert-official CKPT --variant ml|sl --profile paper [--out PATH]
                                                      (official AugVAE weights: lverse_core.training.official_augvae)

For each selected notebook: check the parameters against ``papermill.inspect_notebook`` (papermill itself only
logs unknown ones), execute it into ``reports/<profile>/executed/``, convert it to a self-contained HTML page in
``html/`` (images embedded, equations rendered to MathML offline, no CDN scripts), then write ``manifest.json``
(commit, package versions, resolved config, seeds, wall time per notebook, machine) and ``index.html``.
A failing notebook stops the run: the executed copy with its traceback is kept, the message names the notebook and
the failing cell, and the exit status is non-zero. The runner is a convenience: every notebook also runs alone with
the plain papermill CLI.
"""
from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from lverse_core.config import REPO_ROOT, ConfigError, available_profiles, load_profile, load_run_config
from lverse_core.hardware import describe_plan, maxrss_mib, precision_plan
from lverse_core.report import cpu_info, git_commit, machine, write_json_atomic
from lverse_core.pipeline import notebook_sources
from lverse_core.pipeline.estimate import estimate_run

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PROC = Path("/proc")  # where the memory sampler finds the kernels' high-water marks (Linux only)
PACKAGES = ["torch", "torchvision", "clip-anytorch", "torch-fidelity", "pycocoevalcap", "papermill", "nbconvert",
            "nbclient", "ipykernel", "numpy", "pandas", "seaborn", "matplotlib", "einops", "scikit-image"]


class RunError(RuntimeError):
    """A run that cannot start (bad selection, bad parameter) or a notebook that failed."""


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


def list_notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The pipeline's notebooks: ``NN_name.ipynb`` in order of NN."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))


# Notebooks a plain run leaves out; they run when named in --only (``make claims``): the claims notebook trains every
# method and control for several seeds, far longer than the pipeline itself.
OPT_IN = ("07",)


def select_notebooks(only: str | None, directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebooks a run executes: ``only`` (comma-separated numbers) or every notebook except ``OPT_IN``."""
    books = list_notebooks(directory)
    if not books:
        raise RunError(f"no notebooks (NN_name.ipynb) found in {directory}")
    if only is None:
        return [p for p in books if p.name[:2] not in OPT_IN]
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    by_prefix = {p.name[:2]: p for p in books}
    if not wanted:  # e.g. --only ',' : running nothing and exiting 0 would look like a finished run
        raise RunError(f"--only {only!r} names no notebook; give comma-separated numbers, e.g. --only 00,01 "
                       f"(valid: {', '.join(sorted(by_prefix))})")
    unknown = [w for w in wanted if w[:2] not in by_prefix]
    if unknown:
        raise RunError(f"--only {','.join(unknown)}: no such notebook; valid: {', '.join(sorted(by_prefix))}")
    return [by_prefix[w[:2]] for w in sorted(set(wanted))]


def coerce(value: str, name: str = "VALUE") -> Any:
    """A -p value from the command line: JSON literal if it parses (3, 0.5, true, "x"), else the string."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
    except RecursionError:
        raise RunError(f"-p {name}: the value is nested too deeply to read; a parameter is a number, a string or a "
                       f"flat JSON object such as '{{\"augvae_train.sl_steps\": 2600}}'") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise RunError(f"-p {name}: the value cannot be read ({e})") from None


def notebook_parameters(books: list[Path], params: dict[str, Any]) -> dict[Path, dict[str, Any]]:
    """The parameters each notebook gets, after checking them against its ``parameters`` cell.

    Every notebook must declare PROFILE; an extra parameter must be declared by at least one selected notebook
    and goes only to the notebooks that declare it (papermill itself would only log an unknown one).
    """
    import papermill

    declared = {nb: papermill.inspect_notebook(str(nb)) for nb in books}
    for nb, names in declared.items():
        if "PROFILE" not in names:
            raise RunError(f"{nb.name} has no PROFILE in a cell tagged 'parameters' (found: {', '.join(names) or 'none'})")
    valid = sorted({n for names in declared.values() for n in names} - {"PROFILE"})
    unknown = sorted(k for k in params if k == "PROFILE" or k not in valid)
    if unknown:
        raise RunError(f"unknown parameter(s) {', '.join(unknown)} for the selected notebooks; "
                       f"valid: {', '.join(valid) or 'none'} (the profile is chosen with --profile)")
    return {nb: {k: v for k, v in params.items() if k in names} for nb, names in declared.items()}


def _failed_cell(exc: Exception) -> str:
    idx = getattr(exc, "cell_index", None)
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    where = f"cell {idx}" if idx is not None else "a cell"
    if getattr(exc, "exec_count", None) is not None:
        where += f" (execution count {exc.exec_count})"
    return f"{where}: {ename}: {evalue}"


# -- HTML pages that render offline --------------------------------------------------------------------------------

_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$", re.S)
_CDN_SCRIPT = re.compile(r'<script[^>]+src="https?://[^"]+"[^>]*>\s*</script>\s*', re.I)


def _math_to_placeholders(text: str, store: list[str]) -> str:
    """Replace each $...$ / $$...$$ with a plain-word placeholder and keep its MathML in ``store``.

    The markdown renderer would mangle MathML written into the cell source, so the MathML goes into the finished
    page instead, where the placeholders stand.
    """
    import latex2mathml.converter as l2m

    def repl(m: re.Match) -> str:
        tex, display = (m.group(1), "block") if m.group(1) is not None else (m.group(2), "inline")
        try:
            store.append(l2m.convert(tex.strip(), display=display))
        except Exception:  # what the converter cannot parse stays visible as TeX source
            return m.group(0)
        return f"LVERSEMATH{len(store) - 1}X"

    return _MATH.sub(repl, text)


_OFFLINE_TEMPLATE = "lverse_offline.html.j2"


def _offline_loader():
    """The JupyterLab page template without its MathJax, Mermaid and require.js scripts (all fetched from a CDN)."""
    from jinja2 import DictLoader

    return DictLoader({_OFFLINE_TEMPLATE: "{%- extends 'lab/index.html.j2' -%}\n"
                                          "{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}\n"
                                          "{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}\n"
                                          "{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}\n"})


def scrub_local_paths(text: str) -> str:
    """``text`` without the building machine's folders: files under the work directory or the repo become relative
    paths, installed packages ``<site-packages>/...``, the standard library ``<stdlib>/...``, the home folder ``~``.
    Pages are shared; where a user keeps the kit is not theirs to publish."""
    import sysconfig

    from lverse_core.config import workdir

    paths = sysconfig.get_paths()
    # prefix -> (what a path under it becomes, what the bare folder becomes)
    names = {paths["purelib"]: ("<site-packages>/", "<site-packages>"),
             paths["platlib"]: ("<site-packages>/", "<site-packages>"), paths["stdlib"]: ("<stdlib>/", "<stdlib>"),
             str(workdir()): ("", "<workdir>"), str(REPO_ROOT): ("", "<repo>"), str(Path.home()): ("~/", "~")}
    for prefix in sorted((p for p in names if p and p != "/"), key=len, reverse=True):
        under, bare = names[prefix]
        for variant in {prefix, str(Path(prefix).resolve())}:
            text = text.replace(variant + "/", under)
            text = re.sub(re.escape(variant) + r"(?![\w-]|\.\w)", bare, text)
    return text


def notebook_to_html(executed: Path, out: Path) -> Path:
    """A self-contained HTML page: embedded images, equations as MathML, no scripts fetched from the network."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    maths: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _math_to_placeholders(cell.source, maths)
    exporter = HTMLExporter(template_name="lab", template_file=_OFFLINE_TEMPLATE, extra_loaders=[_offline_loader()],
                            embed_images=True)
    body, _ = exporter.from_notebook_node(nb)
    body = _CDN_SCRIPT.sub("", body)  # belt and braces: no <script src="http..."> survives
    body = re.sub(r"LVERSEMATH(\d+)X", lambda m: maths[int(m.group(1))], body)
    body = scrub_local_paths(body)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body)
    return out


# -- manifest and index ----------------------------------------------------------------------------------------------

def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def peak_rss_mib() -> float:
    """Peak resident memory (MiB) of this process and of the largest finished child (the notebook kernels)."""
    import resource

    return maxrss_mib(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                          resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))  # KiB on Linux, bytes on macOS


class DescendantPeakRSS:
    """Peak resident memory (MiB) of the processes started under this one while the block runs (a notebook's
    kernel and its DataLoader workers): the largest VmHWM, a process's own high-water mark, of any descendant,
    read from /proc every ``every`` seconds by a thread. Only growth in the last interval before a process exits
    can be missed. ``peak_mib`` stays 0.0 where /proc has no such field (not Linux)."""

    def __init__(self, every: float = 0.5):
        import threading

        self.every, self.peak_mib = every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "DescendantPeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._poll()

    def _poll(self) -> None:
        for pid in _descendants(os.getpid()):
            try:
                text = (PROC / str(pid) / "status").read_text()
            except OSError:  # exited meanwhile
                continue
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_mib = max(self.peak_mib, round(int(line.split()[1]) / 1024, 1))  # kB


def _descendants(root: int) -> list[int]:
    """Every live process whose parent chain leads to ``root`` (from /proc/<pid>/stat; none without /proc, where
    the runner falls back to the finished children's peak, ``peak_rss_mib``)."""
    children: dict[int, list[int]] = {}
    if not PROC.is_dir():
        return []
    for entry in PROC.glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name in () may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def kill_descendants(root: int | None = None, sig: int | None = None) -> list[int]:
    """Kill every process started under ``root`` (default this one), each in its own process group as a whole.

    Jupyter starts a notebook's kernel in a new session (its own process group), so ending the runner alone (e.g.
    by ``timeout``) leaves the kernel, its DataLoader workers and whatever it holds (a GPU) running. Here every
    descendant's group is signalled with ``killpg`` unless it is the caller's own group, where the processes are
    signalled one by one. Returns the pids found."""
    import signal

    root = os.getpid() if root is None else root
    sig = signal.SIGKILL if sig is None else sig
    pids = _descendants(root)
    own = os.getpgid(0)
    groups = set()
    for pid in pids:
        try:
            group = os.getpgid(pid)
        except OSError:  # exited meanwhile
            continue
        if group == own:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        else:
            groups.add(group)
    for group in groups:
        with contextlib.suppress(OSError):
            os.killpg(group, sig)
    return pids


class Deadline:
    """A run's wall-clock limit: a thread that, ``seconds`` after the block starts, kills the notebook kernels'
    process groups (``kill_descendants``), so the running notebook fails at once and the run stops cleanly
    (manifest and index written, the notebook recorded as failed by the timeout). A training notebook killed this
    way keeps its last checkpoint, which the next run resumes."""

    def __init__(self, seconds: float | None):
        import threading

        self.seconds, self.fired = seconds, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True) if seconds else None

    def __enter__(self) -> "Deadline":
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        if self._stop.wait(self.seconds):
            return
        self.fired = True
        while True:  # again every half second: a kernel that was still starting is caught too
            kill_descendants()
            if self._stop.wait(0.5):
                return


def _read_manifest(root: Path) -> dict[str, Any]:
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
        "notebooks": _merge_notebooks(_read_manifest(cfg.reports_root), record, commit),
        "total_seconds": round(sum(n.seconds for n in record.notebooks), 1),  # of this run
        "peak_rss_mib": max([n.peak_rss_mib for n in record.notebooks] + [peak_rss_mib()]),  # of this run
    }
    return write_json_atomic(cfg.reports_root / "manifest.json", manifest)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _made_from_other_checkpoints(cfg, manifest: dict[str, Any]) -> dict[str, str]:
    """Outputs of notebooks whose results JSON records ``made_from`` artefact ids that differ from this run's
    current ones (``pipeline.artefact_ids``): a table made from a data set, tokenizer, AugVAE, codes, BiART, reranker
    or judge remade since, each named with what changed and the notebook to rerun."""
    from lverse_core.pipeline import artefact_ids

    stale = {}
    for nb in _manifest_entries(manifest):
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


class UnreadableResult(ValueError):
    """A results file the index cannot read (hand-edited, cut short, not a mapping)."""


def _result(root: Path, name: str) -> dict:
    """``results/<name>.json`` as a mapping; {} when it does not exist, UnreadableResult when it cannot be read."""
    path = root / "results" / f"{name}.json"
    if not path.exists():
        return {}
    try:
        tree = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # ValueError: bad JSON, or bytes that are not UTF-8
        raise UnreadableResult(f"results/{name}.json is unreadable ({type(e).__name__})") from None
    if not isinstance(tree, dict):
        raise UnreadableResult(f"results/{name}.json holds a {type(tree).__name__}, not a mapping")
    return tree


def _headline_table1(root: Path) -> str:
    t1 = _result(root, "table1_reconstruction")
    try:
        t3 = _result(root, "table3")
    except UnreadableResult:  # the judge's ceiling is left out; Table 3's own headline says why
        t3 = {}
    judge = t3.get("judge") or {}
    ceiling = next((v for k, v in judge.items() if "decoder ceiling" in k), {})
    sl = (t1.get("models") or {}).get("AugVAE-SL") or {}
    if sl.get("psnr_db") is None:
        return ""
    return (f"AugVAE-SL reconstructs the {t1.get('n_eval', '?')} test images at {sl['psnr_db']:.1f} dB PSNR"
            + (f"; the attribute judge finds {100 * ceiling['judged_correct']:.1f}% of its reconstructions "
               f"right (the ceiling for generated images)" if ceiling.get("judged_correct") is not None else "") + ".")


def _headline_biart(root: Path) -> str:
    b = _result(root, "02_biart")
    sentence = (b.get("conditioning_gap") or {}).get("sentence")
    if not sentence:
        return ""
    if not isinstance(sentence, str):
        raise TypeError(f"conditioning_gap.sentence is a {type(sentence).__name__}, not text")
    return "BiART held-out NLL: " + sentence


def _headline_table2(root: Path) -> str:
    t2 = _result(root, "table2")
    ours2 = next(iter((t2.get("ours") or {}).values()), None)
    if not ours2:
        return ""
    acc = ours2.get("attribute_accuracy")
    return (f"Captions (Table 2, {t2.get('n_images', '?')} images): BLEU-4 {100 * ours2['BLEU-4']:.1f}, "
            f"CIDEr {100 * ours2['CIDEr']:.1f}" + (f"; {100 * acc:.1f}% name every object right" if acc is not None
                                                    else "") + ".")


def _headline_table3(root: Path) -> str:
    t3 = _result(root, "table3")
    judge = t3.get("judge") or {}
    gen, floor = judge.get("generated images") or {}, judge.get("images generated from shuffled captions (floor)") or {}
    if gen.get("judged_correct") is None:
        return ""
    text = f"Images (Table 3, {t3.get('n_prompts', '?')} prompts): {100 * gen['judged_correct']:.1f}% judged right"
    if gen.get("ci95"):
        text += f" [{100 * gen['ci95'][0]:.1f}, {100 * gen['ci95'][1]:.1f}]"
    if floor.get("judged_correct") is not None:
        text += f", against a shuffled-caption floor of {100 * floor['judged_correct']:.1f}%"
        if floor.get("ci95"):
            text += f" [{100 * floor['ci95'][0]:.1f}, {100 * floor['ci95'][1]:.1f}]"
    return text + "."


def _headline_human_eval(root: Path) -> str:
    h = _result(root, "06_human_eval")
    if h.get("pred_plus_both") is None:
        return ""
    return (f"Human-evaluation protocol ({h.get('raters', 'raters')}): Pred + Both "
            f"{100 * h['pred_plus_both']:.1f}% [{100 * h['ci'][0]:.1f}, {100 * h['ci'][1]:.1f}] of "
            f"{h.get('n_votes', '?')} votes"
            + (f"; the paper's human raters gave L-Verse {h['paper_pred_plus_both_percent']:.1f}% on MS-COCO"
               if h.get("paper_pred_plus_both_percent") is not None else "") + ".")


# Each headline, the results files it reads (for the note when one cannot be read) and the notebook writing them.
HEADLINES = ((_headline_table1, ("table1_reconstruction", "table3"), "03"),
             (_headline_biart, ("02_biart",), "02"), (_headline_table2, ("table2",), "04"),
             (_headline_table3, ("table3",), "05"), (_headline_human_eval, ("06_human_eval",), "06"))
UNREADABLE = "not shown: "  # how a headline that could not be made starts (the index shows it as a problem)


def headline_numbers(root: Path) -> list[str]:
    """The run's headline numbers, one sentence each, read from the results files (missing ones are skipped). A
    results file that cannot be read, or holds values of the wrong kind, gives a line saying so instead of its
    headline; the other headlines are still made."""
    lines = []
    for make, names, notebook in HEADLINES:
        try:
            line = make(root)
        except UnreadableResult as e:
            line = f"{UNREADABLE}{e}; re-run notebook {notebook}"
        except (ArithmeticError, AttributeError, KeyError, IndexError, TypeError, ValueError) as e:  # hand-edited
            files = " or ".join(f"results/{n}.json" for n in names)
            line = (f"{UNREADABLE}{files} holds a value of the wrong kind ({type(e).__name__}: {e}); "
                    f"re-run notebook {notebook}")
        if line and line not in lines:
            lines.append(line)
    return lines


def _manifest_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
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
    manifest = _read_manifest(root)
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
    heads = headline_numbers(root)
    if heads:
        computed = f"<p class='meta'>computed in {esc(plan)}</p>" if plan else ""
        parts.append(f"<h2 id='headline'>Headline numbers of this run</h2>{computed}<ul class='headline'>"
                     + "".join(f"<li class='failed'>{esc(x)}</li>" if x.startswith(UNREADABLE) else f"<li>{esc(x)}</li>"
                               for x in heads) + "</ul>")
    # outputs of notebooks whose latest run did not end ok: from an earlier run, no longer backed by the notebook
    entries = _manifest_entries(manifest)
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
        rel = _rel(t, root)
        links = " · ".join(f"<a href='{_rel(t.with_suffix(x), root)}'>{x[1:]}</a>" for x in (".csv", ".md", ".tex")
                           if t.with_suffix(x).exists())
        try:
            table = _table_html(pd.read_csv(t))
        except Exception as e:  # a damaged CSV loses its own table only (pandas raises many kinds of error)
            table = f"<p class='failed'>{esc(rel)} is unreadable ({esc(type(e).__name__)}); re-run its notebook</p>"
        add(t.name, f"<div class='item'>{heading(rel, t.stem)}{stale_note(rel)}{table}<p class='links'>{links}</p>"
            f"</div>")
    for f in sorted((root / "figures").glob("*.png")) if (root / "figures").exists() else []:
        rel = _rel(f, root)
        add(f.name, f"<div class='item'>{heading(rel, f.stem)}{stale_note(rel)}<figure><a href='{rel}'><img src='{rel}' "
            f"alt='{esc(_humane(f.stem))}'></a><figcaption>{esc(f.name)}</figcaption></figure></div>")
    forms = sorted((root / "human_eval" / "forms").glob("*.html")) if (root / "human_eval").exists() else []
    if forms:
        items.setdefault("figure7", []).append((99, "forms",
            "<div class='item'><h3>The rater forms (one self-contained page per rater)</h3><p>"
            + " · ".join(f"<a href='{_rel(p, root)}'>{esc(p.stem)}</a>" for p in forms) + "</p></div>"))
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
                _result(root, r.stem)
            except UnreadableResult:
                return " <span class='failed'>(unreadable)</span>"
            return ""

        parts.append("<h2 id='results'>Results (JSON)</h2><ul>" + "".join(
            f"<li><a href='{_rel(r, root)}'>{esc(r.name)}</a>{note(r)}</li>" for r in results) + "</ul>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "table.data{border-collapse:collapse;font-size:90%}table.data td,table.data th{border:1px solid #ccc;"
             "padding:3px 8px}.failed{color:#b00}.ok{color:#070}.verdict{background:#f3f6fa;border-left:4px solid "
             "#4c72b0;padding:4px 10px}.meta{color:#555}.item{margin:1.2em 0 2em}img{max-width:900px}"
             "h2{border-bottom:1px solid #ccc;margin-top:2em}nav{margin:1em 0}.links{font-size:85%}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>L-Verse kit — {esc(cfg.profile)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    out = root / "index.html"
    out.write_text(scrub_local_paths(page), errors="replace")  # a lone surrogate from a hand-edited JSON string
    return out


# -- the run -------------------------------------------------------------------------------------------------------

def _output_files(root: Path) -> dict[str, int]:
    """{path relative to the report: mtime} of the tables, figures and results: what a notebook wrote is what
    changed while it ran (notebooks write them through lverse_core.report, which knows no notebook)."""
    return {_rel(p, root): p.stat().st_mtime_ns for d in ("tables", "figures", "results") if (root / d).is_dir()
            for p in (root / d).iterdir() if p.is_file()}


def unfinished(executed: Path) -> str:
    """Why the executed notebook ``executed`` did not run to its end ("" when it did): papermill records each code
    cell's status in the copy as it goes, and a cell that ran has an execution count. A notebook stopped by
    ``sys.exit(0)`` (which papermill lets pass), a kernel that died, or a runner killed mid-run leaves cells
    pending, running or failed, or never executed."""
    try:
        nb = json.loads(executed.read_text())
        cells = nb["cells"]
        if not isinstance(cells, list):
            raise TypeError("cells is not a list")
    except FileNotFoundError:
        return "no executed copy was written"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"the executed copy is not a readable notebook ({type(e).__name__}: {e})"
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source")
        if not ("".join(source) if isinstance(source, list) else str(source or "")).strip():
            continue  # an empty cell is skipped by the kernel
        meta = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
        status = (meta.get("papermill") or {}).get("status") if isinstance(meta.get("papermill"), dict) else None
        if status != "completed" or cell.get("execution_count") is None:
            return (f"cell {i} did not complete (status {status or 'unknown'}); the kernel exited or was stopped "
                    f"before the notebook's end")
    return ""


def _set_aside_good_copy(root: Path, nb: Path, was_ok: bool) -> list[Path]:
    """Copy the executed notebook and HTML page of a notebook whose last run was ok to ``last_good/`` before it
    runs again: papermill writes the new copy in place (a failure keeps its traceback there), and a failed rerun
    must not destroy the last good result. Only a copy that ran to its end is set aside (``unfinished``): a copy
    half-written by a run killed after the manifest said ok never replaces the last good one. Returns the copies
    (executed, then HTML), removed again on success."""
    import shutil

    if was_ok and unfinished(root / "executed" / nb.name):
        was_ok = False
    if not was_ok:  # the copy in place is not a good one; an earlier set-aside copy (if any) stays the last good
        return [p for p in (root / "executed" / "last_good" / nb.name, root / "html" / "last_good" / f"{nb.stem}.html")
                if p.exists()]
    copies = []
    for src, dst in ((root / "executed" / nb.name, root / "executed" / "last_good" / nb.name),
                     (root / "html" / f"{nb.stem}.html", root / "html" / "last_good" / f"{nb.stem}.html")):
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            copies.append(dst)
    return copies


# Notebooks that run a Java program (Table 2's METEOR and PTB tokenizer, lverse_core/evaluation/metrics.py)
NEEDS_JAVA = ("04",)


def check_environment(books: list[Path], cfg=None) -> None:
    """What ``doctor`` would report as a problem for these notebooks, checked before anything runs: a work
    directory that cannot be written in, and (given the run's ``cfg``) no Java for a notebook that needs it under
    that configuration (a RunError with the fix)."""
    from lverse_core.pipeline.doctor import check_java, workdir_problem

    problem = workdir_problem()
    if problem:
        raise RunError(f"the work directory cannot hold this run: {problem}. Set LVERSE_WORKDIR to a folder this "
                       f"user can write in (python -m lverse_core doctor checks this)")
    java = [nb.stem for nb in books if nb.name[:2] in NEEDS_JAVA] if cfg is not None else []
    if java:
        found = check_java(cfg)
        if not found.ok:
            raise RunError(f"{', '.join(java)}: {found.message}; {found.fix} (python -m lverse_core doctor checks "
                           f"this), or leave {', '.join(j[:2] for j in java)} out of --only")


def run(profile: str, only: str | None = None, params: dict[str, Any] | None = None,
        notebook_dir: Path = NOTEBOOK_DIR, log=print, estimate: bool = True,
        timeout_s: float | None = None) -> RunRecord:
    """Execute the selected notebooks; raise RunError (after writing manifest and index) when one fails.

    First prints the precision the run computes in and, when it trains, the expected time on this machine
    (``estimate``: a few timed steps per training stage, lverse_core/pipeline/estimate.py).
    ``timeout_s`` limits the whole run's wall time: when it passes, the running notebook's kernel is killed with
    its process group (``Deadline``), that notebook is recorded as failed by the timeout and the run stops."""
    params = dict(params or {})
    books = select_notebooks(only, notebook_dir)
    per_book = notebook_parameters(books, params)  # all checks before anything runs
    check_environment(books)
    cfg = load_run_config(profile, params.get("OVERRIDES"))  # with overrides: runs/ and reports/<profile>+<tag>/
    check_environment(books, cfg)  # Java, where this configuration's notebooks run it
    try:
        notebook_sources.check(notebook_dir, books)
    except notebook_sources.NotebookDriftError as e:
        raise RunError(str(e)) from None
    root = cfg.reports_root
    (root / "executed").mkdir(parents=True, exist_ok=True)
    plan = precision_plan(cfg)
    log(f"precision: {describe_plan(plan)}", flush=True)
    expected = None
    if estimate and any(nb.stem[:2] in ("01", "02") for nb in books):
        try:
            expected = estimate_run(cfg)
        except Exception as e:  # an estimate must never stop a run: the notebooks report real errors themselves
            log(f"no time estimate ({type(e).__name__}: {e})", flush=True)
        if expected is not None:
            log(f"expected time on this machine: {expected.describe()}", flush=True)
    previous = _read_manifest(root)
    was_ok = {n["name"] for n in _manifest_entries(previous) if n["status"] == "ok"
              } if previous.get("profile") == profile else set()
    record = RunRecord(profile=profile, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), precision=plan,
                       estimate_s=round(expected.total_s, 1) if expected is not None else None)
    record.notebooks = [NotebookResult(nb.stem, "not run") for nb in books]
    manifest_params = {"PROFILE": profile, **params}
    failure: str | None = None
    deadline = Deadline(timeout_s).__enter__()
    try:
        failure = _run_books(cfg, books, record, root, was_ok, per_book, profile, log, deadline, manifest_params)
    finally:
        deadline.__exit__(None, None, None)
    write_manifest(cfg, record, manifest_params)
    write_index(cfg, record)
    if failure:
        raise RunError(failure)
    log(f"report: {root / 'index.html'} (total {sum(n.seconds for n in record.notebooks):.0f} s)")
    return record


def _run_books(cfg, books, record, root, was_ok, per_book, profile, log, deadline: Deadline,
               manifest_params: dict[str, Any]) -> str | None:
    """Execute ``books`` in order into ``record``; the failure message of the first that fails, else None."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    failure: str | None = None
    for i, nb in enumerate(books):
        res = record.notebooks[i]
        executed = root / "executed" / nb.name
        good = _set_aside_good_copy(root, nb, nb.stem in was_ok)
        before = _output_files(root)
        # on record before it starts: a run killed from here on leaves "running", never an earlier "ok"
        res.status = "running"
        write_manifest(cfg, RunRecord(record.profile, record.started, record.notebooks[:i + 1], record.precision,
                                      record.estimate_s, record.run_id), manifest_params)
        log(f"[{i + 1}/{len(books)}] {nb.stem}: running (profile {profile}) ...", flush=True)
        t0 = time.monotonic()
        with DescendantPeakRSS() as memory:
            try:
                papermill.execute_notebook(str(nb), str(executed), parameters={"PROFILE": profile, **per_book[nb]},
                                           kernel_name="python3", cwd=str(REPO_ROOT), progress_bar=False,
                                           log_output=False)
                why = unfinished(executed)
                res.status, res.error = ("failed", f"the notebook did not finish: {why}") if why else ("ok", "")
            except PapermillExecutionError as e:
                res.status, res.error = "failed", _failed_cell(e)
            except Exception as e:  # kernel died, notebook unreadable ...
                res.status, res.error = "failed", f"{type(e).__name__}: {e}"
        if deadline.fired and res.status == "ok":  # the deadline fell between the last cell and here
            res.status = "failed"
        if deadline.fired:
            res.error = (f"the run's timeout of {deadline.seconds:.0f} s passed during this notebook; its kernel was "
                         f"killed (a training keeps its last checkpoint and resumes on the next run)"
                         + (f" [{res.error}]" if res.error else ""))
        res.seconds = round(time.monotonic() - t0, 1)
        res.peak_rss_mib = memory.peak_mib or peak_rss_mib()  # this notebook's kernel; else the largest so far
        res.outputs = sorted(k for k, v in _output_files(root).items() if before.get(k) != v)
        res.executed = _rel(executed, root) if executed.exists() else ""
        if executed.exists():
            try:
                res.html = _rel(notebook_to_html(executed, root / "html" / f"{nb.stem}.html"), root)
            except Exception as e:  # a page that fails to render must not hide the notebook's own result
                log(f"    warning: HTML conversion of {nb.name} failed: {e}")
        if res.status == "ok":
            for p in good:
                p.unlink(missing_ok=True)
        elif good:
            res.last_good = _rel(good[-1], root)  # the HTML page if there was one, else the executed copy
        if res.status != "ok":
            failure = (f"notebook {nb.name} failed at {res.error}\n"
                       f"    executed copy with the traceback: {executed}")
            log(f"[{i + 1}/{len(books)}] {nb.stem}: FAILED after {res.seconds:.0f} s")
            break
        log(f"[{i + 1}/{len(books)}] {nb.stem}: ok in {res.seconds:.0f} s")
    return failure


def _end_kernels_on_sigterm() -> None:
    """On SIGTERM (``timeout``, a job scheduler), kill the notebook kernels' process groups before exiting, so
    no kernel outlives the runner."""
    import signal

    def handler(signum, frame):
        kill_descendants()
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lverse_core", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="execute the notebooks in order into reports/<profile>/")
    r.add_argument("--profile", default="smoke", help=f"one of {', '.join(available_profiles())} (default smoke)")
    r.add_argument("--only", help="comma-separated notebook numbers, e.g. 00,01")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                   help="extra notebook parameter (validated against each notebook's parameters cell)")
    r.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="stop the run after SECONDS of wall time, killing the running notebook's kernel (a training "
                        "keeps its checkpoint and resumes on the next run)")
    sub.add_parser("list", help="list the notebooks and their parameters")
    n = sub.add_parser("notebooks", help="rewrite notebooks/*.ipynb from their sources notebooks/*.py")
    n.add_argument("--check", action="store_true", help="only say which .ipynb differ from their .py (exit 1 if any)")
    d = sub.add_parser("doctor", help="check this machine for a profile (Java, assets, stale artefacts, disk)")
    d.add_argument("--profile", default="smoke", help=f"one of {', '.join(available_profiles())} (default smoke)")
    c = sub.add_parser("convert-official", help="convert an official AugVAE .ckpt into this profile's checkpoint "
                                                "(docs/official-weights.md)")
    c.add_argument("ckpt", help="the official PyTorch Lightning checkpoint (AugVAE-ML or AugVAE-SL)")
    c.add_argument("--variant", required=True, choices=["ml", "sl"])
    c.add_argument("--profile", default="paper", help="a profile with the official architecture (default paper)")
    c.add_argument("--out", help="where to write (default runs/<profile>/augvae_<variant>.pt, where the notebooks "
                                 "look)")
    args = ap.parse_args(argv)
    try:
        if args.command == "convert-official":
            from lverse_core.training.loop import CheckpointError
            from lverse_core.training.official_augvae import convert_official

            try:
                print(convert_official(load_profile(args.profile), args.ckpt, args.variant, args.out))
            except CheckpointError as e:  # every refusal of the converter; nothing was written
                print(f"error: {e}", file=sys.stderr)
                return 1
            return 0
        if args.command == "doctor":
            from lverse_core.pipeline.doctor import doctor

            return doctor(load_profile(args.profile))
        if args.command == "notebooks":
            if args.check:
                notebook_sources.check()
                print("every notebook matches its source")
                return 0
            for path in notebook_sources.write_all():
                print(f"wrote {path.relative_to(REPO_ROOT)}")
            return 0
        if args.command == "list":
            import papermill

            for nb in list_notebooks():
                print(nb.name, ", ".join(papermill.inspect_notebook(str(nb))))
            return 0
        _end_kernels_on_sigterm()
        run(args.profile, args.only, {k: coerce(v, k) for k, v in args.param}, timeout_s=args.timeout)
    except (RunError, ConfigError, notebook_sources.NotebookDriftError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
