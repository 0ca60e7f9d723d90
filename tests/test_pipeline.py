"""The whole pipeline on the ci profile, run by the real runner (papermill), into a tmp dir."""
import json

import pytest

from lverse_core import runner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    mp = pytest.MonkeyPatch()
    mp.setenv("LVERSE_WORKDIR", str(work))
    try:
        record = runner.run("ci", log=print)
    finally:
        mp.undo()
    return work / "reports" / "ci", record


def test_every_notebook_ran(ci_run):
    root, record = ci_run
    assert [n.name for n in record.notebooks] == [p.stem for p in runner.list_notebooks()]
    manifest = json.loads((root / "manifest.json").read_text())
    assert all(n["status"] == "ok" for n in manifest["notebooks"]), manifest["notebooks"]
    for n in manifest["notebooks"]:
        assert (root / n["html"]).exists() and (root / n["executed"]).exists()
    index = (root / "index.html").read_text()
    assert all(f"html/{n['name']}.html" in index for n in manifest["notebooks"])


def test_data_prep_outputs(ci_run):
    root, _ = ci_run
    summary = json.loads((root / "results" / "data_summary.json").read_text())
    assert summary["provenance"].startswith("this run: profile ci")
    assert (root / "figures" / "data_samples.png").stat().st_size > 1000
