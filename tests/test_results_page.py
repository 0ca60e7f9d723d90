"""RESULTS.md and README's results block, generated from a report folder; the headline numbers the notebooks declare."""
import json
import os

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lverse_core import report
from lverse_core.config import load_profile
from lverse_core.hardware import describe_plan, precision_plan
from lverse_core.pipeline import cli, execute, headlines, index_page
from lverse_core.pipeline.results_page import ResultsError, markers, replace_block

from tests._notebooks import make_notebook


def md_rows(text: str) -> dict[str, list[str]]:
    """{first cell: the other cells} of every Markdown table row in ``text``."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


def headline_lines(text: str) -> list[str]:
    section = text.split("## Headline numbers", 1)[1].split("\n## ", 1)[0]
    return [line[2:] for line in section.splitlines() if line.startswith("- ")]


@pytest.fixture
def reports(workdir):
    """A fabricated report of profile ci: a manifest, two results files with declared headlines, Table 1 with a row
    copied from the paper, and a look-inside table."""
    cfg = load_profile("ci")
    root = cfg.reports_root
    root.mkdir(parents=True)
    manifest = {"profile": "ci", "started": "2026-12-01T10:00:00+0000", "commit": "abc1234",
                "machine": "Test CPU, 2 cores",
                "cpu": {"model": "Test CPU", "class": "avx2"}, "precision": precision_plan(cfg),
                "packages": {"torch": "9.9.9"}, "python": "3.11.7", "total_seconds": 812.4, "peak_rss_mib": 1657.4,
                "notebooks": [
                    {"name": "03_table1_reconstruction", "status": "ok", "seconds": 125.25, "peak_rss_mib": 900.2,
                     "outputs": ["results/table1_reconstruction.json", "tables/table1_reconstruction.csv"]},
                    {"name": "05_table3_text_to_image", "status": "ok", "seconds": 60.0, "peak_rss_mib": 1200.0,
                     "outputs": ["results/table3.json"]},
                    {"name": "04_table2_image_to_text", "status": "failed", "seconds": 3.5, "peak_rss_mib": 400.0,
                     "outputs": ["results/table2.json"]}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    report.write_results(cfg, "table1_reconstruction", {"n_eval": 300}, headline=[
        report.headline_number("AugVAE-SL PSNR on 300 test images", 28.2508, unit="dB")])
    report.write_results(cfg, "table3", {"n_prompts": 200}, headline=[
        report.headline_number("generated images judged right", 0.05, (0.025, 0.085), unit="%", scale=100),
        report.headline_number("FID-0", 0.0301, digits=3)])
    report.save_table(cfg, "table1_reconstruction", pd.DataFrame({
        "model": ["AugVAE-SL", "AugVAE-SL"], "rFID": [3.28, None], "PSNR dB": [None, 28.25080815633138],
        "source": ["L-Verse paper Table 1", "this run: profile ci"]}), caption="Table 1. Reconstruction",
        verdict="SL beats the control by 1.2 dB")
    report.save_table(cfg, "02_sequence_layout_i2t", pd.DataFrame({"position": [0], "token": ["[BOS]"]}))
    return cfg


def test_results_page_gives_the_runs_provenance_headlines_and_tables(reports, capsys):
    assert cli.main(["results", "--profile", "ci"]) == 0
    path = reports.reports_root / "RESULTS.md"
    assert capsys.readouterr().out.strip() == str(path)
    text = path.read_text()
    rows = md_rows(text)
    assert rows["commit"] == ["abc1234"] and rows["CPU model"] == ["Test CPU"] and rows["CPU class"] == ["avx2"]
    assert rows["torch"] == ["9.9.9"] and rows["wall time of the run (s)"] == ["812"]
    assert rows["peak memory (MiB)"] == ["1657"]
    assert rows["precision"] == [describe_plan(precision_plan(reports))]
    assert rows["03_table1_reconstruction"] == ["ok", "125.2", "900"]
    assert rows["04_table2_image_to_text"] == ["failed", "3.5", "400"]
    # in notebook order (03 before 05), as declared
    assert headline_lines(text) == ["AugVAE-SL PSNR on 300 test images: 28.3 dB",
                                    "generated images judged right: 5.0% [2.5, 8.5]", "FID-0: 0.030"]
    # the paper's row labelled as the paper's, ours as this run's, numbers at their precision
    table = [line for line in text.splitlines() if line.startswith("| AugVAE-SL")]
    assert table == ["| AugVAE-SL | 3.28 | — | L-Verse paper Table 1 |", "| AugVAE-SL | — | 28.25 | this run: profile ci |"]
    assert "### Table 1. Reconstruction (`tables/table1_reconstruction.csv`)" in text
    assert "*SL beats the control by 1.2 dB*" in text
    assert "| [BOS] |" not in text and "02_sequence_layout_i2t" in text  # a look-inside table is listed, not shown


def test_a_run_writes_results_md_and_a_declared_headline_reaches_both_pages(workdir):
    """Round trip: a notebook declares its headline through report.write_results; the runner's index.html and
    RESULTS.md show the number as declared, with its interval."""
    books = workdir / "nbs"
    books.mkdir()
    make_notebook(books / "00_measure.ipynb", [
        "from lverse_core.config import load_profile\nfrom lverse_core import report\ncfg = load_profile(PROFILE)\n"
        "report.write_results(cfg, 'toy', {'score': 0.4321}, headline=[report.headline_number("
        "'toy score on 7 items', 0.4321, (0.25, 0.5), unit='%', scale=100, digits=2)])"])
    execute.run("ci", notebook_dir=books, log=lambda *a, **k: None, estimate=False)
    root = load_profile("ci").reports_root
    assert json.loads((root / "results" / "toy.json").read_text())[report.HEADLINE_KEY][0]["value"] == 43.21
    line = "toy score on 7 items: 43.21% [25.00, 50.00]"
    assert f"<li>{line}</li>" in (root / "index.html").read_text()
    text = (root / "RESULTS.md").read_text()
    assert headline_lines(text) == [line]
    assert md_rows(text)["00_measure"][0] == "ok"


def test_damaged_and_undeclared_results_are_marked_and_the_rest_written(reports):
    root = reports.reports_root
    (root / "results" / "table3.json").write_text('{"headline": [{"label": "gen')  # cut short
    (root / "results" / "table2.json").write_text(json.dumps({"n_images": 10}))  # an older run: no headline
    (root / "results" / "table9.json").write_text(json.dumps({"headline": [{"label": "x", "value": "high"}]}))
    (root / "tables" / "table3_judge.csv").write_bytes(b"\xff\x00\x01")
    (root / "tables" / "table1_reconstruction.csv").write_bytes(b"\xff\x00\x01")
    assert cli.main(["results", "--profile", "ci"]) == 0
    text = (root / "RESULTS.md").read_text()
    heads = headline_lines(text)
    assert "AugVAE-SL PSNR on 300 test images: 28.3 dB" in heads  # the readable file still gives its headline
    assert "**not shown**: results/table3.json is unreadable (JSONDecodeError); rerun notebook 05 " \
           "(05_table3_text_to_image)" in heads
    assert "**not shown**: results/table2.json: no headline declared; rerun notebook 04 (04_table2_image_to_text)" \
        in heads
    assert any(h.startswith("**not shown**: results/table9.json holds a headline of the wrong kind") and
               h.endswith("rerun the notebook that writes results/table9.json") for h in heads)
    assert "**unreadable**: tables/table1_reconstruction.csv (UnicodeDecodeError); rerun notebook 03 " \
           "(03_table1_reconstruction)" in text
    assert "**unreadable**: tables/table3_judge.csv (UnicodeDecodeError); rerun the notebook that writes " \
           "tables/table3_judge.csv" in text
    assert md_rows(text)["commit"] == ["abc1234"]  # the rest is written
    page = index_page.write_index(reports).read_text()  # the index says the same
    assert "not shown: results/table2.json: no headline declared; rerun notebook 04" in page


def test_no_report_or_no_manifest_is_a_clear_error(workdir, capsys):
    assert cli.main(["results", "--profile", "ci"]) == 1
    err = capsys.readouterr().err
    assert "reports/ci does not exist" in err and "python -m lverse_core run --profile ci" in err
    root = load_profile("ci").reports_root
    (root / "results").mkdir(parents=True)
    assert cli.main(["results", "--profile", "ci"]) == 1
    err = capsys.readouterr().err
    assert "manifest.json is missing" in err and "python -m lverse_core run --profile ci" in err
    (root / "manifest.json").write_text("[1, 2")
    assert cli.main(["results", "--profile", "ci"]) == 1
    assert "manifest.json is unreadable" in capsys.readouterr().err
    assert not (root / "RESULTS.md").exists()


README_TEXT = ("# Kit\r\n\nIntro with ünïcode and trailing spaces   \n\n{begin}\nold numbers 1.0\n{end}\n\n"
               "## After\nmore text, no final newline")


def test_readme_block_is_refreshed_and_nothing_else_changes(reports, tmp_path, monkeypatch):
    begin, end = markers("ci")
    readme = tmp_path / "README.md"
    readme.write_bytes(README_TEXT.format(begin=begin, end=end).encode())
    os.chmod(readme, 0o640)
    before = readme.read_bytes()
    monkeypatch.setattr(cli, "README", readme)
    assert cli.main(["results", "--profile", "ci", "--readme"]) == 0
    after = readme.read_bytes()
    head, tail = before.split(begin.encode())[0], before.split(end.encode())[1]
    assert after.startswith(head + begin.encode()) and after.endswith(end.encode() + tail)  # byte-identical outside
    block = after.decode().split(begin)[1].split(end)[0]
    assert "old numbers" not in block and "commit abc1234" in block and "torch 9.9.9" in block
    assert "- AugVAE-SL PSNR on 300 test images: 28.3 dB" in block.splitlines()
    assert readme.stat().st_mode & 0o777 == 0o640
    assert cli.main(["results", "--profile", "ci", "--readme"]) == 0
    assert readme.read_bytes() == after  # a second refresh changes nothing
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("text, why", [
    ("no markers at all\n", "appears 0 times"),
    ("{begin}\nx\n{end}\n{begin}\ny\n{end}\n", "appears 2 times"),
    ("{begin}\nx\n", "results:ci end --> appears 0 times"),
    ("{end}\nx\n{begin}\n", "comes before"),
])
def test_readme_without_its_markers_once_is_refused_and_untouched(reports, tmp_path, monkeypatch, capsys, text, why):
    begin, end = markers("ci")
    readme = tmp_path / "README.md"
    readme.write_text(text.format(begin=begin, end=end))
    before, mtime = readme.read_bytes(), readme.stat().st_mtime_ns
    monkeypatch.setattr(cli, "README", readme)
    assert cli.main(["results", "--profile", "ci", "--readme"]) == 1
    err = capsys.readouterr().err
    assert why in err and "README.md" in err and "nothing was changed" in err
    assert readme.read_bytes() == before and readme.stat().st_mtime_ns == mtime
    assert not (reports.reports_root / "RESULTS.md").exists()  # refused before anything is written


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(before=TEXT, old=TEXT, after=TEXT, block=TEXT)
def test_replace_block_keeps_everything_outside_the_markers(before, old, after, block):
    begin, end = markers("p")
    for part in (before, old, after, block):
        if begin in part or end in part:
            return
    out = replace_block(f"{before}{begin}{old}{end}{after}", "p", block)
    assert out.startswith(before + begin) and out.endswith(end + after)
    assert out[len(before + begin):len(out) - len(end + after)] == "\n" + block.strip("\n") + "\n"
    with pytest.raises(ResultsError):
        replace_block(before + after + begin, "p", block)


def test_a_declared_headline_renders_as_declared_and_a_bad_one_is_refused():
    assert headlines.format_headline(report.headline_number("PSNR", 28.26, unit="dB")) == "PSNR: 28.3 dB"
    assert headlines.format_headline(report.headline_number("gap", -0.0123, (-0.02, 0.001), unit="nats/token",
                                                            digits=3)) == "gap: -0.012 nats/token [-0.020, 0.001]"
    assert headlines.format_headline(report.headline_number("not computed", None, unit="%")) == "not computed: —"
    with pytest.raises(ValueError, match="interval is \\(low, high\\)"):
        report.headline_number("x", 1.0, (1.0,))
    for bad in ({"label": "x", "value": "high"}, {"label": "x", "value": True}, {"value": 1.0},
                {"label": "x", "value": 1.0, "interval": [1]}, {"label": "x", "value": 1.0, "digits": "2"}, [1]):
        with pytest.raises(TypeError):
            headlines.format_headline(bad)


def test_readme_block_names_the_commit_and_time_of_each_notebooks_own_run(reports):
    from lverse_core.pipeline.results_page import readme_block

    head = readme_block(reports).splitlines()[0]
    assert "commit abc1234" in head and "notebooks 189 s" in head  # 125.25 + 60 + 3.5, not the 812 s recorded
    path = reports.reports_root / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["total_seconds"] = 0.0  # a later run of one notebook that reused the rest
    manifest["notebooks"][0]["commit"] = "old0001"
    manifest["notebooks"][1]["commit"] = "old0001"
    path.write_text(json.dumps(manifest))
    head = readme_block(reports).splitlines()[0]
    assert "notebooks 03, 05 at commit old0001; 04 at commit abc1234" in head and "notebooks 189 s" in head
