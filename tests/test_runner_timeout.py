"""The runner's wall-clock limit kills the running notebook's kernel with its process group (Jupyter starts
kernels in their own session, so ending the runner alone would leave them running), records the notebook as
failed by the timeout and stops; and a training stopped by its own ``timeout_s`` resumes from its checkpoint."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lverse_core.pipeline import execute, processes
from tests._limits import HANG_GUARD_S
from tests._notebooks import make_notebook


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (killed and not yet reaped counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_ended(pid: int) -> bool:
    end = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < end:
        if not _running(pid):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the kernels through /proc (Linux)")
def test_kill_descendants_ends_a_child_session_and_its_group():
    # a child in its own session (as Jupyter starts kernels) with a grandchild in that session's group
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                              "print(p.pid, flush=True); time.sleep(600)"],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        grandchild = int(child.stdout.readline())
        assert os.getpgid(grandchild) == child.pid != os.getpgid(0)
        processes.kill_descendants()
        assert child.wait(timeout=HANG_GUARD_S) == -9
        assert _wait_ended(grandchild)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


EARLIER_RUN = ("import subprocess, sys, time; time.sleep(1); "
               "p = subprocess.Popen([sys.executable, '-c', 'b = bytearray(300 * 2**20); "
               "b[::4096] = bytes(len(b[::4096])); import time; time.sleep(600)']); "
               "print(p.pid, flush=True); time.sleep(600)")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the kernels through /proc (Linux)")
def test_a_deadline_and_the_memory_reading_leave_a_run_started_earlier_alone():
    # another run this process started before (as `make test` starts the ci pipeline's run): a child in its
    # own session, whose own 300 MiB child starts only after the block has begun
    earlier = subprocess.Popen([sys.executable, "-c", EARLIER_RUN], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    try:
        with processes.Deadline(1.5) as deadline, processes.DescendantPeakRSS(every=0.1) as memory:
            later = int(earlier.stdout.readline())  # the earlier run's child, started inside the block
            time.sleep(0.5)  # the earlier run's child touches its 300 MiB
            mine = subprocess.Popen(sleeper, start_new_session=True)  # what the block itself starts
            assert mine.wait(timeout=HANG_GUARD_S) == -9  # killed by the deadline
        assert deadline.fired and memory.peak_mib < 150, memory.peak_mib
        assert _running(earlier.pid) and _running(later)  # the earlier run and what it started since
        before = processes.children_now()
        mine = subprocess.Popen(sleeper, start_new_session=True)
        processes.kill_descendants(exclude=before)
        assert mine.wait(timeout=HANG_GUARD_S) == -9 and _running(earlier.pid) and _running(later)
    finally:
        os.killpg(earlier.pid, 9)
        earlier.wait()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the kernels through /proc (Linux)")
def test_run_timeout_kills_the_kernel_and_records_the_notebook_as_failed(tmp_path, workdir):
    books = tmp_path / "nbs"
    books.mkdir()
    pids = tmp_path / "pids.txt"
    make_notebook(books / "00_slow.ipynb", [
        f"import os, subprocess, sys, time\n"
        f"worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{worker.pid}}')",
        "time.sleep(600)"])
    make_notebook(books / "01_next.ipynb", ["x = 1"])
    with pytest.raises(execute.RunError, match="timeout of 3 s"):
        execute.run("ci", notebook_dir=books, log=lambda *a, **k: None, timeout_s=3, estimate=False)
    if pids.exists():  # the kernel got as far as writing its pid (it may have been killed before)
        for pid in map(int, pids.read_text().split()):
            assert _wait_ended(pid), pid
    manifest = json.loads((workdir / "reports" / "ci" / "manifest.json").read_text())
    assert [n["status"] for n in manifest["notebooks"]] == ["failed", "not run"]
    assert "timeout" in manifest["notebooks"][0]["error"]


def test_the_cli_has_the_timeout_option(workdir):
    out = subprocess.run([sys.executable, "-m", "lverse_core", "run", "--help"], capture_output=True, text=True,
                         timeout=HANG_GUARD_S, cwd=execute.REPO_ROOT)
    assert "--timeout" in out.stdout


def test_augvae_stopped_by_its_timeout_resumes_to_the_uninterrupted_result(tmp_path):
    from lverse_core.data.decoded import DecodedImages, to_uint8
    from lverse_core.training.augvae_train import load_augvae, train_augvae
    from lverse_core.training.loop import CheckpointError, load_checkpoint
    from tests.test_augvae import synthetic_images
    from tests.test_host_syncs import augvae_cfg

    images = to_uint8(synthetic_images(16, 32))
    a = augvae_cfg(tmp_path / "a", **{"augvae_train.ckpt_every": 100})
    full = load_checkpoint(train_augvae(a, "ml", dataset=DecodedImages(images), progress=False))
    b = augvae_cfg(tmp_path / "b", **{"augvae_train.ckpt_every": 100, "augvae_train.timeout_s": 1e-9})
    path = train_augvae(b, "ml", dataset=DecodedImages(images), progress=False)  # stops after its first step
    state = load_checkpoint(path)
    assert state["step"] == 1 and not state["finished"]
    with pytest.raises(CheckpointError, match="unfinished run"):  # the next stage is told to finish it first
        load_augvae(b, "ml")
    b_again = augvae_cfg(tmp_path / "b", **{"augvae_train.ckpt_every": 100})
    resumed = load_checkpoint(train_augvae(b_again, "ml", dataset=DecodedImages(images), progress=False))
    assert resumed["finished"] and resumed["step"] == full["step"]
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
