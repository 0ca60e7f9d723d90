"""The papermill runner: order, parameters, failure handling, manifest, index and offline HTML."""
import json
import subprocess
import sys

import pytest
import torch

from lverse_core.pipeline import cli, execute, index_page, notebook_html
from lverse_core.pipeline.manifest import NotebookResult, RunRecord, write_manifest
from lverse_core.config import REPO_ROOT

from ._notebooks import executed_notebook, make_notebook, printed

WRITE_RESULT = """
from lverse_core.config import load_profile
from lverse_core import report
import pandas as pd
cfg = load_profile(PROFILE)
report.save_results(cfg, "toy", {"value": 1.5})
report.save_table(cfg, "toy_table", pd.DataFrame({"model": ["x"], "score": [0.5], "source": ["this run"]}))
"""


@pytest.fixture
def books(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    make_notebook(d / "00_first.ipynb", [WRITE_RESULT, "STEPS"], params='PROFILE = "ci"  # profile\nSTEPS = 2  # steps')
    make_notebook(d / "01_second.ipynb", ["x = 1", "print('second ran')"])
    return d


def test_runs_in_order_and_writes_report(books, workdir):
    lines = []
    rec = execute.run("ci", notebook_dir=books, params={"STEPS": 3}, log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert [n.name for n in rec.notebooks] == ["00_first", "01_second"]
    assert all(n.status == "ok" for n in rec.notebooks)
    root = workdir / "reports" / "ci"
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["profile"] == "ci" and manifest["parameters"] == {"PROFILE": "ci", "STEPS": 3}
    assert manifest["config"]["augvae"]["codebook_size"] == 128
    assert manifest["packages"]["torch"] != "not installed"
    assert [n["status"] for n in manifest["notebooks"]] == ["ok", "ok"]
    # the CPU arithmetic's identity (results repeat exactly only on one machine type) and the kernels' memory
    cpu = manifest["cpu"]
    assert cpu["model"] and cpu["cores"] >= 1 and cpu["torch_threads"] >= 1 and isinstance(cpu["isa_flags"], list)
    assert torch.cuda.is_available() or cpu["model"] in manifest["machine"]  # every "source" names the CPU
    assert manifest["peak_rss_mib"] >= max(n["peak_rss_mib"] for n in manifest["notebooks"]) > 50
    assert json.loads((root / "results" / "toy.json").read_text())["value"] == 1.5
    index = (root / "index.html").read_text()
    assert "html/00_first.html" in index and "toy_table" in index
    page = (root / "html" / "00_first.html").read_text()
    assert "<math" in page  # equations rendered to MathML offline, intact (not split into empty tags)
    assert "<msub><mi>x</mi><mi>i</mi></msub>" in page and "$x_i$" not in page
    assert "cdnjs" not in page and 'src="http' not in page  # nothing fetched from the network
    # the parameter reached only the notebook that declares it, and papermill injected it
    executed = json.loads((root / "executed" / "00_first.ipynb").read_text())
    assert any("STEPS = 3" in "".join(c["source"]) for c in executed["cells"])
    assert any("00_first: ok" in l for l in lines)


def test_failing_notebook_stops_run_and_keeps_copy(books, workdir):
    make_notebook(books / "00_first.ipynb", ["a = 1", "raise ValueError('boom in cell')"])
    with pytest.raises(execute.RunError) as e:
        execute.run("ci", notebook_dir=books, log=lambda *a, **k: None)
    msg = str(e.value)
    assert "00_first.ipynb" in msg and "boom in cell" in msg and "cell" in msg
    root = workdir / "reports" / "ci"
    kept = json.loads((root / "executed" / "00_first.ipynb").read_text())
    assert any("boom in cell" in json.dumps(c.get("outputs", [])) for c in kept["cells"])
    manifest = json.loads((root / "manifest.json").read_text())
    assert [n["status"] for n in manifest["notebooks"]] == ["failed", "not run"]
    assert not (root / "executed" / "01_second.ipynb").exists()


def test_bad_selection_and_parameters(books, workdir):
    with pytest.raises(execute.RunError, match="valid: 00, 01"):
        execute.run("ci", only="07", notebook_dir=books)
    with pytest.raises(execute.RunError, match="unknown parameter.*STEPZ.*valid: STEPS"):
        execute.run("ci", notebook_dir=books, params={"STEPZ": 1})
    make_notebook(books / "02_noparams.ipynb", ["1"], params="x = 1")
    with pytest.raises(execute.RunError, match="02_noparams.ipynb has no PROFILE"):
        execute.run("ci", only="02", notebook_dir=books)


def test_only_selects_subset(books, workdir):
    rec = execute.run("ci", only="01", notebook_dir=books, log=lambda *a, **k: None)
    assert [n.name for n in rec.notebooks] == ["01_second"]


def test_cli_exit_status_and_message(workdir):
    out = subprocess.run([sys.executable, "-m", "lverse_core", "run", "--profile", "nope"], capture_output=True,
                         text=True, cwd=REPO_ROOT)
    assert out.returncode == 1 and "unknown profile 'nope'" in out.stderr and "smoke" in out.stderr


def test_a_partial_rerun_keeps_the_other_notebooks_in_the_manifest(workdir):
    # write_manifest / write_index alone (no papermill): what `run --only 01` leaves after a full run
    from lverse_core.config import load_profile

    cfg = load_profile("ci")
    full = RunRecord("ci", "2026-01-01T10:00:00", [NotebookResult("00_first", "ok", 1.0),
                                                   NotebookResult("01_second", "ok", 2.0)])
    write_manifest(cfg, full, {})
    rerun = RunRecord("ci", "2026-01-02T10:00:00", [NotebookResult("01_second", "failed", 3.0,
                                                                         error="cell 1: boom")])
    write_manifest(cfg, rerun, {})
    manifest = json.loads((cfg.reports_root / "manifest.json").read_text())
    first, second = manifest["notebooks"]
    assert first["name"] == "00_first" and first["status"] == "ok" and first["from_earlier_run"]
    assert first["run_started"] == "2026-01-01T10:00:00"
    assert second["status"] == "failed" and second["run_started"] == "2026-01-02T10:00:00"
    assert second["earlier"]["status"] == "ok"  # the earlier good run of it is still on record
    index = index_page.write_index(cfg).read_text()
    assert "00_first" in index and "from an earlier run (2026-01-01T10:00:00)" in index


def _meta(path):
    return json.loads(path.read_text())["metadata"]


def test_a_failed_rerun_keeps_the_last_good_executed_copy(books, workdir, monkeypatch):
    # papermill and nbconvert replaced by stand-ins: this checks the runner's bookkeeping, not the kernels
    import papermill
    from papermill.exceptions import PapermillExecutionError

    outcome = {"01_second": "ok"}

    def fake_execute(src, dst, **kw):
        name = src.rsplit("/", 1)[-1][:-6]
        executed_notebook(dst, run=outcome.get(name, "ok"), name=name)
        if outcome.get(name) == "fail":
            raise PapermillExecutionError(2, 2, "raise", "ValueError", "boom", [])

    def fake_html(executed, out):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(executed.read_text())
        return out

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setattr(execute, "notebook_to_html", fake_html)
    execute.run("ci", notebook_dir=books, log=lambda *a, **k: None)
    root = workdir / "reports" / "ci"
    for attempt in range(2):  # failing twice in a row still points at the one good run
        outcome["01_second"] = "fail"
        with pytest.raises(execute.RunError):
            execute.run("ci", only="01", notebook_dir=books, log=lambda *a, **k: None)
        assert _meta(root / "executed" / "01_second.ipynb")["run"] == "fail"  # traceback copy
        assert _meta(root / "executed" / "last_good" / "01_second.ipynb")["run"] == "ok"
        entry = json.loads((root / "manifest.json").read_text())["notebooks"][1]
        assert entry["status"] == "failed" and entry["last_good"] == "html/last_good/01_second.html"
        assert _meta(root / entry["last_good"])["run"] == "ok"
        assert "last good run" in (root / "index.html").read_text()
    outcome["01_second"] = "ok"
    execute.run("ci", only="01", notebook_dir=books, log=lambda *a, **k: None)
    assert not (root / "executed" / "last_good" / "01_second.ipynb").exists()  # a good run replaces it


def test_tables_of_a_notebook_that_failed_are_marked_stale(books, workdir, monkeypatch):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    fail = set()

    def fake_execute(src, dst, **kw):
        name = src.rsplit("/", 1)[-1][:-6]
        executed_notebook(dst)
        if name in fail:
            raise PapermillExecutionError(2, 2, "raise", "ValueError", "boom", [])
        if name == "00_first":  # what the real notebook writes through lverse_core.report
            (root / "tables").mkdir(parents=True, exist_ok=True)
            (root / "tables" / "toy_table.csv").write_text("model,score\nx,0.5\n")

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setattr(execute, "notebook_to_html", lambda executed, out: out)
    root = workdir / "reports" / "ci"
    execute.run("ci", notebook_dir=books, log=lambda *a, **k: None)
    assert json.loads((root / "manifest.json").read_text())["notebooks"][0]["outputs"] == ["tables/toy_table.csv"]
    assert "stale" not in (root / "index.html").read_text()
    fail.add("00_first")
    with pytest.raises(execute.RunError):
        execute.run("ci", only="00", notebook_dir=books, log=lambda *a, **k: None)
    assert "stale: written by an earlier run of 00_first failed" in (root / "index.html").read_text()


def test_tables_made_from_retrained_checkpoints_are_marked_stale(books, workdir, monkeypatch):
    import papermill

    from lverse_core.config import load_profile
    from lverse_core.sampling.generate import made_from

    cfg = load_profile("ci")
    cfg.runs_root.mkdir(parents=True, exist_ok=True)
    for name in ("biart.pt", "augvae_sl.pt", "clip_reranker.pt"):
        (cfg.runs_root / name).write_bytes(name.encode())
    root = cfg.reports_root

    def fake_execute(src, dst, **kw):  # notebook 00 stands in for 04/05: a table and results saying made_from
        executed_notebook(dst)
        if src.endswith("00_first.ipynb"):
            for sub in ("tables", "results"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            (root / "tables" / "toy_table.csv").write_text("model,score\nx,0.5\n")
            (root / "results" / "toy.json").write_text(json.dumps({"made_from": made_from(cfg)}))

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setattr(execute, "notebook_to_html", lambda executed, out: out)
    execute.run("ci", notebook_dir=books, log=lambda *a, **k: None)
    assert "stale" not in (root / "index.html").read_text()
    (cfg.runs_root / "biart.pt").write_bytes(b"retrained")  # BiART retrained; the table was not regenerated
    index_page.write_index(cfg)
    page = (root / "index.html").read_text()
    assert "stale: made from another biart than the run holds now: rerun 00_first" in page


@pytest.mark.parametrize("remake, named", [("augvae_ml", "augvae_ml"), ("judge", "judge"),
                                           ("data set", "data set"), ("codes test", "codes test")])
def test_results_of_any_notebook_record_their_inputs_and_go_stale_when_one_is_remade(books, workdir, monkeypatch,
                                                                                      remake, named):
    import papermill

    from lverse_core.config import load_profile
    from lverse_core.pipeline import artefact_ids

    cfg = load_profile("ci")
    files = {"augvae_ml": cfg.runs_root / "augvae_ml.pt", "judge": cfg.runs_root / "judge.pt",
             "codes test": artefact_ids._files(cfg)["codes test"]()}
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(path.name.encode())
    root = cfg.reports_root
    inputs = ("data set", "augvae_ml", "judge", "codes test", "augvae_sl")  # augvae_sl: missing, and stays so

    def fake_execute(src, dst, **kw):  # notebook 00 stands in for 03: a figure and results saying made_from
        executed_notebook(dst)
        if src.endswith("00_first.ipynb"):
            for sub in ("figures", "results"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            (root / "figures" / "toy_figure.png").write_bytes(b"png")
            (root / "results" / "toy.json").write_text(json.dumps({"made_from": artefact_ids.ids(cfg, inputs)}))

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setattr(execute, "notebook_to_html", lambda executed, out: out)
    execute.run("ci", notebook_dir=books, log=lambda *a, **k: None)
    assert "stale" not in (root / "index.html").read_text()
    if remake == "data set":
        cfg = load_profile("ci", seed=cfg.seed + 1)  # the same folders, another embedded data set
    else:
        files[remake].write_bytes(b"remade")
    index_page.write_index(cfg)
    page = (root / "index.html").read_text()
    # the notebook's figure carries the note, not only its results JSON
    assert f"stale: made from another {named} than the run holds now: rerun 00_first</p><figure>" in page


def test_artefact_ids_name_what_they_do_not_know():
    from lverse_core.config import load_profile
    from lverse_core.pipeline import artefact_ids

    with pytest.raises(ValueError, match="unknown artefact 'biart.pt'.*known: data set, tokenizer"):
        artefact_ids.ids(load_profile("ci"), ["biart.pt"])
    assert artefact_ids.changed(load_profile("ci"), ["not", "a", "mapping"]) == []
    assert artefact_ids.changed(load_profile("ci"), {"from another kit": "x"}) == []


def test_index_reads_like_the_paper_headlines_captions_verdicts_forms(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from lverse_core import report
    from lverse_core.config import load_profile

    monkeypatch.setenv("LVERSE_WORKDIR", str(tmp_path))
    cfg = load_profile("ci")
    # written out of paper order on purpose
    report.save_table(cfg, "table3_text_to_image", pd.DataFrame({"model": ["ours"], "FID-0": [-9.57e-13]}),
                      "Table 3 (this run)", verdict="generated images beat the floor 3x")
    report.save_table(cfg, "data_split_counts", pd.DataFrame({"split": ["train"], "images": [26]}), "Split sizes")
    report.save_table(cfg, "table2_image_to_text", pd.DataFrame({"model": ["ours"], "BLEU-4": [43.41234]}))
    fig, _ = plt.subplots()
    report.save_figure(cfg, "06_figure7_human_eval", fig, caption="Figure 7 analogue")
    report.save_figure(cfg, "table1_reconstruction_grid", fig)
    report.save_figure(cfg, "mystery_plot", fig)
    forms = cfg.reports_root / "human_eval" / "forms"
    forms.mkdir(parents=True)
    (forms / "f000.html").write_text("<html></html>")
    report.write_results(cfg, "table3", {"n_prompts": 200}, headline=[
        report.headline_number("images judged right (200 prompts)", 0.05, (0.025, 0.085), unit="%", scale=100),
        report.headline_number("shuffled-caption floor", 0.005, (0.0025, 0.0072), unit="%", scale=100)])
    page = index_page.write_index(cfg).read_text()
    order = [page.index(f"id='{a}'") for a in ("headline", "data", "augvae", "table2", "table3", "figure7", "other",
                                                 "notebooks")]
    assert order == sorted(order), "sections out of the paper's order"
    assert ("<li>images judged right (200 prompts): 5.0% [2.5, 8.5]</li>"
            "<li>shuffled-caption floor: 0.5% [0.2, 0.7]</li>") in page
    assert "<h3>Table 3 (this run)</h3><p class='verdict'>generated images beat the floor 3x</p>" in page
    assert "<h3>Split sizes</h3>" in page and "<h3>table2 image to text</h3>" in page  # no caption: its name
    assert "e-13" not in page and "43.41" in page and "43.41234" not in page
    for rel in ("tables/table3_text_to_image.csv", "tables/data_split_counts.md", "figures/06_figure7_human_eval.png",
                "figures/mystery_plot.png", "human_eval/forms/f000.html", "results/table3.json"):
        assert f"href='{rel}'" in page, rel
    assert str(tmp_path) not in page


def test_scrub_local_paths_hides_the_machines_folders(tmp_path, monkeypatch):
    import sysconfig

    monkeypatch.setenv("LVERSE_WORKDIR", str(tmp_path))
    site = sysconfig.get_paths()["purelib"]
    text = (f"free under {tmp_path} (1 GB); figure {tmp_path}/reports/ci/x.png; {site}/tqdm/auto.py:21; "
            f"{REPO_ROOT}/notebooks/02_train_biart.ipynb and {REPO_ROOT}.")
    out = notebook_html.scrub_local_paths(text)
    assert str(tmp_path) not in out and str(REPO_ROOT) not in out and site not in out
    assert "free under <workdir> (1 GB)" in out and "figure reports/ci/x.png" in out
    assert "<site-packages>/tqdm/auto.py:21" in out and "notebooks/02_train_biart.ipynb and <repo>." in out
    assert notebook_html.scrub_local_paths(f"{tmp_path}x/y") == f"{tmp_path}x/y"  # another folder that merely starts alike


def test_progress_bars_are_off_in_kernels_unless_asked(monkeypatch):
    from lverse_core.training.loop import progress_enabled

    monkeypatch.delenv("LVERSE_PROGRESS", raising=False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert progress_enabled()  # the command line
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    assert not progress_enabled()  # a notebook kernel
    monkeypatch.setenv("LVERSE_PROGRESS", "1")
    assert progress_enabled()
    monkeypatch.setenv("LVERSE_PROGRESS", "0")
    monkeypatch.delitem(sys.modules, "ipykernel")
    assert not progress_enabled()


def test_format_number_prints_what_a_number_carries():
    from lverse_core.report import format_number

    assert [format_number(v) for v in (-9.57e-13, 0.97, 43.41234, 266.1234, 12345.6, 1.5e9, float("nan"), 3.0)] == \
        ["0", "0.97", "43.41", "266.1", "12346", "1.5e+09", "—", "3"]


def test_a_verdict_added_later_keeps_the_caption_and_a_resave_drops_a_stale_one(tmp_path, monkeypatch):
    import pandas as pd

    from lverse_core import report
    from lverse_core.config import load_profile

    monkeypatch.setenv("LVERSE_WORKDIR", str(tmp_path))
    cfg = load_profile("ci")
    df = pd.DataFrame({"model": ["ours"], "score": [1.0]})
    report.save_table(cfg, "table1_reconstruction", df, "Table 1 (this run)")
    report.record_verdict(cfg, "tables/table1_reconstruction.csv", "SL beats the control")
    assert report.read_captions(cfg)["tables/table1_reconstruction.csv"] == {
        "caption": "Table 1 (this run)", "verdict": "SL beats the control"}
    report.save_table(cfg, "table1_reconstruction", df)  # rewritten by a later run that computed no verdict
    assert report.read_captions(cfg)["tables/table1_reconstruction.csv"] == {"caption": "", "verdict": ""}


def test_peak_memory_is_each_blocks_own_not_the_largest_so_far():
    """Each notebook's peak RSS is its own kernel's (VmHWM of the processes started under the runner while it ran),
    not the largest of any earlier child as getrusage(RUSAGE_CHILDREN) would give."""
    import subprocess
    import sys

    from lverse_core.pipeline.processes import DescendantPeakRSS

    def child(mib: int) -> float:
        code = f"import time; b = bytearray({mib} * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.2)"
        with DescendantPeakRSS(every=0.1) as memory:
            subprocess.run([sys.executable, "-c", code], check=True)
        return memory.peak_mib

    big, small = child(300), child(40)
    assert 300 <= big < 600 and 40 <= small < 150


def test_the_run_starts_with_its_precision_and_estimate_and_an_estimate_failure_does_not_stop_it(books, workdir,
                                                                                                 monkeypatch):
    from lverse_core.pipeline import estimate

    lines = []
    monkeypatch.setattr(estimate, "MIN_STEPS", 0)  # ci trains too little to be estimated otherwise
    rec = execute.run("ci", notebook_dir=books, log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert lines[0].startswith("precision: AugVAE ") and "BiART " in lines[0]
    assert lines[1].startswith("expected time on this machine: about ") and rec.estimate_s > 0
    manifest = json.loads((workdir / "reports" / "ci" / "manifest.json").read_text())
    assert manifest["estimate_seconds"] == rec.estimate_s and manifest["precision"] == rec.precision

    def broken(cfg):
        raise RuntimeError("no such model")

    monkeypatch.setattr(execute, "estimate_run", broken)
    lines.clear()
    rec = execute.run("ci", notebook_dir=books, log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert "no time estimate (RuntimeError: no such model)" in lines[1]
    assert all(n.status == "ok" for n in rec.notebooks) and rec.estimate_s is None


def test_an_empty_only_is_an_error_not_a_silent_success(books, workdir, capsys):
    for only in (",", " , ", ""):
        with pytest.raises(execute.RunError, match="names no notebook.*e.g. --only 00,01"):
            execute.run("ci", only=only, notebook_dir=books)
    assert cli.main(["run", "--profile", "ci", "--only", ","]) == 1
    assert "names no notebook" in capsys.readouterr().err
    assert not (workdir / "reports").exists()


def test_a_deeply_nested_parameter_is_an_error_not_a_recursion_error(capsys):
    assert cli.main(["run", "--profile", "ci", "-p", "OVERRIDES", "[" * 100_000 + "]" * 100_000]) == 1
    assert "-p OVERRIDES: the value is nested too deeply" in capsys.readouterr().err


@pytest.mark.parametrize("stop", ["import sys; sys.exit(0)",  # papermill lets a SystemExit(0) pass as success
                                  "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])  # the kernel killed
def test_a_notebook_that_stops_before_its_end_is_not_ok(books, workdir, stop):
    make_notebook(books / "00_first.ipynb", ["a = 1", stop, "print('the last cell ran')"])
    with pytest.raises(execute.RunError, match="00_first.ipynb failed"):
        execute.run("ci", only="00", notebook_dir=books, log=lambda *a, **k: None)
    entry = json.loads((workdir / "reports" / "ci" / "manifest.json").read_text())["notebooks"][0]
    assert entry["status"] == "failed"
    assert execute.unfinished(workdir / "reports" / "ci" / "executed" / "00_first.ipynb")


def test_a_runner_killed_mid_notebook_never_leaves_ok_nor_replaces_last_good(books, workdir, monkeypatch):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    root = workdir / "reports" / "ci"
    mode = {"01_second": "ok"}

    def fake_execute(src, dst, **kw):
        name = src.rsplit("/", 1)[-1][:-6]
        if mode.get(name) == "killed":
            # while it runs, the manifest on disk says so (and not the earlier "ok")
            entry = json.loads((root / "manifest.json").read_text())["notebooks"][1]
            assert entry["name"] == "01_second" and entry["status"] == "running"
            executed_notebook(dst, finished=False, run="half")
            raise KeyboardInterrupt  # the runner itself stopped: nothing after this line of run() happens
        executed_notebook(dst, finished=mode.get(name) != "fail", run=mode.get(name, "ok"))
        if mode.get(name) == "fail":
            raise PapermillExecutionError(2, 2, "raise", "ValueError", "boom", [])

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setattr(execute, "notebook_to_html", lambda executed, out: out)
    quiet = dict(notebook_dir=books, log=lambda *a, **k: None)
    execute.run("ci", **quiet)
    mode["01_second"] = "fail"  # sets the good copy aside in last_good/
    with pytest.raises(execute.RunError):
        execute.run("ci", only="01", **quiet)
    last_good = root / "executed" / "last_good" / "01_second.ipynb"
    assert _meta(last_good)["run"] == "ok"
    mode["01_second"] = "killed"
    with pytest.raises(KeyboardInterrupt):
        execute.run("ci", only="01", **quiet)
    manifest = json.loads((root / "manifest.json").read_text())
    assert [(n["name"], n["status"]) for n in manifest["notebooks"]] == [("00_first", "ok"), ("01_second", "running")]
    assert manifest["notebooks"][1]["earlier"]["status"] == "failed"  # what it replaced is still on record
    for hand_edited in (False, True):  # True: a manifest saying ok beside the half-run copy (as runs wrote before)
        mode["01_second"] = "killed"
        with pytest.raises(KeyboardInterrupt):
            execute.run("ci", only="01", **quiet)
        assert _meta(last_good)["run"] == "ok"
        if hand_edited:
            manifest = json.loads((root / "manifest.json").read_text())
            manifest["notebooks"][1]["status"] = "ok"
            (root / "manifest.json").write_text(json.dumps(manifest))
        mode["01_second"] = "fail"
        with pytest.raises(execute.RunError):
            execute.run("ci", only="01", **quiet)
        assert _meta(last_good)["run"] == "ok"  # the half-run copy never replaced the last good one
        entry = json.loads((root / "manifest.json").read_text())["notebooks"][1]
        assert entry["status"] == "failed" and entry["last_good"] == "executed/last_good/01_second.ipynb"


def test_the_index_survives_damaged_results_captions_tables_and_manifest_entries(workdir, monkeypatch):
    import papermill

    from lverse_core import report
    from lverse_core.config import load_profile

    cfg = load_profile("ci")
    root = cfg.reports_root
    report.write_results(cfg, "06_human_eval", {"pred_plus_both": 0.5}, headline=[
        report.headline_number("Pred + Both", 0.5, (0.4, 0.6), unit="%", scale=100)])
    (root / "results" / "table3.json").write_text('{"judge": {"generated images": {"judged_c')  # cut short
    (root / "results" / "table1_reconstruction.json").write_text("[1, 2]")  # not a mapping
    (root / "results" / "table2.json").write_text(json.dumps({"headline": [{"label": "BLEU-4", "value": "high"}]}))
    (root / "results" / "02_biart.json").write_bytes(b"\xff\xfe not utf-8")
    (root / "tables").mkdir()
    (root / "tables" / "data_split_counts.csv").write_bytes(b"\xff\x00\x01")
    (root / report.CAPTIONS_FILE).write_text(json.dumps({"tables/x.csv": "not a mapping", "tables/y.csv": {
        "caption": "fine", "verdict": ""}}))
    (root / "manifest.json").write_text(json.dumps({"profile": "ci", "notebooks": [
        {"name": "00_first", "seconds": "slow", "outputs": "tables/x.csv"}, "junk", {"status": 3}]}))
    page = index_page.write_index(cfg).read_text()
    assert "Pred + Both: 50.0% [40.0, 60.0]" in page  # the readable results still give their headline
    for bad in ("results/table3.json is unreadable", "results/table1_reconstruction.json holds a list",
                "results/table2.json holds a headline of the wrong kind", "results/02_biart.json is unreadable",
                "tables/data_split_counts.csv is unreadable", "captions.json: unreadable entries for tables/x.csv"):
        assert bad in page, bad
    assert "<td>00_first</td><td class='unknown'>unknown" in page
    # a later run reads the hand-edited manifest (an entry without status) without a KeyError
    books = workdir / "nbs"
    books.mkdir()
    make_notebook(books / "00_first.ipynb", ["x = 1"])
    monkeypatch.setattr(papermill, "execute_notebook", lambda src, dst, **kw: executed_notebook(dst))
    monkeypatch.setattr(execute, "notebook_to_html", lambda executed, out: out)
    assert execute.run("ci", notebook_dir=books, log=lambda *a, **k: None).notebooks[0].status == "ok"


def test_a_run_refuses_a_work_directory_it_cannot_write_in(books, workdir, monkeypatch):
    monkeypatch.setenv("LVERSE_WORKDIR", str(workdir / "nbs" / "00_first.ipynb"))  # a file
    with pytest.raises(execute.RunError, match=r"work directory cannot hold this run: .*00_first.ipynb is a file.*"
                                              r"LVERSE_WORKDIR"):
        execute.run("ci", notebook_dir=books)


def test_notebook_04_without_java_is_refused_with_the_doctors_fix(workdir, monkeypatch):
    from lverse_core.pipeline import doctor as D

    monkeypatch.setattr(D, "_java_version", lambda: None)
    with pytest.raises(execute.RunError, match=r"04_table2_image_to_text: no working 'java'.*METEOR.*openjdk.*"
                                              r"doctor.*leave 04 out of --only"):
        execute.run("ci", only="04")
    assert not (workdir / "reports").exists()


def test_printed_joins_a_print_the_kernel_sent_in_chunks():
    nb = {"cells": [{"cell_type": "markdown", "source": "x"},
                    {"cell_type": "code", "outputs": [
                        {"output_type": "stream", "name": "stdout", "text": "saved to"},
                        {"output_type": "stream", "name": "stderr", "text": "a warning\n"},
                        {"output_type": "stream", "name": "stdout", "text": [" runs/ci/", "tokenizer.json\n"]}]},
                    {"cell_type": "code", "outputs": []}]}
    assert printed(nb) == ["saved to runs/ci/tokenizer.json\n", ""]
    assert printed(nb, "stderr") == ["a warning\n", ""]
