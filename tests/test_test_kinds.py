"""Every test is of exactly one kind (unit, notebooks, browser, slow: tests/conftest.py), so make test KIND=<kind>
runs one kind alone."""
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lverse_core.config import REPO_ROOT
from tests._limits import HANG_GUARD_S


KINDS_OF = """
import json, sys, pytest
class Kinds:
    def pytest_collection_finish(self, session):
        self.kinds = {i.nodeid.split("::", 1)[1]: [k for k in ("unit", "notebooks", "browser", "slow")
                                                   if i.get_closest_marker(k)] for i in session.items}
k = Kinds()
code = pytest.main(["--collect-only", "-q", *sys.argv[1:]], plugins=[k])
print("KINDS " + json.dumps(k.kinds))
"""


def kinds_of(*files: str) -> dict[str, list[str]]:
    """Each collected test of ``files`` -> the kind markers it carries after collection."""
    out = subprocess.run([sys.executable, "-c", KINDS_OF, *files], capture_output=True, text=True, cwd=REPO_ROOT,
                         timeout=HANG_GUARD_S)
    line = [x for x in out.stdout.splitlines() if x.startswith("KINDS ")]
    assert out.returncode == 0 and line, out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads(line[0][len("KINDS "):])


def test_the_kinds_split_real_test_files_by_what_they_run():
    kinds = kinds_of("tests/test_notebook_02.py", "tests/test_human_eval_browser.py", "tests/test_biart_train.py")
    assert kinds and all(len(k) == 1 for k in kinds.values()), kinds  # exactly one kind each
    of = {name: k[0] for name, k in kinds.items()}
    # reads the ci pipeline's papermill run -> notebooks; reads a log it writes itself -> unit
    assert of["test_notebook_02_outputs_on_ci"] == "notebooks"
    assert of["test_loss_curves_are_read_per_direction_and_part"] == "unit"
    assert of["test_a_rater_fills_one_form_in_chromium"] == "browser"
    assert list(of.values()).count("browser") == 1
    assert list(of.values()).count("slow") == 1  # the one longer training in test_biart_train


def test_a_test_marked_with_a_kind_it_is_not_is_refused():
    from conftest import pytest_collection_modifyitems

    marks = {"browser": None, "notebooks": object(), "slow": None, "unit": None}
    item = SimpleNamespace(nodeid="tests/test_x.py::test_y", fixturenames=[], path=Path("tests/test_x.py"),
                           get_closest_marker=lambda name: marks.get(name), add_marker=lambda m: None)
    with pytest.raises(pytest.UsageError, match="marked 'notebooks' but is of kind 'unit'"):
        pytest_collection_modifyitems(None, [item])


def test_the_readers_of_the_ci_run_go_last_and_a_collection_alone_starts_nothing(monkeypatch):
    import conftest

    started = []
    monkeypatch.setattr(conftest, "_start_ci_run", started.append)

    def item(name, fixtures):
        return SimpleNamespace(nodeid=f"tests/test_x.py::{name}", fixturenames=fixtures, path=Path("tests/test_x.py"),
                               get_closest_marker=lambda kind: None, add_marker=lambda mark: None)

    items = [item("a", []), item("b", ["ci_outputs"]), item("c", []), item("d", ["ci_run"])]
    collect_only = SimpleNamespace(option=SimpleNamespace(collectonly=True))
    conftest.pytest_collection_finish(SimpleNamespace(items=items, config=collect_only))
    assert [i.nodeid[-1] for i in items] == ["a", "c", "b", "d"] and started == []
    run = SimpleNamespace(option=SimpleNamespace(collectonly=False))
    conftest.pytest_collection_finish(SimpleNamespace(items=items, config=run))
    assert started == [run]  # the run starts once its readers are known, before the first test
    conftest.pytest_collection_finish(SimpleNamespace(items=[item("e", [])], config=run))
    assert started == [run]  # no reader selected (make test KIND=unit): no run


TERMINATED = """
import subprocess, sys, time
sys.path.insert(0, "tests")
import conftest
conftest._CiRun.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], process_group=0)
conftest.end_ci_run_on_sigterm()
print(conftest._CiRun.proc.pid, flush=True)
time.sleep(600)
"""


def test_a_test_run_ended_by_sigterm_ends_the_ci_run_it_started():
    import os
    import signal

    proc = subprocess.Popen([sys.executable, "-c", TERMINATED], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())
        proc.terminate()
        assert proc.wait(timeout=HANG_GUARD_S) == -signal.SIGTERM  # terminated as by the default handler
    finally:
        proc.kill()
    with pytest.raises(ProcessLookupError):  # the ci run (here a stand-in in its own group) is gone, and reaped
        os.kill(child, 0)
