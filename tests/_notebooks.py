"""Helpers that build tiny notebooks for runner tests."""
from pathlib import Path

import nbformat


def make_notebook(path: Path, body: list[str], params: str = 'PROFILE = "ci"  # ci|smoke|gpu|paper') -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test notebook\n\n$$E = mc^2$$ and $x_i$"), cell]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in body]
    nbformat.write(nb, path)
    return path
