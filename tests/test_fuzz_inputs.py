"""Seeded random inputs for every input kind: the result is valid or the kit's own error type, never another
exception (issue 12's property tests, without the hypothesis package, which the pinned environment lacks).
Bounded: a few hundred cases per kind, a few seconds in all."""
from __future__ import annotations

import io
import json
import math
import random

import pytest
from PIL import Image

from lverse_core.config import Config, ConfigError, RANGES, load_profile
from lverse_core.data.loaders import BadInputError, karpathy_records, load_image, read_cc3m_tsv
from lverse_core.evaluation.human_eval import AnswerFileError, validate_answer_file

N = 200


def _value(rng: random.Random, depth: int = 0):
    """An arbitrary JSON-like value (with NaN/inf and YAML-ish oddities)."""
    kinds = ["int", "float", "str", "bool", "none", "list", "dict"] if depth < 3 else ["int", "str", "none"]
    k = rng.choice(kinds)
    if k == "int":
        return rng.choice([0, -1, 1, 2, 7, 64, -2**40, 2**63, rng.randint(-10**6, 10**6)])
    if k == "float":
        return rng.choice([0.0, -0.5, 0.5, 1.0, 1.5, math.nan, math.inf, -math.inf, rng.uniform(-1e6, 1e6)])
    if k == "str":
        return rng.choice(["", "x", "../../etc", "/etc/passwd", "a\tb", "\x00", "é", "train", "test", "12"])
    if k == "bool":
        return rng.random() < 0.5
    if k == "none":
        return None
    if k == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["split", "filename", "cocoid", "raw", "x"]): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (200, 30, 40)).save(buf, "PNG")
    return buf.getvalue()


def test_image_loader_on_arbitrary_bytes(tmp_path):
    rng, good = random.Random(0), _png_bytes()
    path = tmp_path / "x.png"
    for _ in range(N):
        b = bytearray(good)
        how = rng.choice(["cut", "flip", "random"])
        if how == "cut":
            b = b[: rng.randint(0, len(b))]
        elif how == "flip":
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        else:
            b = bytearray(rng.randbytes(rng.randint(0, 300)))
        path.write_bytes(bytes(b))
        try:
            img = load_image(path, 16)
            assert img.mode == "RGB"
        except BadInputError as e:
            assert str(path) in str(e)


def _karpathy_entry(i: int) -> dict:
    return {"filepath": "test", "filename": f"{i}.png", "split": "test", "cocoid": i,
            "sentences": [{"raw": f"caption {i}."}]}


def test_karpathy_reader_on_arbitrary_json(tmp_path):
    rng = random.Random(1)
    path = tmp_path / "k.json"
    for _ in range(N):
        images = [_karpathy_entry(i) for i in range(3)]
        victim = images[rng.randrange(3)]
        key = rng.choice(["filepath", "filename", "split", "cocoid", "sentences", "imgid", "new"])
        if rng.random() < 0.2:
            victim.pop(key, None)
        else:
            victim[key] = _value(rng)
        tree = {"images": images} if rng.random() < 0.9 else _value(rng)
        path.write_text(json.dumps(tree))
        try:
            recs = karpathy_records(path, tmp_path)
            assert all(isinstance(r["image_id"], int) and r["path"].is_relative_to(tmp_path) for r in recs)
            assert len({r["image_id"] for r in recs}) == len(recs)
        except BadInputError as e:
            assert str(path) in str(e)


def test_cc3m_reader_on_arbitrary_text(tmp_path):
    rng = random.Random(2)
    path = tmp_path / "c.tsv"
    pieces = ["a cat.", "\t", "img/1.png", "\n", "\r\n", "../x", "/abs", "\ufeff", "é", "\x00", " "]
    for _ in range(N):
        if rng.random() < 0.3:
            path.write_bytes(rng.randbytes(rng.randint(0, 80)))
        else:
            path.write_text("".join(rng.choice(pieces) for _ in range(rng.randint(0, 20))), encoding="utf-8")
        try:
            for r in read_cc3m_tsv(path):
                assert r["path"].is_relative_to(tmp_path) and "\ufeff" not in r["captions"][0][:1]
        except BadInputError as e:
            assert str(path) in str(e)


def test_config_validator_on_arbitrary_overrides():
    rng = random.Random(3)
    keys = sorted(RANGES) + ["data.source", "device", "augvae.ema_update", "eval.t2i_split", "profile", "nope.x",
                             "data", "augvae.nope"]
    for _ in range(N):
        over = {rng.choice(keys): _value(rng) for _ in range(rng.randint(1, 3))}
        try:
            cfg = load_profile("ci", **over)
            assert isinstance(cfg, Config)
        except ConfigError as e:
            assert str(e)


@pytest.fixture
def study():
    return {"study": "abc123", "forms": [{"form_id": "f1", "sets": [{"set_id": f"s{i}"} for i in range(3)]},
                                         {"form_id": "f2", "sets": [{"set_id": "s9"}]}]}


def test_answer_validation_on_arbitrary_json(tmp_path, study):
    rng = random.Random(4)
    path = tmp_path / "answers.json"
    for _ in range(N):
        rec = {"version": 1, "study": "abc123", "form_id": "f1", "rater": "r",
               "answers": [{"set_id": f"s{i}", "choice": "first"} for i in range(3)]}
        target = rec if rng.random() < 0.5 else rec["answers"][rng.randrange(3)]
        key = rng.choice(list(target) + ["simulated", "extra", "set_id", "choice"])
        if rng.random() < 0.2:
            target.pop(key, None)
        else:
            target[key] = _value(rng)
        text = json.dumps(rec) if rng.random() < 0.9 else json.dumps(_value(rng))
        path.write_text(text)
        try:
            out = validate_answer_file(path, study)
            assert out["form_id"] == "f1" and len(out["answers"]) == 3
        except AnswerFileError as e:
            assert str(path) in str(e)
