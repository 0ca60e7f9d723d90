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


def printed(notebook: dict, stream: str = "stdout") -> list[str]:
    """What each code cell of an executed notebook printed on ``stream``, one string per cell. The kernel sends
    what a cell prints in chunks cut by time, not by line, so one ``print`` can arrive as several outputs."""
    return ["".join("".join(o["text"]) if isinstance(o["text"], list) else o["text"]
                    for o in cell.get("outputs", []) if o.get("output_type") == "stream" and o.get("name") == stream)
            for cell in notebook["cells"] if cell["cell_type"] == "code"]


def executed_notebook(path: Path, finished: bool = True, **metadata) -> Path:
    """What papermill leaves as an executed copy: two code cells with papermill's per-cell status; ``finished``
    False leaves the second one pending and never executed (a kernel or runner stopped in the first)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata.update(metadata)
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("print(x)")]
    for i, cell in enumerate(nb.cells):
        done = finished or i == 0
        cell.execution_count = i + 1 if done else None
        cell.metadata["papermill"] = {"status": "completed" if done else "pending"}
    nbformat.write(nb, path)
    return path
