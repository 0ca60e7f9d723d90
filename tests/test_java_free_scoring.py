"""Caption scoring without Java (``eval.meteor: false`` with the nlg-eval pipeline, the gpu profile's setting):
no Java process is started, METEOR is None with its reason, the other metrics are those of a Java-enabled run."""
from __future__ import annotations

import subprocess

import pytest

from lverse_core.config import load_profile
from lverse_core.evaluation.metrics import score_caption_sets
from lverse_core.pipeline.eval_tables import table2

REFS = {1: ["a red circle.", "a red circle left of nothing.", "one red circle.", "red circle.", "a circle."],
        2: ["a blue square.", "a blue square alone.", "one blue square.", "blue square.", "a square."]}
PREDS = {"ours": {1: "a red circle.", 2: "a green square."}}


def test_java_free_scoring_starts_no_java_and_says_why_meteor_is_missing(monkeypatch):
    cfg = load_profile("ci", **{"eval.caption_metrics": "nlg-eval", "eval.meteor": False})
    real = subprocess.Popen

    def no_java(args, *a, **k):
        assert "java" not in str(args[0] if isinstance(args, (list, tuple)) else args), args
        return real(args, *a, **k)
    monkeypatch.setattr(subprocess, "Popen", no_java)
    out = score_caption_sets(PREDS, REFS, cfg)["ours"]
    assert out["METEOR"] is None and "eval.meteor is false" in out["METEOR_reason"]
    assert 0 < out["BLEU-1"] <= 1 and out["CIDEr"] > 0 and out["tool"] == "nlg-eval"
    row = table2(cfg, {"ours": {**out, "n_images": 2}}).iloc[-1]
    assert "METEOR not computed" in row["note"]


def test_the_gpu_profile_scores_captions_without_java():
    cfg = load_profile("gpu")
    assert cfg.eval.caption_metrics == "nlg-eval" and cfg.eval.meteor is False


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v java"], capture_output=True).returncode != 0,
                    reason="needs Java for the METEOR side of the comparison")
def test_the_other_metrics_match_a_run_with_meteor():
    with_java = score_caption_sets(PREDS, REFS, load_profile("ci", **{"eval.caption_metrics": "nlg-eval"}))["ours"]
    without = score_caption_sets(PREDS, REFS, load_profile("ci", **{"eval.caption_metrics": "nlg-eval",
                                                                    "eval.meteor": False}))["ours"]
    assert with_java["METEOR"] is not None
    for k in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert with_java[k] == without[k], k
