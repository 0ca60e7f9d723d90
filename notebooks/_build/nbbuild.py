"""Shared by the notebook builders: (kind, source) cells -> a clean .ipynb (no outputs, stable cell ids).

kind is "markdown", "parameters" (a code cell tagged for papermill) or "code".
"""
from __future__ import annotations

from pathlib import Path

import nbformat as nbf

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent


def make_notebook(cells: list[tuple[str, str]], id_prefix: str) -> nbf.NotebookNode:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, src) in enumerate(cells):
        if kind not in ("markdown", "parameters", "code"):
            raise ValueError(f"cell {i}: unknown kind {kind!r}")
        cell = nbf.v4.new_markdown_cell(src) if kind == "markdown" else nbf.v4.new_code_cell(src)
        if kind == "parameters":
            cell.metadata["tags"] = ["parameters"]
        cell.id = f"{id_prefix}-cell-{i:02d}"  # stable ids: rebuilding gives the same file
        nb.cells.append(cell)
    return nb


def interleave(header: str, params: str, check: str, cells: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Header, parameters and check cells, then a markdown line before each code cell."""
    out = [("markdown", header), ("parameters", params), ("code", check)]
    for text, code in cells:
        out += [("markdown", text), ("code", code)]
    return out


def write(nb: nbf.NotebookNode, name: str) -> Path:
    out = NOTEBOOK_DIR / f"{name}.ipynb"
    nbf.write(nb, out)
    print(f"wrote {out}")
    return out
