"""Human-evaluation kit: blinded forms, strict ingestion into an append-only store, un-blinding, bootstrap CIs."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from lverse_core.evaluation import human_eval as H
from lverse_core.config import load_profile


def _study(tmp_path, n=12, form_size=5, raters=3, pred_markup=False):
    cfg = load_profile("ci", reports_dir=str(tmp_path / "reports"),
                       eval={"human_eval_pool": n, "human_eval_form_size": form_size, "human_eval_raters": raters,
                             "bootstrap": 200})
    ids = list(range(100, 100 + n + 3))
    preds = {k: f"pred caption {k}." for k in ids}
    if pred_markup:
        preds[ids[0]] = '<script>alert("x")</script> & <b>bold</b>'
    refs = {k: [f"ground truth {k} a.", f"ground truth {k} b."] for k in ids}
    g = torch.Generator().manual_seed(0)
    images = {k: torch.rand(3, 16, 16, generator=g) * 2 - 1 for k in ids}
    study = H.build_study(cfg, preds, images, refs)
    return cfg, study


def _answer(tmp_path, study, form, choices, name=None, **extra):
    rec = {"version": 1, "study": study["study"], "form_id": form["form_id"], "rater": "t",
           "answers": [{"set_id": s["set_id"], "choice": c} for s, c in zip(form["sets"], choices)], **extra}
    p = tmp_path / (name or f"answers_{form['form_id']}.json")
    p.write_text(json.dumps(rec))
    return p


def test_forms_are_blinded_self_contained_and_keyed(tmp_path):
    cfg, study = _study(tmp_path)
    root = H.study_dir(cfg)
    assert len(study["pool"]) == 12 and len(study["forms"]) == 3
    assert all(len(f["sets"]) == 5 for f in study["forms"])
    _, key = H.load_study(cfg)
    orders = [o for f in key["key"].values() for o in f.values()]
    assert set(orders) == {"gt_first", "pred_first"}  # both orders occur (seeded)
    page = (root / "forms" / f"{study['forms'][0]['form_id']}.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # no network, no CDN
    assert "gt_first" not in page and "pred_first" not in page  # the key is not in the form
    # Same seed, same study.
    _, again = _study(tmp_path / "b")
    assert again["forms"] == study["forms"]


def test_captions_are_html_escaped(tmp_path):
    cfg, study = _study(tmp_path, n=18, form_size=18, raters=1, pred_markup=True)
    page = next((H.study_dir(cfg) / "forms").glob("*.html")).read_text()
    assert "<script>alert" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page


def test_unblinding_a_hand_made_answer_file(tmp_path):
    cfg, study = _study(tmp_path)
    _, key = H.load_study(cfg)
    form = study["forms"][0]
    choices = ["first", "second", "both", "first", "second"]
    H.ingest_answers(cfg, [_answer(tmp_path, study, form, choices)])
    df = H.unblind(cfg)
    assert len(df) == 5
    by_set = {s["set_id"]: s for s in study["pool"]}
    for s, c, (_, row) in zip(form["sets"], choices, df.iterrows()):
        order = key["key"][form["form_id"]][s["set_id"]]
        shown = s["captions"][0 if c == "first" else 1]
        expect = "Both" if c == "both" else ("GT" if shown == by_set[s["set_id"]]["gt"] else "Pred")
        assert row["vote"] == expect
        assert (order == "gt_first") == (s["captions"][0] == by_set[s["set_id"]]["gt"])


@pytest.mark.parametrize("case", ["malformed", "duplicate_set", "duplicate_key", "other_form_sets", "unknown_set",
                                  "missing", "invalid_choice", "other_study", "unknown_form", "not_object",
                                  "unknown_version"])
def test_bad_answer_files_are_refused_and_nothing_is_lost(tmp_path, case):
    cfg, study = _study(tmp_path)
    f0, f1 = study["forms"][0], study["forms"][1]
    good = _answer(tmp_path, study, f1, ["both"] * 5)
    assert H.ingest_answers(cfg, [good])["ingested"] == [good.name]
    before = H.store_path(cfg).read_bytes()
    bad = tmp_path / "bad_answers.json"
    rec = {"version": 1, "study": study["study"], "form_id": f0["form_id"],
           "answers": [{"set_id": s["set_id"], "choice": "first"} for s in f0["sets"]]}
    if case == "malformed":
        bad.write_text('{"study": ')
    elif case == "not_object":
        bad.write_text("[1, 2]")
    else:
        if case == "duplicate_set":
            rec["answers"][1]["set_id"] = rec["answers"][0]["set_id"]
        elif case == "other_form_sets":
            other = [s["set_id"] for s in f1["sets"] if s["set_id"] not in {x["set_id"] for x in f0["sets"]}]
            rec["answers"][0]["set_id"] = other[0]
        elif case == "unknown_set":
            rec["answers"][0]["set_id"] = "s9999"
        elif case == "missing":
            rec["answers"].pop()
        elif case == "invalid_choice":
            rec["answers"][2]["choice"] = "neither"
        elif case == "other_study":
            rec["study"] = "0123456789ab"
        elif case == "unknown_form":
            rec["form_id"] = "nope"
        elif case == "unknown_version":  # used to be ingested
            rec["version"] = 2
        text = json.dumps(rec)
        if case == "duplicate_key":
            text = text.replace('"version": 1', '"version": 1, "form_id": "x"')
        bad.write_text(text)
    fresh = _answer(tmp_path, study, study["forms"][2], ["first"] * 5)
    with pytest.raises(H.AnswerFileError, match="bad_answers.json") as e:
        H.ingest_answers(cfg, [fresh, bad])
    assert "nothing was ingested" in str(e.value)
    assert H.store_path(cfg).read_bytes() == before  # the earlier answers are intact, the batch added nothing
    assert len(H.unblind(cfg)) == 5


def test_error_messages_say_what_is_wrong(tmp_path):
    cfg, study = _study(tmp_path)
    f0, f1 = study["forms"][0], study["forms"][1]
    p = _answer(tmp_path, study, f0, ["first", "first", "first", "first", "maybe"])
    with pytest.raises(H.AnswerFileError, match="invalid choice 'maybe'"):
        H.ingest_answers(cfg, [p])
    p = _answer(tmp_path, study, f0, ["first"] * 4)
    with pytest.raises(H.AnswerFileError, match="not answered"):
        H.ingest_answers(cfg, [p])
    rec = json.loads(_answer(tmp_path, study, f1, ["first"] * 5).read_text())
    rec["form_id"] = f0["form_id"]
    p.write_text(json.dumps(rec))
    with pytest.raises(H.AnswerFileError, match="another form"):
        H.ingest_answers(cfg, [p])


def test_reingesting_is_idempotent_and_a_second_rater_file_for_a_form_is_refused(tmp_path):
    cfg, study = _study(tmp_path)
    form = study["forms"][0]
    p = _answer(tmp_path, study, form, ["first"] * 5)
    assert H.ingest_answers(cfg, [p]) == {"ingested": [p.name], "already": []}
    assert H.ingest_answers(cfg, [p]) == {"ingested": [], "already": [p.name]}
    assert len(H.read_store(cfg)) == 1
    q = _answer(tmp_path, study, form, ["second"] * 5, name="other.json")
    with pytest.raises(H.AnswerFileError, match="already has answers"):
        H.ingest_answers(cfg, [q])
    assert len(H.unblind(cfg)) == 5


def test_bootstrap_ci_contains_estimate_and_narrows():
    rng = np.random.default_rng(0)
    small = rng.choice(["GT", "Pred", "Both"], size=60, p=[0.6, 0.25, 0.15])
    big = rng.choice(["GT", "Pred", "Both"], size=2400, p=[0.6, 0.25, 0.15])
    s, b = H.vote_shares(small, 500, seed=1), H.vote_shares(big, 500, seed=1)
    for df in (s, b):
        assert ((df["ci_low"] <= df["share"]) & (df["share"] <= df["ci_high"])).all()
        row = df.set_index("vote")
        assert row.loc["Pred + Both", "share"] == pytest.approx(row.loc["Pred", "share"] + row.loc["Both", "share"])
    width_s = (s["ci_high"] - s["ci_low"]).to_numpy()
    width_b = (b["ci_high"] - b["ci_low"]).to_numpy()
    assert (width_b < width_s / 3).all()  # ~ 1/sqrt(40) narrower
    with pytest.raises(ValueError, match="no votes"):
        H.vote_shares([], 10)


def test_bootstrap_by_set_widens_the_interval_when_raters_agree_on_each_set():
    import pandas as pd

    rng = np.random.default_rng(0)
    per_set = rng.choice(["GT", "Both"], size=40)  # 40 sets, each voted the same way by all 10 raters
    df = pd.DataFrame([{"set_id": f"s{i}", "rater": f"r{r}", "vote": v} for i, v in enumerate(per_set)
                       for r in range(10)])
    naive = H.vote_shares(df["vote"].tolist(), 2000, seed=0).set_index("vote")
    clustered = H.vote_shares(df, 2000, seed=0).set_index("vote")
    width = lambda t: t.loc["Both", "ci_high"] - t.loc["Both", "ci_low"]  # noqa: E731
    # 400 votes but only 40 independent sets: the honest interval is about sqrt(10) ~ 3.2x wider
    assert 2.3 < width(clustered) / width(naive) < 4.5
    assert clustered.loc["Both", "share"] == naive.loc["Both", "share"]
    assert clustered.loc["Both", "n_sets"] == 40 and clustered.loc["Both", "n_raters"] == 10


def test_caption_score_and_the_simulated_choice():
    import random

    objs = [{"size": "small", "colour": "red", "shape": "circle"}, {"size": "large", "colour": "blue", "shape": "square"}]
    assert H.caption_score("a small red circle and a large blue square.", objs) == 1.0
    assert H.caption_score("a small red circle and a large green square.", objs) == 0.5
    assert H.caption_score("a small red circle.", objs) == 0.5
    assert H.caption_score("nothing here.", objs) == 0.0
    rng = random.Random(0)
    assert H.simulated_choice([1.0, 0.5], strictness=0.5, lapse=0.0, rng=rng) == "both"
    assert H.simulated_choice([1.0, 0.5], strictness=0.9, lapse=0.0, rng=rng) == "first"
    assert H.simulated_choice([0.5, 1.0], strictness=0.9, lapse=0.0, rng=rng) == "second"
    assert H.simulated_choice([0.0, 0.5], strictness=0.9, lapse=0.0, rng=rng) == "second"  # neither: the better
    lapses = [H.simulated_choice([1.0, 0.0], strictness=0.9, lapse=1.0, rng=rng) for _ in range(300)]
    assert set(lapses) == set(H.CHOICES)


def test_simulated_raters_end_to_end(tmp_path, synth_dataset):
    synth_cfg = synth_dataset
    from lverse_core import data

    recs = data.caption_records(synth_cfg, "test")
    attrs = data.load_attributes(synth_cfg)
    refs = {r["image_id"]: r["captions"] for r in recs}
    # "Predictions": the right caption for half of the images, another image's caption for the rest.
    ids = sorted(refs)
    preds = {k: (refs[k][1] if i % 2 == 0 else refs[ids[(i + 1) % len(ids)]][0]) for i, k in enumerate(ids)}
    images = {r["image_id"]: r["path"] for r in recs}
    cfg = load_profile("ci", reports_dir=str(tmp_path / "reports"), data={"root": str(synth_cfg.data_root)})
    study = H.build_study(cfg, preds, images, refs)
    files = H.simulate_raters(cfg, attrs, tmp_path / "inbox", lapse=0.3)  # 24 votes: lapses often enough to see
    assert len(files) == cfg.eval.human_eval_raters
    assert all(json.loads(f.read_text())["simulated"] for f in files)
    H.ingest_answers(cfg, files)
    df = H.unblind(cfg)
    assert df["simulated"].all() and len(df) == cfg.eval.human_eval_raters * cfg.eval.human_eval_form_size
    shares = H.vote_shares(df, cfg.eval.bootstrap).set_index("vote")
    # GT captions are always right: Pred alone comes only from lapses; Both needs a prediction that (nearly) names
    # the scene
    assert set(df["vote"]) == {"GT", "Pred", "Both"}
    assert 0 < shares.loc["Pred", "share"] < shares.loc["GT", "share"] and 0.2 < shares.loc["Both", "share"] < 0.8
    assert shares.loc["Pred + Both", "n_sets"] == len(set(df["set_id"]))
    fig = H.figure7(H.vote_shares(df, 100), simulated=True)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()] + [fig.axes[0].get_title()]
    assert any("L-Verse paper" in t and "30.4" in t for t in texts)
    assert any("simulated" in t for t in texts)
    assert len(study["forms"]) == cfg.eval.human_eval_raters


def test_a_different_study_never_orphans_ingested_answers(tmp_path):
    cfg, study = _study(tmp_path)
    H.ingest_answers(cfg, [_answer(tmp_path, study, study["forms"][0], ["both"] * 5)])
    same = H.build_study(cfg, {k: f"pred caption {k}." for k in range(100, 115)},
                         {k: torch.zeros(3, 8, 8) for k in range(100, 115)},
                         {k: [f"ground truth {k} a.", f"ground truth {k} b."] for k in range(100, 115)})
    assert same["study"] == study["study"]  # same inputs: same study, answers still valid
    with pytest.raises(FileExistsError, match="ingested answers"):
        H.build_study(cfg, {k: f"another caption {k}." for k in range(100, 115)},
                      {k: torch.zeros(3, 8, 8) for k in range(100, 115)},
                      {k: [f"ground truth {k} a."] for k in range(100, 115)})
    assert len(H.unblind(cfg)) == 5


def test_a_torn_last_line_of_the_store_blocks_nothing(tmp_path):
    cfg, study = _study(tmp_path)
    H.ingest_answers(cfg, [_answer(tmp_path, study, study["forms"][0], ["first"] * 5)])
    with open(H.store_path(cfg), "ab") as fh:  # an append cut off by a kill (stores of earlier kit versions)
        fh.write(b'{"version": 1, "study": "' + study["study"].encode() + b'", "form_')
    assert len(H.unblind(cfg)) == 5  # the torn line is left out
    H.ingest_answers(cfg, [_answer(tmp_path, study, study["forms"][1], ["second"] * 5)])
    lines = H.store_path(cfg).read_text().splitlines()
    assert [json.loads(line)["form_id"] for line in lines] == [study["forms"][0]["form_id"], study["forms"][1]["form_id"]]
    assert not list(H.store_path(cfg).parent.glob("*.tmp"))


def test_a_damaged_line_inside_the_store_is_named(tmp_path):
    cfg, study = _study(tmp_path)
    H.ingest_answers(cfg, [_answer(tmp_path, study, study["forms"][0], ["first"] * 5)])
    H.ingest_answers(cfg, [_answer(tmp_path, study, study["forms"][1], ["first"] * 5)])
    lines = H.store_path(cfg).read_text().splitlines()
    H.store_path(cfg).write_text(lines[0][:20] + "\n" + lines[1] + "\n")
    with pytest.raises(H.AnswerFileError, match=r"answers.jsonl, line 1: unreadable"):
        H.unblind(cfg)


@pytest.mark.parametrize("edit, words", [
    (lambda r: r.update(form_id="nope"), "form 'nope' is not a form of this study"),  # was a KeyError
    (lambda r: r.update(answers={"s1": "first"}), "'answers' must be a list"),  # was a TypeError
    (lambda r: r["answers"].append("first"), "'answers' must be a list"),
    (lambda r: r["answers"][0].update(set_id=["s1"]), "'answers' must be a list"),
    (lambda r: r.update(version=7), "format version 7, this kit reads version 1"),
])
def test_a_hand_edited_store_record_is_named_not_a_bare_error(tmp_path, edit, words):
    cfg, study = _study(tmp_path)
    H.ingest_answers(cfg, [_answer(tmp_path, study, study["forms"][0], ["first"] * 5)])
    H.ingest_answers(cfg, [_answer(tmp_path, study, study["forms"][1], ["first"] * 5)])
    first, second = [json.loads(line) for line in H.store_path(cfg).read_text().splitlines()]
    edit(second)
    H.store_path(cfg).write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
    with pytest.raises(H.AnswerFileError, match=rf"answers.jsonl, record 2: {words}.*re-ingest"):
        H.unblind(cfg)


@pytest.mark.parametrize("extra, words", [
    ({"simulated": "yes"}, "'simulated' must be of JSON type bool"),
    ({"sha256": "0" * 64}, r"unknown top-level field\(s\) \['sha256'\]"),
    ({"votes": {"GT": 0}}, "unknown top-level field"),
    ({"rater": ["a"]}, "'rater' must be of JSON type string"),
])
def test_answer_files_hold_only_the_known_fields(tmp_path, extra, words):
    cfg, study = _study(tmp_path)
    p = _answer(tmp_path, study, study["forms"][0], ["first"] * 5, **extra)
    with pytest.raises(H.AnswerFileError, match=words):
        H.ingest_answers(cfg, [p])


def test_huge_and_deeply_nested_answer_files_are_refused_cleanly(tmp_path):
    cfg, study = _study(tmp_path)
    huge = tmp_path / "huge.json"
    huge.write_text('{"study": "' + "x" * (H.MAX_ANSWER_BYTES + 10) + '"}')
    with pytest.raises(H.AnswerFileError, match="huge.json: is larger than"):
        H.ingest_answers(cfg, [huge])
    deep = tmp_path / "deep.json"
    deep.write_text('{"study": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(H.AnswerFileError, match="deep.json: nests JSON too deeply"):
        H.ingest_answers(cfg, [deep])
    p = _answer(tmp_path, study, study["forms"][0], ["first"] * 5)
    p.write_text(p.read_text().replace('"choice": "first"', '"choice": ["first"]', 1))
    with pytest.raises(H.AnswerFileError, match="answer 0 must be exactly"):
        H.ingest_answers(cfg, [p])
