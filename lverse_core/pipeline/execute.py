"""Execute the selected notebooks in order with papermill into ``reports/<profile>/``.

For each selected notebook: check the parameters against ``papermill.inspect_notebook`` (papermill itself only
logs unknown ones), execute it into ``reports/<profile>/executed/``, convert it to a self-contained HTML page in
``html/`` (``notebook_html``), then write ``manifest.json`` (``manifest``), ``index.html`` (``index_page``) and
``RESULTS.md`` (``results_page``).
A failing notebook stops the run: the executed copy with its traceback is kept, the message names the notebook and
the failing cell, and the exit status is non-zero. The runner is a convenience: every notebook also runs alone with
the plain papermill CLI.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lverse_core.config import REPO_ROOT, load_run_config
from lverse_core.hardware import describe_plan, precision_plan
from lverse_core.pipeline import notebook_sources
from lverse_core.pipeline.estimate import estimate_run
from lverse_core.pipeline.index_page import write_index
from lverse_core.pipeline.manifest import (NotebookResult, RunRecord, manifest_entries, read_manifest, relative,
                                           write_manifest)
from lverse_core.pipeline.notebook_html import notebook_to_html
from lverse_core.pipeline.processes import Deadline, DescendantPeakRSS, peak_rss_mib
from lverse_core.pipeline.results_page import RESULTS_FILE, write_results_page

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


class RunError(RuntimeError):
    """A run that cannot start (bad selection, bad parameter) or a notebook that failed."""



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



def _output_files(root: Path) -> dict[str, int]:
    """{path relative to the report: mtime} of the tables, figures and results: what a notebook wrote is what
    changed while it ran (notebooks write them through lverse_core.report, which knows no notebook)."""
    return {relative(p, root): p.stat().st_mtime_ns for d in ("tables", "figures", "results") if (root / d).is_dir()
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
    previous = read_manifest(root)
    was_ok = {n["name"] for n in manifest_entries(previous) if n["status"] == "ok"
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
    try:  # RESULTS.md always matches the latest run (python -m lverse_core results writes it alone)
        write_results_page(cfg)
    except Exception as e:  # the page must never hide the notebooks' own outcome
        log(f"    warning: {RESULTS_FILE} was not written: {type(e).__name__}: {e}")
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
        res.executed = relative(executed, root) if executed.exists() else ""
        if executed.exists():
            try:
                res.html = relative(notebook_to_html(executed, root / "html" / f"{nb.stem}.html"), root)
            except Exception as e:  # a page that fails to render must not hide the notebook's own result
                log(f"    warning: HTML conversion of {nb.name} failed: {e}")
        if res.status == "ok":
            for p in good:
                p.unlink(missing_ok=True)
        elif good:
            res.last_good = relative(good[-1], root)  # the HTML page if there was one, else the executed copy
        if res.status != "ok":
            failure = (f"notebook {nb.name} failed at {res.error}\n"
                       f"    executed copy with the traceback: {executed}")
            log(f"[{i + 1}/{len(books)}] {nb.stem}: FAILED after {res.seconds:.0f} s")
            break
        log(f"[{i + 1}/{len(books)}] {nb.stem}: ok in {res.seconds:.0f} s")
    return failure
