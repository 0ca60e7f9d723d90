"""Notebooks 04-06 on the ci profile (they need notebooks 01 and 02's checkpoints)."""
import json



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
