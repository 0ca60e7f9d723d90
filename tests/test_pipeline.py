"""The whole pipeline on the ci profile, run by the real runner (papermill), into a tmp dir."""
import json
import math
import os

import pytest

from lverse_core.pipeline import execute
from ._limits import HANG_GUARD_S
from ._notebooks import printed
from tests._figures import assert_figure_shows



@pytest.fixture
def ci_run(ci_pipeline):
    work, manifest = ci_pipeline
    return work / "reports" / "ci", manifest


def test_every_notebook_ran(ci_run):
    root, manifest = ci_run
    assert [n["name"] for n in manifest["notebooks"]] == [p.stem for p in execute.list_notebooks()
                                                          if p.name[:2] not in execute.OPT_IN]
    assert execute.OPT_IN == ("07",)  # the claims notebook runs only when asked for (make claims)
    assert all(n["status"] == "ok" for n in manifest["notebooks"]), manifest["notebooks"]
    for n in manifest["notebooks"]:
        assert (root / n["html"]).exists() and (root / n["executed"]).exists()
    index = (root / "index.html").read_text()
    assert all(f"html/{n['name']}.html" in index for n in manifest["notebooks"])
    # the precision the machine chose is recorded and shown beside the headline numbers
    from lverse_core.config import load_profile
    from lverse_core.hardware import describe_plan, precision_plan

    assert manifest["precision"] == precision_plan(load_profile("ci"))
    assert manifest["precision"]["augvae"] in ("fp32", "bf16") and manifest["cpu"]["class"]
    assert f"computed in {describe_plan(manifest['precision'])}" in index


def test_every_notebooks_results_record_what_they_were_made_from_and_nothing_is_stale(ci_run, ci_outputs):
    from lverse_core.pipeline import artefact_ids

    root, _ = ci_run
    expected = {"data_summary": {"data set", "tokenizer"}, "augvae_training": {"augvae_ml", "augvae_sl"},
                "02_biart": {"biart", "codes train", "clip_reranker"}, "table1_reconstruction": {"augvae_sl", "judge"},
                "table2": {"biart", "augvae_sl"}, "table3": {"biart", "clip_reranker"},
                "06_human_eval": {"biart", "augvae_sl"}}
    for name, inputs in expected.items():
        made = json.loads((root / "results" / f"{name}.json").read_text())["made_from"]
        assert inputs <= set(made), name
        assert made == artefact_ids.ids(ci_outputs, made), name  # the run's current artefacts, all present
        assert "missing" not in {v for k, v in made.items() if k != "augvae_control"}, name
    assert "stale" not in (root / "index.html").read_text()


def test_every_figure_of_the_run_shows_something(ci_run):
    root, _ = ci_run
    figures = sorted((root / "figures").glob("*.png"))
    assert len(figures) >= 15, [f.name for f in figures]
    for path in figures:
        assert_figure_shows(path)


def test_data_prep_outputs(ci_run):
    root, _ = ci_run
    summary = json.loads((root / "results" / "data_summary.json").read_text())
    assert summary["provenance"].startswith("this run: profile ci")
    assert_figure_shows(root / "figures" / "data_samples.png")


def test_notebook_00_writes_the_tokenizer_the_later_notebooks_read(ci_run, ci_pipeline):
    from lverse_core.data.tokenizer import TextTokenizer

    root, _ = ci_run
    executed = json.loads((root / "executed" / "00_data_prep.ipynb").read_text())
    assert any("saved to runs/ci/tokenizer.json\n" in text for text in printed(executed))
    tok = TextTokenizer.load(ci_pipeline[0] / "runs" / "ci" / "tokenizer.json")
    logs = ci_pipeline[0] / "runs" / "ci" / "logs"  # every training log has its elapsed seconds
    for name in ("augvae_ml", "augvae_sl", "biart", "clip_reranker", "judge"):
        assert (logs / f"{name}.csv").read_text().splitlines()[0].endswith(",elapsed_s"), name
    assert tok.text_len == 24  # the ci profile's biart.text_len


def test_table2_outputs(ci_run):
    from lverse_core.evaluation.metrics import read_caption_results, read_coco_references

    root, _ = ci_run
    t2 = json.loads((root / "results" / "table2.json").read_text())
    assert set(t2["ours"]) == {"L-Verse kit (cut at the first full stop)", "*L-Verse kit (untruncated)"}
    assert set(t2["baselines"]) == {"most frequent training caption", "random training caption"}
    for s in [*t2["ours"].values(), *t2["baselines"].values()]:
        assert s["n_images"] == t2["n_images"] > 0 and 0 <= s["METEOR"] <= 1 and s["CIDEr"] >= 0
        assert s["SPICE"] is None and s["SPICE_reason"].startswith("not computed")
        assert 0 <= s["attribute_accuracy"] <= 1
    refs = read_coco_references(t2["caption_files"].pop("references"))
    for name, path in t2["caption_files"].items():  # COCO caption-results files, one per caption set
        assert set(read_caption_results(path)) == set(refs), name
    assert t2["acceptance_5x_most_frequent"]["factor"] == 5
    assert_figure_shows(root / "figures" / "figure6_image_to_text.png")
    assert (root / "tables" / "table2_image_to_text.csv").exists()


def test_table3_outputs(ci_run):
    from lverse_core.config import load_profile
    from lverse_core.evaluation.fid import fid_label
    from lverse_core.evaluation.verdicts import FLOOR, GENERATED, JUDGE_CEILING

    root, _ = ci_run
    t3 = json.loads((root / "results" / "table3.json").read_text())
    assert set(t3["fid"]) == {f"FID-{k:g}" for k in load_profile("ci").eval.blur_radii}
    assert all(v >= -1e-6 for v in t3["fid"].values()) and t3["fid_feature_space"] == fid_label(load_profile("ci"))
    assert set(t3["judge"]) == {GENERATED, JUDGE_CEILING, FLOOR,
                                "AugVAE-SL reconstructions of the real images (decoder ceiling)"}
    assert all(0 <= j["judged_correct"] <= 1 and j["n_images"] == t3["n_prompts"] for j in t3["judge"].values())
    assert t3["acceptance_2x_floor"]["factor"] == 2
    for fig in ("table3_fid_vs_blur", "figure8_text_to_image_samples"):
        assert_figure_shows(root / "figures" / f"{fig}.png")


def test_every_notebook_declares_its_headline_numbers_and_both_pages_show_them(ci_run):
    import html

    from lverse_core.evaluation.verdicts import GENERATED
    from lverse_core.pipeline.headlines import format_headline

    root, _ = ci_run
    index, text = (root / "index.html").read_text(), (root / "RESULTS.md").read_text()
    assert "not shown:" not in index and "**not shown**" not in text and "**unreadable**" not in text
    for f in sorted((root / "results").glob("*.json")):
        for h in json.loads(f.read_text())["headline"]:
            line = format_headline(h)
            assert f"<li>{html.escape(line)}</li>" in index and f"\n- {line}\n" in text, line
    t1 = json.loads((root / "results" / "table1_reconstruction.json").read_text())
    sl = next(h for h in t1["headline"] if h["label"].startswith("AugVAE-SL PSNR"))
    assert sl["value"] == t1["models"]["AugVAE-SL"]["psnr_db"] and sl["unit"] == "dB"
    t3 = json.loads((root / "results" / "table3.json").read_text())
    gen = next(h for h in t3["headline"] if h["label"].startswith(GENERATED))
    assert gen["value"] == pytest.approx(100 * t3["judge"][GENERATED]["judged_correct"])
    assert gen["interval"] == pytest.approx([100 * x for x in t3["judge"][GENERATED]["ci95"]])


def test_table1_evaluates_the_whole_split_by_default(ci_run):
    root, _ = ci_run
    n_eval = json.loads((root / "results" / "table1_reconstruction.json").read_text())["n_eval"]
    splits = json.loads((root / "results" / "data_summary.json").read_text())["splits"]
    assert n_eval == splits["test"]["images"] > 0


def test_table1_refuses_n_eval_beyond_the_split_before_any_work(ci_pipeline, tmp_path, monkeypatch):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from lverse_core.config import REPO_ROOT

    monkeypatch.setenv("LVERSE_WORKDIR", str(ci_pipeline[0]))
    with pytest.raises(PapermillExecutionError, match="N_EVAL = 1000, but the test split holds"):
        papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "03_table1_reconstruction.ipynb"),
                                   str(tmp_path / "03.ipynb"), parameters={"PROFILE": "ci", "N_EVAL": 1000},
                                   kernel_name="python3", cwd=str(REPO_ROOT), progress_bar=False)


def test_look_inside_cells_ran_and_wrote_their_figures_and_tables(ci_run):
    root, _ = ci_run
    for fig in ("01_code_maps_one_image", "01_shared_code_matrix", "02_image_candidates_one_caption",
                "02_biart_gap_maps"):
        assert_figure_shows(root / "figures" / f"{fig}.png")
    for table in ("01_shared_code_matrix", "01_ml_to_sl_surgery", "02_sequence_layout_t2i", "02_sequence_layout_i2t",
                  "02_caption_candidates_one_image"):
        assert (root / "tables" / f"{table}.csv").exists(), table
    page = (root / "html" / "02_train_biart.html").read_text()
    assert "trained as [REF]" in page and "candidates scored" in page
    gap = json.loads((root / "results" / "02_biart.json").read_text())["conditioning_gap"]
    assert {"all", "per_image_total", "object", "background"} <= set(gap["by_region"])
    region = gap["by_region"]
    assert {gap["image"]["verdict"], gap["text"]["verdict"]} <= {"used", "barely", "none"}
    for part in ("object", "background"):  # the sentence reads each region's mean and interval
        m, (lo, hi) = region[part]["mean"], region[part]["ci95"]
        assert f"{m:.3f} [{lo:.3f}, {hi:.3f}]" in gap["sentence"], part
    assert f"{100 * region['object_cell_share']:.0f}%" in gap["sentence"]


def test_pages_have_no_progress_bars_and_no_local_paths(ci_run, ci_pipeline):
    import re

    from lverse_core.config import REPO_ROOT

    root, _ = ci_run
    work = str(ci_pipeline[0])
    pages = [root / "index.html", *sorted((root / "html").glob("*.html"))]
    assert len(pages) >= 8
    for page in pages:
        text = page.read_text()
        assert not re.search(r"\d+%\|[^|]*\| \d+/\d+ \[", text), f"{page.name} holds tqdm progress lines"
        for local in (work, str(REPO_ROOT), "site-packages/"):
            assert local not in text, f"{page.name} shows the local path {local}"


def test_claims_notebook_scores_every_claim_over_seeds(ci_pipeline, monkeypatch):
    """Notebook 07 through papermill on the ci profile (its own tiny budgets, two seeds), after the main run."""
    from lverse_core.config import load_profile
    from lverse_core.evaluation.claims import NOT_MEASURED, VERDICTS
    from lverse_core.evaluation.claims_experiment import CLAIM_ROWS

    from .conftest import offline_env

    work, _ = ci_pipeline
    monkeypatch.setenv("LVERSE_WORKDIR", str(work))
    for key, value in offline_env({"PYTHONPATH": os.environ.get("PYTHONPATH", "")}).items():
        monkeypatch.setenv(key, value)
    seeds = load_profile("ci").claims.seeds
    # SEEDS as make claims passes it (a string); the profile's own seeds, so the run costs no more
    record = execute.run("ci", only="07", params={"SEEDS": " ".join(map(str, seeds))}, log=print)
    assert [n.name for n in record.notebooks] == ["07_claims"]
    root = work / "reports" / "ci"
    res = json.loads((root / "results" / "07_claims.json").read_text())
    assert res["seeds"] == seeds and set(res["measures"]) == {str(s) for s in seeds}
    assert res["budgets"]["blur_images"] == load_profile("ci").claims.blur_images
    card = res["scorecard"]
    pairs = [f"{m[0]}: {m[1]} | {c[0]}: {c[1]}" for _, _, m, c, _ in CLAIM_ROWS]
    assert [r["measure"] for r in card if f"{r['method arm']} | {r['control arm']}" in pairs] == [
        r[1] for r in CLAIM_ROWS]  # every row of the experiment, in its order (and the scorecard's derived rows)
    assert {r["claim"][0] for r in card} == set("123456")  # all six claims
    assert sorted(r["claim"][0] for r in card if r["role"] == "primary") == list("123456")  # one primary each
    for r in card:
        assert r["seeds"] == len(seeds)
        if not r["verdict"].startswith(NOT_MEASURED):  # an unbounded end is null in JSON
            low, high = (-math.inf if r["low"] is None else r["low"]), (math.inf if r["high"] is None else r["high"])
            assert r["verdict"] in VERDICTS and low <= r["difference"] <= high and high > low
    assert_figure_shows(root / "figures" / "07_claims_intervals.png")
    assert_figure_shows(root / "figures" / "07_claims_blur_kid.png")
    # per-item measures: one value per test item, the same items in every arm of a seed
    n_items = load_profile("ci").claims.eval_images
    for by_arm in res["measures"].values():
        for key in ("psnr_db", "judged_right", "captions_right", "captions_right_single", "images_right",
                    "images_right_single", "bleu4_truncated", "cider_untruncated", "nll_i2t", "nll_t2i"):
            lists = [m[f"{key}_items"] for m in by_arm.values() if isinstance(m.get(f"{key}_items"), list)]
            assert lists and {len(v) for v in lists} == {n_items}, key
        assert by_arm["t2i_only"].get("nll_i2t_why") and "nll_i2t_items" not in by_arm["t2i_only"]
        # claim 6's KIDs on more items than the other measures: the further prompts were drawn too
        assert by_arm["bidirectional"]["kid_images"] == load_profile("ci").claims.blur_images > n_items
        for m in by_arm.values():
            assert m["parameters"] > 0 and m["steps"] > 0
    manifest = json.loads((root / "manifest.json").read_text())
    assert {n["name"] for n in manifest["notebooks"]} >= {"00_data_prep", "06_human_eval", "07_claims"}
    # the run's own record of where it ran, and the docs' block written from this run
    from lverse_core.hardware import cpu_class, precision_plan
    from lverse_core.pipeline.claims_page import claims_markdown
    assert res["run"]["cpu"]["class"] == cpu_class() and res["run"]["precision"] == precision_plan(load_profile("ci"))
    block = claims_markdown(load_profile("ci"))
    assert block.startswith(f"Profile `ci`, seeds {', '.join(map(str, seeds))} (commit {res['run']['commit']}; ")
    for r in card:
        if r["role"] == "primary" and not r["verdict"].startswith(NOT_MEASURED):
            assert f"| {r['claim']} | {r['measure']} | primary |" in block or f"| {r['claim'].split()[0]} | " \
                f"{r['measure']} | primary |" in block


def test_rerank_analysis_judges_every_candidate_of_a_finished_run(ci_pipeline, tmp_path):
    """bench/rerank_analysis.py on the ci run: no rule keeps a right image more often than the candidates hold one,
    and more candidates never hold fewer."""
    import subprocess
    import sys

    from lverse_core.config import REPO_ROOT

    work, _ = ci_pipeline
    out = tmp_path / "rerank.json"
    env = {**os.environ, "LVERSE_WORKDIR": str(work)}
    subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "rerank_analysis.py"), "--profile", "ci",
                    "--candidates", "9", "--out", str(out)], env=env, check=True, capture_output=True, text=True,
                   timeout=HANG_GUARD_S)
    res = json.loads(out.read_text())
    by_k = res["by k"]
    assert sorted(map(int, by_k)) == [1, 8, 9] and res["candidates"] == 9
    assert 0 <= res["one sample right"]["all"] <= by_k["9"]["oracle"]["all"] <= 1
    assert by_k["1"]["oracle"]["all"] <= by_k["8"]["oracle"]["all"] <= by_k["9"]["oracle"]["all"]
    for k, entry in by_k.items():
        for rule in ("clip-score (paper)", "BiART log-likelihood", "z(clip) + 1 z(ll)", "z(clip) + 3 z(ll)"):
            assert entry[rule]["all"] <= entry["oracle"]["all"], (k, rule)
        if k == "1":  # one candidate: every rule keeps it
            assert len({entry[r]["all"] for r in entry}) == 1
