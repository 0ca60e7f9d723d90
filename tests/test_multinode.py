"""Multi-node torchrun: two torchrun agents on this machine act as two nodes of one process each (``--nnodes 2
--node_rank 0|1``, static rendezvous on a free loopback port, gloo on the CPU) and run AugVAE training, BiART
training and sharded generation in one job (tests/_multinode_worker.py). The results must be the one-process
results (within the float-reduction-order tolerances the single-node DDP tests justify; generation bit for bit),
and only rank 0 may write checkpoints and logs: the other node writes nothing but its own generation shards."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import torch

import _multinode_worker as job
import lverse_core
from _generate_stubs import RecordingScorer, StubTokenizer, inputs, stub_decode, tiny_biart, tiny_cfg
from lverse_core.config import REPO_ROOT
from lverse_core.sampling.generate import generate_captions, generate_images
from lverse_core.training.augvae_train import train_augvae
from lverse_core.training.biart_train import train_biart
from lverse_core.training.loop import load_checkpoint
from test_augvae import assert_same_augvae_training
from test_biart_train import assert_same_training

TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:  # other suites on this machine may run torchrun at the same time
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_worker(pid: int) -> None:
    """SIGKILL ``pid`` if it is still one of this test's worker processes (not a later process given its pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"_multinode_worker.py" in f.read():
                os.kill(pid, signal.SIGKILL)
    except (FileNotFoundError, ProcessLookupError):
        pass


def _launch_two_nodes(work, logs):
    """Start the two agents (node 0 hosts the rendezvous store) and wait for both; on a failure or a timeout end
    both agents and the worker processes they started (by their pids), and fail with both nodes' output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LVERSE_WORKDIR": str(work), "LVERSE_PROGRESS": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")])}
    port = _free_port()
    agents = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", str(port),
               str(REPO_ROOT / "tests" / "_multinode_worker.py"), str(work)]
        with open(logs / f"node{node}.log", "w") as out:
            agents.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True))
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while any(a.poll() is None for a in agents) and time.monotonic() < deadline:
            if any(a.returncode not in (None, 0) for a in agents):
                break  # one node failed: the other may wait for it forever
            time.sleep(0.2)
        ok = all(a.poll() == 0 for a in agents)
    finally:
        stragglers = [a for a in agents if a.poll() is None]
        for a in stragglers:
            os.killpg(a.pid, signal.SIGTERM)  # torchrun passes SIGTERM on to its workers
        for a in stragglers:
            try:
                a.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(a.pid, signal.SIGKILL)
                a.wait()
        for pid_file in work.glob("pid-rank*"):  # workers run in their own process sessions (setsid): end any left by their pid
            text = pid_file.read_text().strip()
            if text.isdigit():
                _kill_worker(int(text))
    output = "\n".join(f"--- node {n} (exit {a.returncode}) ---\n{(logs / f'node{n}.log').read_text()[-4000:]}"
                       for n, a in enumerate(agents))
    assert ok, f"the two-node torchrun job failed (or did not end within {TIMEOUT_S} s):\n{output}"


def test_two_torchrun_nodes_train_both_models_and_generate_as_one_process(tmp_path):
    work, logs = tmp_path / "shared", tmp_path / "logs"
    logs.mkdir()
    job.write_images(work / "images")
    _launch_two_nodes(work, logs)

    # each node ran one process: global ranks 0 and 1, both local rank 0 (the GPU index on a real node)
    reports = [json.loads((work / f"report-rank{r}.json").read_text()) for r in (0, 1)]
    for r, rep in enumerate(reports):
        assert rep["env"] == {"RANK": str(r), "LOCAL_RANK": "0", "WORLD_SIZE": "2", "GROUP_RANK": str(r),
                              "LOCAL_WORLD_SIZE": "1"}, rep["env"]
        assert rep["package"] == lverse_core.__file__  # the code under test, not another installed copy

    # AugVAE: 2 nodes x batch 2 (decoded in a DataLoader worker each) = 1 process x batch 4 (decoded in-process)
    one = job.augvae_cfg(tmp_path / "one" / "augvae", batch=4, workers=0)
    a = load_checkpoint(train_augvae(one, "ml", dataset=job.augvae_images(one, work / "images"), progress=False),
                        "augvae-ml")
    b = load_checkpoint(work / "runs" / "augvae" / "augvae_ml.pt", "augvae-ml")
    assert b["world_size"] == 2 and len(b["rng"]) == 2 and b["step"] == a["step"] == 3 and b["finished"]
    assert_same_augvae_training(a["model"], b["model"], steps=3, lr=one.augvae_train.lr * 4)

    # BiART: 2 nodes x batch 4 = 1 process x batch 8
    one = job.biart_cfg(tmp_path / "one" / "biart", batch=8)
    train_biart(one, job.biart_pairs(), text_vocab_size=30, pad_id=-100)
    a = load_checkpoint(one.runs_root / "biart.pt", "biart")
    b = load_checkpoint(work / "runs" / "biart" / "biart.pt", "biart")
    assert len(b["rng"]) == 2 and b["step"] == a["step"] == 4
    assert_same_training(a["model"], b["model"], steps=4, lr=3e-3)

    # generation: prompts sharded over the two nodes, merged from the shared shard folders, bit for bit
    ddp = torch.load(work / "generated.pt", weights_only=True)
    cfg, model, tok = tiny_cfg(**{"sampling.n_repeats": 2}), tiny_biart(), StubTokenizer()
    codes, image_ids, captions, images = inputs()
    assert ddp["captions"] == generate_captions(cfg, model, tok, codes, image_ids, RecordingScorer(), images=images)
    one_codes, one_recs = generate_images(cfg, model, tok, captions, image_ids, RecordingScorer(), stub_decode)
    assert torch.equal(ddp["codes"], one_codes) and ddp["records"] == one_recs
    parts = {p.name for p in (work / "shards").rglob("part-*.pt")}
    assert any(n.endswith("-r0.pt") for n in parts) and any(n.endswith("-r1.pt") for n in parts)

    # who wrote what: rank 0 every checkpoint (atomic rename) and log; rank 1 only its own shard files
    w0, w1 = reports[0]["writes"], reports[1]["writes"]
    for ckpt in ("runs/augvae/augvae_ml.pt", "runs/biart/biart.pt"):
        assert f"os.rename {ckpt}" in w0
    assert any(w.endswith("runs/augvae/logs/augvae_ml.csv") for w in w0)
    assert any(w.endswith("runs/biart/logs/biart.csv") for w in w0)
    assert "open generated.pt" in w0
    outside = [w for w in w1 if w.split(" ", 1)[1].partition("/")[0] != "shards"]
    assert outside == [], f"rank 1 wrote outside its generation shards: {outside}"
    parts1 = [w.rsplit("/", 1)[1] for w in w1 if w.rsplit("/", 1)[-1].startswith("part-")]
    assert parts1 and all("-r1.pt" in p for p in parts1), parts1  # its own part files (and their temp files)
