"""Results JSON goes through the one atomic-write helper: no shared temp name, strict JSON, readable by all."""
import json
import os
import stat

import pytest

from lverse_core import report


def test_write_json_atomic_uses_a_temp_file_of_its_own(tmp_path):
    path = tmp_path / "results" / "table3.json"
    path.parent.mkdir()
    (path.parent / "table3.json.tmp").mkdir()  # another writer's fixed-name temp (or anything) in the way
    report.write_json_atomic(path, {"x": float("nan"), "y": (1, 2), "name": "Fréchet"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"x": None, "y": [1, 2], "name": "Fréchet"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["table3.json", "table3.json.tmp"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "r.json"
    report.write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        report.write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["r.json"]



@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_a_written_file_has_the_mode_a_plain_open_gives_and_an_existing_one_keeps_its_own(tmp_path, umask):
    import torch

    from lverse_core.training.loop import save_checkpoint

    old = os.umask(umask)
    try:
        report.write_json_atomic(tmp_path / "r.json", {"a": 1})
        save_checkpoint(tmp_path / "model.pt", {"w": torch.zeros(2)})
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert want == 0o666 & ~umask
    for name in ("r.json", "model.pt"):  # not mkstemp's owner-only 0600
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name
    os.chmod(tmp_path / "r.json", 0o640)
    report.write_json_atomic(tmp_path / "r.json", {"a": 2})
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o640
