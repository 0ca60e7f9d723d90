"""Shared fixtures. Every test that writes data, runs or reports does it under a tmp dir (LVERSE_WORKDIR);
a tiny judge is trained once per test run on stand-in scenes (tests/synthetic_scenes.py)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))

import synthetic_scenes as syn  # noqa: E402

from lverse_core.config import load_profile  # noqa: E402


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


@pytest.fixture(scope="session")
def ci_pipeline(tmp_path_factory):
    """The whole pipeline on the ci profile, run once by the real runner (papermill) into a tmp workdir, with the
    network blocked in the notebook kernels (``offline_env``).

    Returns (workdir, run record). Tests that check a notebook's outputs read them from here instead of running
    the notebooks again; use ``ci_outputs`` to resolve the ci profile's paths inside this workdir.
    """
    from lverse_core.pipeline import execute

    work = tmp_path_factory.mktemp("ci_pipeline")
    mp = pytest.MonkeyPatch()
    mp.setenv("LVERSE_WORKDIR", str(work))
    for key, value in offline_env({"PYTHONPATH": os.environ.get("PYTHONPATH", "")}).items():
        mp.setenv(key, value)  # the kernels run offline: the pipeline must need no network (tests/test_offline.py)
    try:
        record = execute.run("ci", log=print)
    finally:
        mp.undo()
    return work, record


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


def pytest_collection_modifyitems(config, items):
    for item in items:
        kind = test_kind(item)
        for other in TEST_KINDS:
            if other != kind and item.get_closest_marker(other) is not None:
                raise pytest.UsageError(f"{item.nodeid} is marked {other!r} but is of kind {kind!r}")
        item.add_marker(getattr(pytest.mark, kind))
