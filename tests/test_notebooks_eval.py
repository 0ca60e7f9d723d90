"""Notebooks 04-06 on the ci profile (they need notebooks 01 and 02's checkpoints), and their committed form."""
import json

import pytest

from lverse_core.config import REPO_ROOT

NOTEBOOKS = ("04_table2_image_to_text", "05_table3_text_to_image", "06_human_eval")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs_and_a_parameters_cell(name):
    nb = json.loads((REPO_ROOT / "notebooks" / f"{name}.ipynb").read_text())
    assert nb["cells"][0]["cell_type"] == "markdown" and "paper §4" in "".join(nb["cells"][0]["source"])
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert "parameters" in code[0]["metadata"].get("tags", [])
    assert "".join(code[0]["source"]).startswith('PROFILE = "smoke"')
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.slow
def test_notebooks_04_05_06_outputs_on_ci(ci_outputs):
    cfg = ci_outputs
    r4 = json.loads((cfg.reports_root / "results" / "table2.json").read_text())
    assert r4["n_images"] == cfg.data.n_test
    scores = [*r4["ours"].values(), *r4["baselines"].values()]
    assert all(0 <= s["BLEU-4"] <= 1 and s["SPICE"] is None for s in scores)
    r5 = json.loads((cfg.reports_root / "results" / "table3.json").read_text())
    rows = r5["rows"]
    assert "kit judge" in r5["fid_feature_space"]
    assert rows["a random real image per caption"]["fid"]["FID-0"] < 1e-3
    r6 = json.loads((cfg.reports_root / "results" / "06_human_eval.json").read_text())
    assert r6["simulated"] and r6["n_votes"] == cfg.eval.human_eval_raters * cfg.eval.human_eval_form_size
    assert r6["ci"][0] <= r6["pred_plus_both"] <= r6["ci"][1]
    assert (cfg.reports_root / "figures" / "06_figure7_human_eval.png").exists()
