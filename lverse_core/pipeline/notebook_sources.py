"""One source per notebook: ``notebooks/NN_name.py`` (jupytext percent format) is what people edit and review;
``notebooks/NN_name.ipynb`` is written from it, without outputs, and is what papermill executes.

The two are *paired* (``jupytext.formats: ipynb,py:percent`` in both), so JupyterLab with jupytext (installed with
the kit) saves both files when either is edited there. Outside JupyterLab, edit the ``.py`` and run
``make notebooks`` (``python -m lverse_core notebooks``) to rewrite the ``.ipynb``; if you edited an ``.ipynb``
without jupytext, ``jupytext --sync notebooks/NN_name.ipynb`` carries the edit back into the ``.py``.

``python -m lverse_core notebooks --check`` (and ``tests/test_notebook_sources.py``, and the runner before it
executes anything) compares what matters (cell kinds, sources, tags) and names every notebook that drifted.
"""
from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat

from lverse_core.config import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
FORMATS = "ipynb,py:percent"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


class NotebookDriftError(RuntimeError):
    """A notebook's .ipynb no longer matches its .py source."""


def sources(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebook sources, ``NN_name.py``, in order."""
    return sorted(p for p in Path(directory).glob("[0-9][0-9]_*.py"))


def notebook_from_source(py: Path) -> nbformat.NotebookNode:
    """The clean notebook a source describes: no outputs, stable cell ids, the kit's kernel, paired metadata."""
    nb = jupytext.read(py, fmt="py:percent")
    prefix = "nb" + Path(py).stem[:2]
    for i, cell in enumerate(nb.cells):
        cell.id = f"{prefix}-cell-{i:02d}"  # stable ids: writing twice gives the same file
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata = {k: v for k, v in cell.metadata.items() if k == "tags"}
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"},
                   "jupytext": {"formats": FORMATS}}
    nb.nbformat, nb.nbformat_minor = 4, 5
    return nb


def _essence(nb: nbformat.NotebookNode) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.rstrip("\n"), tuple(c.get("metadata", {}).get("tags", ()))) for c in nb.cells]


def drift(py: Path) -> str | None:
    """None when ``py``'s ``.ipynb`` has the same cells (kind, source, tags) as ``py``; else what differs."""
    ipynb = Path(py).with_suffix(".ipynb")
    if not ipynb.exists():
        return f"{ipynb.name} is missing"
    want, have = _essence(notebook_from_source(py)), _essence(nbformat.read(ipynb, as_version=4))
    if want == have:
        return None
    for i, (w, h) in enumerate(zip(want, have)):
        if w != h:
            first = next((a for a, b in zip(w[1].splitlines(), h[1].splitlines()) if a != b), w[1][:80])
            return f"cell {i} differs ({w[0]} in the .py, {h[0]} in the .ipynb; first differing line: {first[:100]!r})"
    return f"{len(want)} cells in the .py, {len(have)} in the .ipynb"


def check(directory: Path = NOTEBOOK_DIR, notebooks: list[Path] | None = None) -> None:
    """Raise :class:`NotebookDriftError` naming every notebook whose .ipynb differs from its .py.

    ``notebooks`` (``.ipynb`` paths) limits the check to those; a notebook without a ``.py`` beside it is not checked.
    """
    pys = sources(directory) if notebooks is None else [
        Path(nb).with_suffix(".py") for nb in notebooks if Path(nb).with_suffix(".py").exists()]
    problems = {py: d for py in pys if (d := drift(py))}
    if problems:
        lines = [f"  {py.with_suffix('.ipynb').name}: {why}" for py, why in problems.items()]
        raise NotebookDriftError(
            "these notebooks differ from their sources (notebooks/NN_name.py is the source of truth):\n"
            + "\n".join(lines) + "\nIf you edited the .py, run `make notebooks` to rewrite the .ipynb; if you edited "
            "the .ipynb, run `jupytext --sync notebooks/<name>.ipynb` to carry the edit into the .py first.")


def write_all(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """Rewrite every ``.ipynb`` from its ``.py``; returns the files that changed."""
    changed = []
    for py in sources(directory):
        out = py.with_suffix(".ipynb")
        text = nbformat.writes(notebook_from_source(py)) + "\n"
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(out)
            changed.append(out)
    return changed
