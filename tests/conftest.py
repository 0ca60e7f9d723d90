"""Shared fixtures. Every test that writes data, runs or reports does it under a tmp dir (LVERSE_WORKDIR);
a tiny judge is trained once per test run on stand-in scenes (tests/synthetic_scenes.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))

import synthetic_scenes as syn  # noqa: E402
from _limits import HANG_GUARD_S  # noqa: E402

from lverse_core.config import REPO_ROOT, load_profile  # noqa: E402


OFFLINE_SITE = Path(__file__).resolve().parent / "offline_site"


def offline_env(env: dict) -> dict:
    """``env`` with the offline guard on: processes started with it (notebook kernels, workers) import
    tests/offline_site/sitecustomize.py, which blocks every connection but loopback."""
    env["LVERSE_BLOCK_NETWORK"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(OFFLINE_SITE), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Point every relative output path of the profiles (data/, runs/, reports/) at a fresh tmp dir."""
    monkeypatch.setenv("LVERSE_WORKDIR", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="session")
def synth_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalkit")
    return load_profile("ci", runs_dir=str(root / "runs"), reports_dir=str(root / "reports"),
                        data={"root": str(root / "data")})


@pytest.fixture(scope="session")
def synth_dataset(synth_cfg):
    """``synth_cfg`` with its embedded data set made, as notebook 00 makes it (the readers never make it)."""
    from lverse_core.data.shapes_dataset import ensure_dataset

    ensure_dataset(synth_cfg)
    return synth_cfg


@pytest.fixture(scope="session")
def synth_data():
    """(train images, train objects, test images, test objects): uint8 32 px scenes of 1-2 objects."""
    x, o = syn.scenes(768, 32, seed=0)
    xt, ot = syn.scenes(128, 32, seed=1)
    return x, o, xt, ot


@pytest.fixture(scope="session")
def trained_judge(synth_cfg, synth_data):
    """(judge, path of its checkpoint): trained for 300 steps (~10 s on one core)."""
    from lverse_core.evaluation.judge import build_judge, fit_judge, save_judge

    x, o, _, _ = synth_data
    judge = build_judge(synth_cfg, syn.SHAPES, syn.COLOURS, syn.SIZES)
    losses = fit_judge(judge, x, o, steps=300, batch_size=32, lr=2e-3, noise=0.05, seed=0)
    # Not runs/<profile>/judge.pt: test_train_judge_on_real_ci_images writes that one.
    path = save_judge(synth_cfg, judge, {"loss_first": losses[0], "loss_last": losses[-1]},
                      path=synth_cfg.runs_root / "synthetic_judge.pt")
    return judge, path, losses


class _CiRun:
    """The ci pipeline's run: the real CLI (``python -m lverse_core run --profile ci``) in a child process, started
    as soon as collection shows that a test reads it, so that it runs beside the tests that do not (they run first:
    ``pytest_collection_finish``). It runs at the lowest priority and on one thread, so it takes only the CPU time
    the other tests leave idle (they keep a second core busy only part of the time) and never stalls their
    two-thread steps; a tie for the cores made both several times slower."""
    proc: subprocess.Popen | None = None
    work: Path | None = None
    sigterm: object = None  # the SIGTERM handler before ``end_ci_run_on_sigterm``'s


def _start_ci_run(config) -> None:
    if _CiRun.proc is not None:
        return
    work = config._tmp_path_factory.mktemp("ci_pipeline")  # what the tmp_path_factory fixture returns
    # the kernels run offline: the pipeline must need no network (tests/test_offline.py)
    # at the lowest priority, the kernels' scheduling groups too (tests/offline_site/sitecustomize.py)
    env = offline_env({**os.environ, "LVERSE_WORKDIR": str(work), "OMP_NUM_THREADS": "1",
                       "LVERSE_TEST_BACKGROUND": "1"})
    with open(work / "run.log", "wb") as log:
        _CiRun.proc = subprocess.Popen([sys.executable, "-m", "lverse_core", "run", "--profile", "ci"], env=env,
                                       cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                       process_group=0)  # its own group: a Ctrl-C reaches the tests, which end it
    _CiRun.work = work
    end_ci_run_on_sigterm()


def end_ci_run_on_sigterm() -> None:
    """A test run ended by SIGTERM (``timeout``, a CI job cancelled) runs no teardown, and the ci run, in its own
    process group, would live on with its kernels: end it first, then terminate as the signal's handler before this
    one would have."""
    if _CiRun.sigterm is not None:
        return

    def on_sigterm(signum, frame):
        _stop_ci_run()
        signal.signal(signum, _CiRun.sigterm)
        os.kill(os.getpid(), signum)

    _CiRun.sigterm = signal.signal(signal.SIGTERM, on_sigterm)


def _stop_ci_run() -> None:
    """End the run if the test run ends before it does: its kernels' process groups, then the runner (as the
    runner's own deadline ends a run, ``processes.kill_descendants``)."""
    from lverse_core.pipeline.processes import kill_descendants

    proc = _CiRun.proc
    if proc is not None and proc.poll() is None:
        kill_descendants(proc.pid)
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def ci_pipeline(request):
    """The whole pipeline on the ci profile, run once by the real runner (papermill) into a tmp workdir, with the
    network blocked in the notebook kernels (``offline_env``).

    Returns (workdir, the run's manifest.json). Tests that check a notebook's outputs read them from here instead of
    running the notebooks again; use ``ci_outputs`` to resolve the ci profile's paths inside this workdir.
    """
    _start_ci_run(request.config)  # already running, unless collection did not see this fixture's readers
    try:
        rc = _CiRun.proc.wait(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        _stop_ci_run()
        rc = "killed after the hang guard"
    log = _CiRun.work / "run.log"
    if rc != 0:
        pytest.fail(f"python -m lverse_core run --profile ci ended with {rc}; the end of its log ({log}):\n"
                    f"{log.read_text(errors='replace')[-4000:]}", pytrace=False)
    manifest = json.loads((_CiRun.work / "reports" / "ci" / "manifest.json").read_text())
    return _CiRun.work, manifest


@pytest.fixture
def ci_outputs(ci_pipeline, monkeypatch):
    """The ci profile's config with data/, runs/ and reports/ resolved inside the pipeline's workdir."""
    monkeypatch.setenv("LVERSE_WORKDIR", str(ci_pipeline[0]))
    return load_profile("ci")


# -- kinds of test -----------------------------------------------------------------------------------------------
# Every test is of exactly one kind, so a kind runs alone: make test KIND=unit (the quick loop while editing),
# notebooks (papermill runs of the notebooks and the runner), browser (headless Chromium), slow (trains a model for
# longer than a unit test should). make test runs them all.
TEST_KINDS = ("unit", "notebooks", "browser", "slow")
NOTEBOOK_FIXTURES = {"ci_pipeline", "ci_outputs", "ci_run"}  # the papermill run of the whole ci pipeline
NOTEBOOK_FILES = {"test_runner.py", "test_runner_timeout.py", "test_pipeline.py", "test_augvae_notebooks.py"}


def test_kind(item) -> str:
    """``browser`` if marked so; ``notebooks`` if it reads the ci pipeline's run or lives in a file of runner and
    notebook runs; ``slow`` if marked so; else ``unit``."""
    if item.get_closest_marker("browser"):
        return "browser"
    if NOTEBOOK_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in NOTEBOOK_FILES:
        return "notebooks"
    if item.get_closest_marker("slow"):
        return "slow"
    return "unit"


test_kind.__test__ = False  # a helper, not a test


def reads_ci_run(item) -> bool:
    return bool(NOTEBOOK_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config, items):
    for item in items:
        kind = test_kind(item)
        for other in TEST_KINDS:
            if other != kind and item.get_closest_marker(other) is not None:
                raise pytest.UsageError(f"{item.nodeid} is marked {other!r} but is of kind {kind!r}")
        item.add_marker(getattr(pytest.mark, kind))


def pytest_collection_finish(session):
    """Of the tests selected (after -m and -k), those that read the ci pipeline's run go last, and the run starts
    now, beside the others."""
    items = session.items
    readers = [item for item in items if reads_ci_run(item)]
    items[:] = [item for item in items if not reads_ci_run(item)] + readers
    if readers and not session.config.option.collectonly:
        _start_ci_run(session.config)


def pytest_sessionfinish(session, exitstatus):
    _stop_ci_run()
