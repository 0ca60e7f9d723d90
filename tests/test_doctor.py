"""`python -m lverse_core doctor`: each problem is found and comes with what to do."""
from __future__ import annotations

import json
from collections import namedtuple

import numpy as np

from lverse_core.config import load_profile
from lverse_core.pipeline import doctor as D
from lverse_core.pipeline.cli import main
from lverse_core.training.augvae_train import checkpoint_path


def _problems(cfg):
    return {f.check: f for f in D.diagnose(cfg) if not f.ok}


def test_a_ready_embedded_profile_has_no_problems(workdir, monkeypatch):
    monkeypatch.setattr(D, "_java_version", lambda: 'openjdk version "17"')
    assert _problems(load_profile("ci")) == {}
    assert main(["doctor", "--profile", "ci"]) == 0


def test_missing_java_assets_and_disk_are_reported_with_the_fix(workdir, monkeypatch, capsys):
    for env in D.ASSET_ENV.values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr(D, "_java_version", lambda: None)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(D.shutil, "disk_usage", lambda p: usage(10**12, 10**12, 10**9))  # 1 GB free
    problems = _problems(load_profile("paper"))
    assert "METEOR" in problems["java"].message and "openjdk" in problems["java"].fix
    assert "LVERSE_CLIP_WEIGHTS" in problems["asset clip_vit_b32"].fix
    assert {"asset coco_karpathy_json", "asset coco_root", "asset imagenet_root", "asset inception_fid"} <= set(problems)
    assert "LVERSE_WORKDIR" in problems["disk"].fix
    assert main(["doctor", "--profile", "paper"]) == 1
    out = capsys.readouterr().out
    assert "[problem] java" in out and "-> install a Java runtime" in out


def test_stale_codes_are_reported(workdir, monkeypatch):
    monkeypatch.setattr(D, "_java_version", lambda: "java 17")
    cfg = load_profile("ci")
    sl = checkpoint_path(cfg, "sl")
    sl.parent.mkdir(parents=True)
    sl.write_bytes(b"retrained weights")
    codes = cfg.runs_root / "codes"
    codes.mkdir()
    g = cfg.image_grid
    np.save(codes / "val_codes.npy", np.zeros((2, g, g), dtype=np.uint16))
    (codes / "val_index.json").write_text(json.dumps({"image_ids": [1, 2], "grid": g, "codebook_size": 128,
                                                      "checkpoint": "sha256:earlier"}))
    problems = _problems(cfg)
    assert "stale" in problems["codes val"].message and "01_train_augvae" in problems["codes val"].fix


def test_lverse_cc_needs_the_cc3m_tsv_beside_coco():
    from lverse_core.pipeline.doctor import needed_assets

    cc, paper = load_profile("paper-cc"), load_profile("paper")
    assert set(needed_assets(cc)) - set(needed_assets(paper)) == {"cc3m_tsv"}
    assert {"coco_karpathy_json", "coco_root"} <= set(needed_assets(cc))  # evaluated on MS-COCO


def test_a_work_directory_that_is_a_file_or_read_only_is_a_problem(tmp_path, monkeypatch, capsys):
    import os
    import re
    from pathlib import Path

    import pytest

    monkeypatch.setattr(D, "_java_version", lambda: "java 17")
    a_file = tmp_path / "work"
    a_file.write_text("not a folder")
    # read-only for every user, root included (a chmod would not stop root)
    read_only = Path("/proc/lverse-work") if Path("/proc/self").exists() else None
    cases = [(a_file, "work is a file, not a folder"), (a_file / "below", "cannot be created: .*work is a file")]
    if read_only is not None:
        cases.append((read_only, "/proc cannot be written in"))
    elif os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        cases.append((ro, "ro cannot be written in"))
    else:
        pytest.skip("no folder here that this user cannot write in")
    for where, msg in cases:
        monkeypatch.setenv("LVERSE_WORKDIR", str(where))
        found = {f.check: f for f in D.diagnose(load_profile("ci"), timing=False)}["work directory"]
        assert not found.ok and re.search(msg, found.message) and "LVERSE_WORKDIR" in found.fix, found
    monkeypatch.setenv("LVERSE_WORKDIR", str(a_file))
    assert main(["doctor", "--profile", "ci"]) == 1
    out = capsys.readouterr().out
    assert "[problem] work directory" in out and "ready" not in out


def test_caption_metrics_without_java_give_the_doctors_diagnosis(monkeypatch):
    import pytest

    from lverse_core.evaluation import metrics

    monkeypatch.setattr(metrics, "java_version", lambda: None)
    monkeypatch.setattr(metrics, "_java_found", False)
    with pytest.raises(metrics.JavaMissingError, match=r"no working 'java' on PATH; METEOR.*openjdk.*doctor"):
        metrics.score_captions({1: "a red circle."}, {1: ["a red circle.", "a circle."]})


def test_java_is_not_asked_for_where_the_profile_scores_without_it(monkeypatch):
    from lverse_core.config import load_profile
    from lverse_core.evaluation import metrics

    monkeypatch.setattr(D, "_java_version", lambda: None)
    assert not D.check_java(load_profile("ci")).ok  # coco-caption and METEOR: Java needed
    found = D.check_java(load_profile("gpu"))  # nlg-eval without METEOR
    assert found.ok and "not needed" in found.message
    assert metrics.needs_java(load_profile("ci")) and not metrics.needs_java(load_profile("gpu"))
