"""Caption records are parsed once per process: a second read of the same Karpathy file is served from memory,
as copies; any change of the file's bytes (even at the same size and within one timestamp tick) parses it again."""
from __future__ import annotations

import json

from lverse_core.data import loaders


def _karpathy(path, word: str):
    images = [{"cocoid": i, "split": "train" if i else "test", "filepath": "", "filename": f"{i}.png",
               "sentences": [{"raw": f"a {word} circle {i}."}]} for i in range(3)]
    path.write_text(json.dumps({"images": images, "dataset": "x"}))


def test_a_karpathy_file_is_parsed_once_and_callers_get_copies(tmp_path, monkeypatch):
    path = tmp_path / "dataset_coco.json"
    _karpathy(path, "red")
    parses = []
    real = loaders._parse_karpathy
    monkeypatch.setattr(loaders, "_parse_karpathy", lambda *a: parses.append(a[0]) or real(*a))
    first = loaders.karpathy_records(path, tmp_path)
    first[0]["captions"].append("changed by a caller")
    first[1]["image_id"] = 99
    second = loaders.karpathy_records(path, tmp_path)
    assert len(parses) == 1
    assert second[0]["captions"] == ["a red circle 0."] and second[1]["image_id"] == 1
    _karpathy(path, "tan")  # same size, written at once: only the bytes differ
    third = loaders.karpathy_records(path, tmp_path)
    assert len(parses) == 2 and third[0]["captions"] == ["a tan circle 0."]
