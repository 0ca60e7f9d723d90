"""The claims scorecard's block in docs/claims.md, generated from a claims run (``results --claims-doc``), and the
SEEDS parameter of ``make claims``."""
import json
import os
import shlex
import subprocess

import pytest

from lverse_core import report
from lverse_core.config import REPO_ROOT, ConfigError, derive, load_profile
from lverse_core.evaluation import claims_experiment as ce
from lverse_core.hardware import describe_plan, precision_plan
from lverse_core.pipeline import cli
from lverse_core.pipeline.claims_page import claims_markdown
from lverse_core.pipeline.results_page import markers

from tests._limits import HANG_GUARD_S

NLL = "held-out NLL, both directions (nats per token)"
CLAIM_5 = "5 CLIP reranking: top-1 of N vs one sample (the profile's reranking rule)"
CLAIM_2 = "2 segment embedding vs none (per-modality positions)"


def row(claim, measure, role, method_arm, method, control, difference, low, high, verdict, *, level=0.95,
        margin=None, mde=0.1, p=0.5, needed=None, control_arm=None):
    return {"claim": claim, "measure": measure, "role": role, "method arm": method_arm,
            "control arm": control_arm or method_arm, "paper predicts": "method higher", "method": method,
            "control": control, "difference": difference, "low": low, "high": high, "level": level,
            "margin": margin, "MDE": mde, "p": p, "seeds needed": needed, "verdict": verdict, "seeds": 3,
            "items": 300, "note": ""}


SCORECARD = [
    row(CLAIM_2, NLL, "primary", "bidirectional: nll_both", 3.8291, 3.8258, 0.003346, -0.05243, 0.05912,
        "inconclusive", margin=0.02, mde=0.06953, p=0.8205, needed=12.0, control_arm="no_segment: nll_both"),
    row("2 segment embedding vs none (one position table)", "captions right", "secondary",
        "shared_positions: captions_right", None, None, None, None, None,
        "not measured: no arm shared_positions on seed 3"),
    row(CLAIM_5, "images judged right", "primary", "bidirectional: images_right", 0.2833, 0.0367, 0.2467, 0.0067,
        0.4862, "supported", level=0.975, margin=0.02, mde=0.281, p=0.0123, needed=98.0),
    row(CLAIM_5, "captions right", "secondary", "bidirectional: captions_right", 0.7433, 0.62, 0.1233, -0.007,
        0.2533, "inconclusive", mde=0.162, p=0.055),
]
MEASURES = {"3": {"bidirectional": {"parameters": 885248, "steps": 3200, "train_seconds": 1108.6, "nll_i2t": 0.3669,
                                    "nll_t2i": 3.2777, "captions_right": 0.72, "images_right": 0.34,
                                    "images_right_items": [True, False]}},
            "4": {"bidirectional": {"parameters": 885248, "steps": 3200, "train_seconds": 1387.0, "nll_i2t": 0.3634,
                                    "nll_t2i": 3.589, "captions_right": 0.64, "images_right": 0.31},
                  "sl": {"parameters": 1350483, "steps": 2800, "train_seconds": 1224.0, "psnr_db": 28.1,
                         "ssim": 0.6628, "judged_right": 0.82}}}
RUN = {"commit": "def5678", "machine": "Claims CPU, 2 cores", "cpu": {"model": "Claims CPU", "class": "avx512-bf16"},
       "torch": "8.8.8"}
DOC = "# The claims\n\nBefore, typed by hand.\n\n{begin}\nold scorecard\n{end}\n\n## Older runs\nkept as they are"


@pytest.fixture
def claims_run(workdir):
    """A fabricated claims run of profile ci: a manifest (the main run's machine) and results/07_claims.json."""
    cfg = load_profile("ci")
    root = cfg.reports_root
    root.mkdir(parents=True)
    manifest = {"profile": "ci", "started": "2026-12-01T10:00:00+0000", "commit": "abc1234",
                "machine": "Main CPU, 2 cores", "cpu": {"model": "Main CPU", "class": "avx2"},
                "precision": precision_plan(cfg), "packages": {"torch": "9.9.9"}, "python": "3.11.7",
                "notebooks": [{"name": "07_claims", "status": "ok", "seconds": 6684.2, "peak_rss_mib": 2044.4,
                               "commit": "def5678", "run_started": "2026-12-07T10:25:54+0000"}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    report.write_results(cfg, "07_claims", {
        "seeds": [3, 4], "budgets": {"ml_steps": 300, "sl_steps": 2800, "biart_steps": 3200, "eval_images": 100,
                                     "n_candidates": 32, "blur_images": 300},
        "seconds": 6667.0, "measures": MEASURES, "scorecard": SCORECARD,
        "shortfall": ["claim 2 (held-out NLL): inconclusive over 3 seeds; about 12 seeds would bring it to the margin"],
        "run": {**RUN, "precision": precision_plan(cfg)}}, headline=[])
    return cfg


def md_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| ---")]


def test_the_block_gives_the_runs_machine_each_arm_and_every_measured_row(claims_run):
    text = claims_markdown(claims_run)
    first = text.splitlines()[0]
    # the run's own record, not the manifest's (which a later run of other notebooks may have written)
    assert first.startswith("Profile `ci`, seeds 3, 4 (commit def5678; Claims CPU, 2 cores; CPU model Claims CPU; "
                            "CPU class avx512-bf16; ")
    assert describe_plan(precision_plan(claims_run)) in first and "torch 8.8.8" in first
    assert "notebook 07 6,667 s" in first and "peak memory 2,044 MiB" in first and "Main CPU" not in first
    assert "BiART 3,200 steps per arm (one-direction controls 1,600)" in text
    assert "100 test images and prompts per seed, claim 6's KIDs on 300 test images and as many generated" in text
    rows = md_rows(text)
    arms = {(r[0], r[1]): r for r in rows if r[0] in ("3", "4")}
    assert arms[("3", "bidirectional")] == ["3", "bidirectional", "3,200", "885,248", "1,109", "", "", "", "72.0%",
                                            "34.0%", "0.3669", "3.278"]
    assert arms[("4", "sl")][2:8] == ["2,800", "1,350,483", "1,224", "28.1", "0.6628", "82.0%"]
    card = {(r[0], r[1]): r for r in rows if r[2:3] in (["primary"], ["secondary"])}
    assert card[(CLAIM_2, NLL)][3:] == ["3.829", "3.826", "+0.00335 [-0.0524, 0.0591]", "0.95", "0.02", "0.0695",
                                        "0.82", "12", "inconclusive"]
    # a share: means in %, the difference, its interval, margin and MDE in points; p below 0.1: two significant digits;
    # no seeds needed beside a decided verdict (the results file has a number there)
    assert card[(CLAIM_5, "images judged right")][3:] == ["28.3%", "3.7%", "+24.7 points [0.7, 48.6]", "0.975",
                                                         "2.0 points", "28.1", "0.012", "—", "supported"]
    assert card[("5", "captions right")][5] == "+12.3 points [-0.7, 25.3]"  # the claim named once, then its number
    assert "not measured" not in "".join("".join(r) for r in rows)  # a row not measured is listed, not tabulated
    assert "Rows not measured in this run: no arm shared_positions on seed 3 (1 row: 2 captions right)" in text
    # levels 0.975 and 0.95: a results file whose Holm counted the two measured primaries (as the kit once did)
    assert "Of the 2 primary measures of this run (one per claim; Holm over the 2 measured) over 3 seeds: 1 " \
           "inconclusive, 1 supported." in text
    assert "- claim 2 (held-out NLL): inconclusive over 3 seeds; about 12 seeds would bring it to the margin" in text


def test_an_older_results_file_takes_the_machine_from_the_manifest_only_when_notebook_07_wrote_it(claims_run):
    path = claims_run.reports_root / "results" / "07_claims.json"
    data = json.loads(path.read_text())
    del data["run"]
    path.write_text(json.dumps(data))
    first = claims_markdown(claims_run).splitlines()[0]
    assert "commit def5678; Main CPU, 2 cores; CPU model Main CPU; CPU class avx2" in first  # 07's own run wrote it
    manifest_path = claims_run.reports_root / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["notebooks"][0]["from_earlier_run"] = True  # a later run of other notebooks wrote the manifest
    manifest_path.write_text(json.dumps(manifest))
    first = claims_markdown(claims_run).splitlines()[0]
    assert "machine not recorded" in first and "Main CPU" not in first and "precision not recorded" in first


def test_the_doc_block_is_refreshed_and_nothing_else_changes(claims_run, tmp_path, capsys):
    begin, end = markers("ci", "claims")
    doc = tmp_path / "claims.md"
    doc.write_text(DOC.format(begin=begin, end=end))
    os.chmod(doc, 0o640)
    before = doc.read_text()
    assert cli.main(["results", "--profile", "ci", "--claims-doc", str(doc)]) == 0
    assert capsys.readouterr().out.split() == [str(claims_run.reports_root / "RESULTS.md"), str(doc)]
    after = doc.read_text()
    assert after.startswith(before.split(begin)[0] + begin) and after.endswith(end + before.split(end)[1])
    block = after.split(begin)[1].split(end)[0]
    assert "old scorecard" not in block and block.strip() == claims_markdown(claims_run).strip()
    assert doc.stat().st_mode & 0o777 == 0o640
    assert cli.main(["results", "--profile", "ci", "--claims-doc", str(doc)]) == 0
    assert doc.read_text() == after  # a second refresh changes nothing


@pytest.mark.parametrize("case, why", [
    ("no markers", "appears 0 times"),
    ("results markers", "claims:ci begin --> appears 0 times"),
    ("no claims run", "make claims PROFILE=ci"),
    ("unreadable results", "07_claims.json is unreadable"),
])
def test_a_bad_doc_or_no_claims_run_is_refused_before_anything_is_written(claims_run, tmp_path, capsys, case, why):
    doc = tmp_path / "claims.md"
    begin, end = markers("ci", "results" if case == "results markers" else "claims")
    doc.write_text("no markers at all\n" if case == "no markers" else DOC.format(begin=begin, end=end))
    results = claims_run.reports_root / "results" / "07_claims.json"
    if case == "no claims run":
        results.unlink()
    elif case == "unreadable results":
        results.write_text('{"seeds": [3, ')
    before, mtime = doc.read_bytes(), doc.stat().st_mtime_ns
    assert cli.main(["results", "--profile", "ci", "--claims-doc", str(doc)]) == 1
    err = capsys.readouterr().err
    assert why in err
    assert doc.read_bytes() == before and doc.stat().st_mtime_ns == mtime
    assert not (claims_run.reports_root / "RESULTS.md").exists()  # RESULTS.md neither


def test_the_docs_carry_the_block_for_smoke():
    """docs/claims.md has the markers `make results CLAIMS_DOC=1` refreshes, once each."""
    text = (REPO_ROOT / "docs" / "claims.md").read_text()
    begin, end = markers("smoke", "claims")
    assert text.count(begin) == 1 and text.count(end) == 1 and text.index(begin) < text.index(end)


def test_seeds_parameter_is_read_validated_and_reaches_the_notebook():
    assert ce.parse_seeds("3 4 5") == ce.parse_seeds("3,4,5") == ce.parse_seeds([3, 4, 5]) == [3, 4, 5]
    assert ce.parse_seeds("") == [] and ce.parse_seeds(None) == [] and ce.parse_seeds(7) == [7]
    for bad, why in (("3 four", "'four' is not a seed"), ("1.5", "'1.5' is not a seed"), (True, "give seeds"),
                     ({"a": 1}, "got a dict")):
        with pytest.raises(ConfigError, match=why):
            ce.parse_seeds(bad)
    cfg = load_profile("ci")
    assert derive(cfg, **{"claims.seeds": ce.parse_seeds("3 4 5")}).claims.seeds == [3, 4, 5]
    for bad in ("3 3", "-1 2"):  # the config's own checks: distinct, not negative
        with pytest.raises(ConfigError, match="claims.seeds"):
            derive(cfg, **{"claims.seeds": ce.parse_seeds(bad)})
    out = subprocess.run(["make", "-n", "claims", "SEEDS=3 4 5", "CLAIMS=6"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=HANG_GUARD_S, check=True).stdout.splitlines()
    words = shlex.split(next(line for line in out if "--only 07" in line))
    assert words[words.index("SEEDS") - 1: words.index("SEEDS") + 2] == ["-p", "SEEDS", "3 4 5"]
    assert ce.parse_seeds(cli.coerce("3 4 5")) == [3, 4, 5] and ce.parse_seeds(cli.coerce("3")) == [3]


def test_notebook_07s_parameters_change_the_config_they_name_and_nothing_else():
    cfg = load_profile("ci")
    assert ce.with_parameters(cfg) is cfg
    got = ce.with_parameters(cfg, "6 4", True, "3 4 5")
    assert got.claims.seeds == [3, 4, 5] and got.claims.only == [6, 4] and got.claims.primaries_only is True
    assert got.to_dict()["biart_train"] == cfg.to_dict()["biart_train"] and got.runs_root == cfg.runs_root
    two = ce.with_parameters(cfg, seeds="2")
    assert two.claims.seeds == [2] and two.claims.only == []
    with pytest.raises(ConfigError, match="PRIMARIES_ONLY='yes'"):
        ce.with_parameters(cfg, primaries_only="yes")
    with pytest.raises(ConfigError, match="claims.only"):
        ce.with_parameters(cfg, claims="7")
    with pytest.raises(ConfigError, match="claims.seeds"):
        ce.with_parameters(cfg, seeds="1 1")


@pytest.mark.parametrize("used, shown", [
    ((300, 300), "claim 6's KIDs on 300 test images and as many generated,"),
    ((250, 250), "claim 6's KIDs on 250 test images and as many generated (`claims.blur_images` 300: the test split "
                 "has fewer),"),
    ((250, None), "claim 6's KIDs on 250 test images and as many generated (`claims.blur_images` 300: the test "
                  "split has fewer),"),
])
def test_the_budget_line_gives_the_image_count_claim_6_used(claims_run, used, shown):
    """The configured count is what the KIDs compared unless the test split was smaller; then the count used is
    shown, with the setting beside it. A seed without the record (an older measures file) is left out."""
    path = claims_run.reports_root / "results" / "07_claims.json"
    data = json.loads(path.read_text())
    for seed, n in zip(("3", "4"), used):
        if n is not None:
            data["measures"][seed]["bidirectional"]["kid_images"] = n
    path.write_text(json.dumps(data))
    text = claims_markdown(claims_run)
    assert shown in text
    assert text.count("claim 6's KIDs") == 1


def test_a_hand_edited_results_file_is_shown_as_it_can_be(claims_run):
    path = claims_run.reports_root / "results" / "07_claims.json"
    data = json.loads(path.read_text())
    data.update(seeds="three", budgets={"ml_steps": "300", "sl_steps": 2800, "biart_steps": 3200.0},
                measures={"3": {"bidirectional": "broken", "sl": {"psnr_db": "28"}}},
                scorecard=[*SCORECARD, "not a row", {"claim": "9 odd", "difference": "x"}], shortfall=[1, "kept"])
    data["run"]["cpu"] = "no mapping"
    path.write_text(json.dumps(data))
    text = claims_markdown(claims_run)
    assert text.startswith("Profile `ci`, seeds ? (commit def5678; Claims CPU, 2 cores; CPU model ?; CPU class ?; ")
    assert "Budgets: BiART 3,200 steps per arm" in text and "AugVAE" not in text.split("\n\n")[1]
    assert "| 3 | bidirectional |" in text and "| 3 | sl |" in text  # their values blank, the rows kept
    assert "- kept" in text and "- 1" not in text
    assert "no value (1 row: 9 ?)" in text  # listed among the rows not measured, not tabulated


def test_the_sentence_names_the_holm_family_the_run_used():
    from lverse_core.pipeline.claims_page import _sentence

    six = [dict(r, level=level) for r, level in zip(SCORECARD, (1 - 0.05 / 5, 0.95, 1 - 0.05 / 6, 0.95))]
    assert "(one per claim; Holm over the six declared, a claim not run counting as not rejected)" in _sentence(six)
    assert "(one per claim; Holm over the 2 measured)" in _sentence(SCORECARD)
    assert "Holm-corrected" in _sentence([dict(r, level="?") for r in SCORECARD])  # a hand-edited file
