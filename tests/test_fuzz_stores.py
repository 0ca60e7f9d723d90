"""Property tests (hypothesis) for what the kit reads back from its own stores after a person may have edited them:
the human-evaluation answer store (``answers.jsonl``) and the ``made_from`` records of results files. Same settings
as ``tests/test_fuzz_inputs.py``: bounded, derandomized, the kit's own error or a valid result, never another
exception."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from lverse_core.config import load_profile
from lverse_core.evaluation import human_eval as H
from tests.test_fuzz_inputs import FUZZ, JSON, TEXT
from tests.test_human_eval import _answer, _study



# (which record, rare case, any JSON line, any bytes line, the field, its new value, remove it?, final newline?):
# one of the two valid records with a field (top level or of one answer) replaced by any JSON value or removed;
# rarely a line of any JSON or any bytes inserted; sometimes no final newline (a torn last line).
STORE_EDITS = st.tuples(
    st.integers(0, 2**31), st.integers(0, 9), JSON, st.binary(max_size=60),
    st.sampled_from(["form_id", "answers", "version", "rater", "simulated", "sha256", "study", "set_id", "choice"])
    | TEXT,
    JSON | st.sampled_from(["first", "second", "both", "f1"]), st.booleans(), st.booleans())


@pytest.fixture(scope="module")
def study_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("store")
    cfg, study = _study(tmp)
    H.ingest_answers(cfg, [_answer(tmp, study, study["forms"][0], ["first"] * 5),
                           _answer(tmp, study, study["forms"][1], ["both"] * 5)])
    good = [json.loads(line) for line in H.store_path(cfg).read_text().splitlines()]
    return cfg, good


@FUZZ
@given(draw=STORE_EDITS)
@example(draw=(0, 5, None, b"", "answers", {"s1": "first"}, False, True))
@example(draw=(1, 5, None, b"", "set_id", ["s1"], False, True))
def test_unblinding_an_edited_answer_store(study_store, draw):
    cfg, good = study_store
    pick, rare, any_json, any_bytes, key, value, remove, newline = draw
    records = json.loads(json.dumps(good))
    target = records[pick % 2]
    if key in ("set_id", "choice"):
        target = target["answers"][pick % len(target["answers"])]
    if remove:
        target.pop(key, None)
    else:
        target[key] = value
    lines = [json.dumps(r).encode() for r in records]
    if rare == 0:
        lines.insert(1, json.dumps(any_json).encode())
    elif rare == 1:
        lines.insert(1, any_bytes)
    store = H.store_path(cfg)
    store.write_bytes(b"\n".join(lines) + (b"\n" if newline else b""))
    try:
        votes = H.unblind(cfg)
    except H.AnswerFileError as e:
        assert str(store) in str(e) and ("re-ingest" in str(e) or "restore" in str(e))
        return
    assert isinstance(votes, pd.DataFrame) and set(votes["vote"]) <= {"GT", "Pred", "Both"}
    assert set(votes["choice"]) <= set(H.CHOICES)


@FUZZ
@given(recorded=JSON)
@example(recorded={"biart": ["x"], "data set": {"a": 1}, "codes test": None})
def test_a_results_files_made_from_record_compares_or_is_ignored(tmp_path, monkeypatch, recorded):
    from lverse_core.pipeline import artefact_ids

    monkeypatch.setenv("LVERSE_WORKDIR", str(tmp_path))  # an empty run: every file is "missing"
    cfg = load_profile("ci")
    changed = artefact_ids.changed(cfg, recorded)
    assert isinstance(changed, list)
    if isinstance(recorded, dict):  # exactly the known names whose recorded id is not the current one
        known = [k for k in recorded if k in artefact_ids.names(cfg)]
        now = artefact_ids.ids(cfg, known)
        assert changed == [k for k in known if recorded[k] != now[k]]
    else:
        assert changed == []
