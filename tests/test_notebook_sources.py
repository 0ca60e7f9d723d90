"""One source per notebook: notebooks/NN_name.py (jupytext percent) and the .ipynb written from it stay in sync."""
import shutil

import nbformat
import pytest

from lverse_core.config import REPO_ROOT
from lverse_core.pipeline import notebook_sources as ns
from lverse_core.pipeline.cli import main
from lverse_core.pipeline.execute import RunError, run

NOTEBOOKS = REPO_ROOT / "notebooks"


def test_every_notebook_has_a_source_and_matches_it():
    ipynbs = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert len(ipynbs) >= 7
    assert [p.with_suffix(".py") for p in ipynbs] == ns.sources()
    ns.check()  # raises NotebookDriftError naming the stale notebooks


def test_committed_notebooks_are_exactly_what_the_sources_write():
    for py in ns.sources():
        text = py.with_suffix(".ipynb").read_text(encoding="utf-8")
        assert text == nbformat.writes(ns.notebook_from_source(py)) + "\n", f"run `make notebooks` ({py.name})"
        nb = nbformat.reads(text, as_version=4)
        assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
        # the one check that committed notebooks carry no outputs and one parameters cell, for every notebook
        assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code"), py.name
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and params[0].source.startswith('PROFILE = "smoke"'), py.name
        assert nb.metadata["kernelspec"]["name"] == "python3" and nb.cells[0].cell_type == "markdown", py.name


@pytest.fixture()
def copy_of_notebooks(tmp_path):
    for p in NOTEBOOKS.glob("0[06]_*"):
        shutil.copy(p, tmp_path / p.name)
    return tmp_path


def test_an_edited_source_is_named_as_drift_and_write_all_repairs_only_it(copy_of_notebooks):
    d = copy_of_notebooks
    py = next(d.glob("06_*.py"))
    py.write_text(py.read_text().replace("# # 06 · Human evaluation", "# # 06 · Human evaluation, edited"))
    with pytest.raises(ns.NotebookDriftError, match=r"(?s)06_human_eval\.ipynb: cell 0 differs.*make notebooks"):
        ns.check(d)
    assert ns.write_all(d) == [py.with_suffix(".ipynb")]
    ns.check(d)
    assert ns.write_all(d) == []  # idempotent: nothing changes the second time
    nb = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
    assert nb.cells[0].source.startswith("# 06 · Human evaluation, edited of captions")
    assert nb.cells[0].id == "nb06-cell-00"


def test_a_missing_ipynb_and_a_changed_cell_count_are_drift(copy_of_notebooks):
    d = copy_of_notebooks
    next(d.glob("00_*.ipynb")).unlink()
    py = next(d.glob("06_*.py"))
    py.write_text(py.read_text() + "\n# %%\nprint('one more cell')\n")
    with pytest.raises(ns.NotebookDriftError) as e:
        ns.check(d)
    assert "00_data_prep.ipynb is missing" in str(e.value)
    assert "06_human_eval.ipynb: " in str(e.value) and "cells in the .py" in str(e.value)


def test_the_runner_refuses_a_drifted_notebook_before_running_anything(copy_of_notebooks):
    d = copy_of_notebooks
    py = next(d.glob("00_*.py"))
    py.write_text(py.read_text().replace("N_SAMPLES = 16", "N_SAMPLES = 12"))
    with pytest.raises(RunError, match="00_data_prep.ipynb: cell .* differs"):
        run("ci", only="00", notebook_dir=d, log=lambda *a, **k: None)


def test_notebooks_command_check(capsys):
    assert main(["notebooks", "--check"]) == 0
    assert "every notebook matches its source" in capsys.readouterr().out


def test_a_parameter_name_means_the_same_in_every_notebook():
    """A name two notebooks share has one type, one default and one help text (the runner's -p sends it to both)."""
    import papermill

    from lverse_core.pipeline.execute import list_notebooks

    seen: dict[str, list] = {}
    for nb in list_notebooks():
        params = papermill.inspect_notebook(str(nb))
        assert params, f"{nb.name}: papermill found no parameters"
        for name, p in params.items():
            assert p["help"], f"{nb.name}: {name} has no help comment"
            seen.setdefault(name, []).append((nb.name, p["inferred_type_name"], p["default"], p["help"]))
    for name, uses in seen.items():
        assert len({u[1:] for u in uses}) == 1, f"{name} means different things: {uses}"
    assert {"PROFILE", "OVERRIDES"} <= {n for n, u in seen.items() if len(u) == len(list_notebooks())}


def test_every_overrides_example_in_the_notebooks_is_a_valid_smoke_configuration():
    """The exercises' `OVERRIDES={...}` (and `{"key": value}` alternatives) name real keys with values in range, and
    a `sl_steps`/`steps`/`baseline_steps` example never asks for less than smoke trains when it says more."""
    import ast
    import functools
    import re

    from lverse_core.config import load_profile

    smoke = load_profile("smoke")
    found = 0
    for py in ns.sources():
        for line_no, line in enumerate(py.read_text(encoding="utf-8").splitlines(), 1):
            if not line.startswith("#"):
                continue
            for m in re.finditer(r"`(?:OVERRIDES=)?(\{\"[a-z_]+(?:\.[a-z_]+)*\": [^`]*\})`", line):
                over = ast.literal_eval(m.group(1))
                found += 1
                try:
                    load_profile("smoke", **over)
                except Exception as e:  # noqa: BLE001 - the message names the example
                    raise AssertionError(f"{py.name}:{line_no}: {over} is not a valid smoke override: {e}") from e
                for key, value in over.items():
                    if re.search(r"longer|twice|more steps", line) and key.endswith("steps"):
                        now = functools.reduce(getattr, key.split("."), smoke)
                        assert value > now, f"{py.name}:{line_no}: {key} {value} is not more than smoke's {now}"
    assert found >= 15
