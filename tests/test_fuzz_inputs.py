"""Property tests (hypothesis) for every input kind: arbitrary bytes, JSON and strings give a valid result or the
kit's own error type naming the input, never another exception.

Bounded and deterministic: ``derandomize=True`` draws the same examples on every run (no example database
needed) and each property runs at most ``MAX_EXAMPLES`` examples, a few seconds for the whole file.
Function-scoped fixtures (``tmp_path``) are shared by the examples of one test: each example overwrites the
one input file it reads, so nothing carries over between examples.
"""
from __future__ import annotations

import io
import json
from functools import lru_cache

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from lverse_core.config import CHOICES as CONFIG_CHOICES, INT_MAX, RANGES, RESERVED_OVERRIDES, Config, ConfigError
from lverse_core.config import load_profile, load_run_config
from lverse_core.config import schema
from lverse_core.data.loaders import BadInputError, karpathy_records, load_image, read_cc3m_tsv
from lverse_core.data.tokenizer import TextTokenizer
from lverse_core.evaluation.human_eval import CHOICES, AnswerFileError, validate_answer_file

MAX_EXAMPLES = 150
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# -- strategies ----------------------------------------------------------------------------------------------------
# Odd strings the readers must refuse or keep inside their roots: path escapes, NUL, BOM, tabs, non-ASCII.
ODD = st.sampled_from(["", "x", "../../etc", "/etc/passwd", "C:\\x", "a\tb", "\x00", "\ufeff", "é", "train",
                       "test", "12", "<|endoftext|>"])
TEXT = ODD | st.text(max_size=12)
# Any JSON value, NaN and +-inf included (json.dumps writes them, json.loads reads them back).
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8)


def _png(size=(20, 20), mode="RGB", fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 200 if mode in ("L", "P", "I", "I;16", "1", "F") else None).save(buf, fmt)
    return buf.getvalue()


GOOD_PNG = _png()
# Image files the decoder accepts (mode, format pairs Pillow can write), of any size down to 1x1.
IMAGE_KINDS = [("RGB", "PNG"), ("RGBA", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("1", "PNG"),
               ("I;16", "PNG"), ("I", "TIFF"), ("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("P", "GIF"),
               ("RGB", "BMP"), ("F", "TIFF"), ("I;16", "TIFF"), ("RGBA", "TIFF"), ("RGB", "WEBP")]


@st.composite
def image_bytes(draw):
    """(file bytes, size or None): a whole image of any mode and size, a cut or bit-flipped PNG, random bytes."""
    how = draw(st.sampled_from(["whole", "cut", "flip", "random"]))
    if how == "whole":
        mode, fmt = draw(st.sampled_from(IMAGE_KINDS))
        size = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
        return _png(size, mode, fmt), size
    if how == "cut":
        return GOOD_PNG[: draw(st.integers(0, len(GOOD_PNG)))], None
    if how == "flip":
        b = bytearray(GOOD_PNG)
        for pos, byte in draw(st.lists(st.tuples(st.integers(0, len(b) - 1), st.integers(0, 255)), min_size=1,
                                       max_size=8)):
            b[pos] = byte
        return bytes(b), None
    return draw(st.binary(max_size=300)), None


def _karpathy_entry(i: int) -> dict:
    return {"filepath": "test", "filename": f"{i}.png", "split": "test", "cocoid": i,
            "sentences": [{"raw": f"caption {i}."}]}


KARPATHY_KEYS = st.sampled_from(["filepath", "filename", "split", "cocoid", "sentences", "imgid"]) | TEXT


@st.composite
def karpathy_file(draw):
    """A Karpathy JSON (bytes): valid entries with some keys replaced by any JSON value or removed; rarely any
    JSON or any bytes."""
    rare = draw(st.integers(0, 9))
    if rare == 0:
        return json.dumps(draw(JSON)).encode()
    if rare == 1:
        return draw(st.binary(max_size=100))
    images = [_karpathy_entry(i) for i in range(draw(st.integers(0, 3)))]
    for victim, key, value, drop in draw(st.lists(st.tuples(st.integers(0, 2), KARPATHY_KEYS, JSON | ODD,
                                                            st.booleans()), max_size=3)):
        if victim < len(images):
            if drop:
                images[victim].pop(key, None)
            else:
                images[victim][key] = value
    return json.dumps({"images": images}).encode()


# CC3M rows are built from the pieces that matter to a TSV reader, mixed with any text.
TSV_PIECES = st.sampled_from(["a cat.", "\t", "img/1.png", "\n", "\r\n", "../x", "/abs", "\ufeff", "é", "\x00", " "])
TSV_TEXT = st.lists(TSV_PIECES | st.text(max_size=6), max_size=20).map("".join)

CONFIG_KEYS = st.sampled_from(sorted(RANGES) + sorted(CONFIG_CHOICES)
                              + ["eval.t2i_split", "claims.seeds", "profile", "nope.x", "data", "augvae.nope", "seed.x",
                                 ""]) | TEXT
# Numbers near the range bounds, where off-by-one and NaN bugs live, plus any JSON value.
CONFIG_VALUES = st.sampled_from([0, 1, 2, -1, 0.5, 1.0, 1.5, 64, 2**63]) | JSON
# OVERRIDES as a user may write them: the reserved keys (profile, folders, assets) among any keys, whole sections,
# folder-like strings and format fields, and values nested far deeper than any profile.
DEEP = st.tuples(st.integers(1, 2000), st.sampled_from(["dict", "list"])).map(
    lambda t: __import__("functools").reduce(lambda acc, _: {"x": acc} if t[1] == "dict" else [acc], range(t[0]), 1))
OVERRIDE_KEYS = CONFIG_KEYS | st.sampled_from(sorted(RESERVED_OVERRIDES) + ["data", "assets", "augvae_train",
                                                                         "runs_dir.x", "data.root.x"])
OVERRIDE_VALUES = (CONFIG_VALUES | DEEP | st.sampled_from(["../../x", "/tmp", "{0}", "{profile.__class__}", "smoke",
                                                            float("inf"), -float("inf"), 2**31, 2**70]))


@st.composite
def answer_file(draw):
    """An answer file (bytes): a valid one with one field (top level or of one answer) replaced by any JSON value
    or removed; rarely any JSON or any bytes."""
    rec = {"version": 1, "study": "abc123", "form_id": "f1", "rater": "r",
           "answers": [{"set_id": f"s{i}", "choice": "first"} for i in range(3)]}
    rare = draw(st.integers(0, 9))
    if rare == 0:
        return json.dumps(draw(JSON)).encode()
    if rare == 1:
        return draw(st.binary(max_size=100))
    target = draw(st.sampled_from([rec] + rec["answers"]))
    key = draw(st.sampled_from(sorted(target) + ["simulated", "extra", "set_id", "choice"]) | TEXT)
    if draw(st.booleans()):
        target.pop(key, None)
    else:
        target[key] = draw(JSON | st.sampled_from(["first", "second", "s1", "s9", "f2", "abc123"]))
    return json.dumps(rec).encode()


STUDY = {"study": "abc123", "forms": [{"form_id": "f1", "sets": [{"set_id": f"s{i}"} for i in range(3)]},
                                      {"form_id": "f2", "sets": [{"set_id": "s9"}]}]}


# -- properties ----------------------------------------------------------------------------------------------------
@FUZZ
@given(file=image_bytes(), min_side=st.integers(1, 24))
def test_image_loader_on_arbitrary_bytes(tmp_path, file, min_side):
    data, size = file
    path = tmp_path / "x.png"
    path.write_bytes(data)
    try:
        img = load_image(path, min_side)
    except BadInputError as e:
        assert str(path) in str(e)
        assert size is None or min(size) < min_side  # a whole image is refused only for being too small
        return
    assert img.mode == "RGB" and min(img.size) >= min_side and size in (None, img.size)
    img.tobytes()  # fully decoded: nothing deferred that could fail later in a data loader


@FUZZ
@given(content=karpathy_file())
def test_karpathy_reader_on_arbitrary_json(tmp_path, content):
    path = tmp_path / "k.json"
    path.write_bytes(content)
    try:
        recs = karpathy_records(path, tmp_path)
    except BadInputError as e:
        assert str(path) in str(e)
        return
    for r in recs:
        assert isinstance(r["image_id"], int) and not isinstance(r["image_id"], bool) and r["image_id"] >= 0
        assert r["path"].is_relative_to(tmp_path) and ".." not in r["path"].relative_to(tmp_path).parts
        assert all(isinstance(c, str) for c in r["captions"])
    assert len({r["image_id"] for r in recs}) == len(recs)


@FUZZ
@given(content=st.binary(max_size=80) | TSV_TEXT.map(lambda s: s.encode("utf-8")))
def test_cc3m_reader_on_arbitrary_text(tmp_path, content):
    path = tmp_path / "c.tsv"
    path.write_bytes(content)
    try:
        recs = read_cc3m_tsv(path)
    except BadInputError as e:
        assert str(path) in str(e)
        return
    assert [r["image_id"] for r in recs] == list(range(len(recs)))
    for r in recs:
        assert r["path"].is_relative_to(tmp_path) and ".." not in r["path"].relative_to(tmp_path).parts
        (caption,) = r["captions"]
        assert "\t" not in caption and "\n" not in caption and not caption.startswith("\ufeff")


@FUZZ
@given(over=st.dictionaries(CONFIG_KEYS, CONFIG_VALUES, min_size=1, max_size=3))
@example(over={"C:\\x": {"": None, "../../etc": None}})  # the message quotes the key: 'C:\\x...'
def test_config_validator_on_arbitrary_overrides(over):
    try:
        cfg = load_profile("ci", **over)
    except ConfigError as e:
        # The message names an overridden key or its section (cross-checks name the partner key, e.g.
        # biart.n_embd for biart.n_head), as it is or quoted (repr doubles a backslash: 'C:\\x').
        assert any(k.split(".")[0] in str(e) or repr(k.split(".")[0])[1:-1] in str(e) for k in over), (over, str(e))
        return
    assert isinstance(cfg, Config)


@FUZZ
@given(key=st.sampled_from(sorted(RANGES)), value=st.integers() | st.floats() | st.sampled_from([2**63, 10**30]))
@example(key="augvae.n_levels", value=2**63)  # validate() computed 2 ** n_levels: it never returned
def test_config_validator_on_arbitrary_numbers(key, value):
    # Any number for a ranged key: a valid config or a ConfigError; one outside the declared range (NaN
    # included) is a ConfigError that names the key.
    allowed = RANGES[key]
    try:
        load_profile("ci", **{key: value})
    except ConfigError as e:
        if value != value or value not in allowed:
            assert key in str(e)
        return
    assert value == value and value in allowed


@FUZZ
@given(over=st.dictionaries(OVERRIDE_KEYS, OVERRIDE_VALUES | st.dictionaries(CONFIG_KEYS, OVERRIDE_VALUES, max_size=2),
                            max_size=3))
@example(over={"profile": "smoke"})
@example(over={"data": {"root": "../../elsewhere"}})
@example(over={"seed": [[[[[[[[[[1]]]]]]]]]]})
def test_run_config_on_arbitrary_overrides(tmp_path, monkeypatch, over):
    # A run's config or a ConfigError, never another exception; an accepted run keeps the profile, has every
    # number finite and in range, and its folders are runs/, reports/ (data/) <profile>+<tag> inside the work
    # directory, with overrides.json saying what the tag stands for.
    monkeypatch.setenv("LVERSE_WORKDIR", str(tmp_path))
    flat = {f"{k}.{s}" if isinstance(v, dict) and "." not in k else k: None
            for k, v in over.items() for s in (v if isinstance(v, dict) and "." not in k else [None])}
    try:
        cfg = load_run_config("ci", over)
    except ConfigError:
        return
    assert not any(k == r or k.startswith(r + ".") for k in flat for r in RESERVED_OVERRIDES), over
    assert cfg.profile == "ci"
    for key, allowed in RANGES.items():
        value = schema.get(cfg, key)  # keys of any depth (claims.primaries.claim_1.margin)
        for v in value if isinstance(value, list) else [value]:
            assert v in allowed and (not isinstance(v, int) or v <= INT_MAX), (key, v)
    if not flat:
        assert cfg.runs_root == tmp_path / "runs" / "ci"
        return
    runs = cfg.runs_root
    assert runs.parent == tmp_path / "runs" and runs.name.startswith("ci+")
    assert cfg.reports_root == tmp_path / "reports" / runs.name
    assert cfg.data_root.parent == tmp_path / "data" and cfg.data_root.name in ("ci", runs.name)
    assert json.loads((runs / "overrides.json").read_text())["tag"] == runs.name[3:]


RESULT_NAMES = st.sampled_from(["table1_reconstruction", "table2", "table3", "02_biart", "06_human_eval", "other"])
# Any JSON, or a declared headline (report.headline_number's shape) with any field replaced by any JSON
HEADLINE = st.fixed_dictionaries({"label": TEXT | JSON, "value": st.floats() | JSON, "interval": JSON,
                                  "unit": TEXT | JSON, "digits": st.integers(-3, 30) | JSON})
RESULT_JSON = JSON | st.fixed_dictionaries({"headline": st.lists(HEADLINE, max_size=3) | JSON})


@FUZZ
@given(results=st.dictionaries(RESULT_NAMES, st.binary(max_size=40) | RESULT_JSON.map(lambda v: json.dumps(v).encode()),
                               max_size=3),
       captions=st.binary(max_size=40) | JSON.map(lambda v: json.dumps(v).encode()),
       manifest=JSON)
@example(results={"02_biart": b'{"headline": [{"label": "\\ud800", "value": 1}]}', "table3": b"[1]"},
         captions=b'{"x": {"caption": 1}}', manifest={"notebooks": [{"name": 1, "seconds": "2"}]})
def test_index_on_arbitrary_results_captions_and_manifest(tmp_path, monkeypatch, results, captions, manifest):
    # write_index always writes the page: what it cannot read is marked unreadable, never an exception
    from lverse_core.pipeline import index_page, results_page

    monkeypatch.setenv("LVERSE_WORKDIR", str(tmp_path))
    cfg = load_profile("ci")
    root = cfg.reports_root
    (root / "results").mkdir(parents=True, exist_ok=True)
    for old in (root / "results").glob("*.json"):
        old.unlink()
    for name, content in results.items():
        (root / "results" / f"{name}.json").write_bytes(content)
    (root / "captions.json").write_bytes(captions)
    (root / "manifest.json").write_text(json.dumps(manifest if not isinstance(manifest, dict) else
                                                   {"profile": "ci", **manifest}))
    page = index_page.write_index(cfg).read_text()
    assert page.startswith("<!doctype html>") and page.endswith("</html>")
    try:  # RESULTS.md likewise: written with what it can read, or a ResultsError for a manifest it cannot
        text = results_page.results_markdown(cfg)
    except results_page.ResultsError as e:
        assert "manifest.json" in str(e)
    else:
        assert text.startswith("# Results: profile `ci`")


@lru_cache(maxsize=None)
def _tokenizer(compact: bool, text_len: int) -> TextTokenizer:
    # Cheap to build: the compact vocabulary comes from two captions, so most words encode to unk there.
    if not compact:
        return TextTokenizer(text_len)
    cfg = load_profile("ci", **{"biart.text_len": text_len, "biart.compact_vocab": True})
    return TextTokenizer.build(cfg, ["a red circle.", "two blue squares!"])


# Any code point, lone surrogates included (a JSON "\ud800" escape decodes to one), plus HTML entities and
# CLIP's special-token text, which the cleaning in bpe_ids handles.
ANY_CHAR = st.characters(codec=None, categories=None) | st.sampled_from(list("\ud800\udcff&#;<|"))


@FUZZ
@given(compact=st.booleans(), text_len=st.integers(2, 80),
       texts=st.lists(st.text(ANY_CHAR, max_size=200) | ODD, min_size=1, max_size=4))
@example(compact=False, text_len=2, texts=["a\ud800b <|endoftext|> &#xd800; \x00"])  # always tried: the odd cases
def test_tokenizer_on_arbitrary_strings(compact, text_len, texts):
    # Strings never raise (encode refuses only non-strings): every row is ids in the vocabulary, eot, padding.
    tok = _tokenizer(compact, text_len)
    ids = tok.encode(texts)
    assert ids.shape == (len(texts), text_len) and ids.dtype == torch.long
    assert int(ids.min()) >= 0 and int(ids.max()) < tok.vocab_size
    for row in ids.tolist():
        n = row.index(tok.eot_id)  # every row holds eot (truncated ones too), then only padding
        assert tok.pad_id not in row[:n] and all(i == tok.pad_id for i in row[n + 1:])
    assert all(isinstance(t, str) for t in tok.decode(ids))


@FUZZ
@given(content=answer_file())
def test_answer_validation_on_arbitrary_json(tmp_path, content):
    path = tmp_path / "answers.json"
    path.write_bytes(content)
    try:
        out = validate_answer_file(path, STUDY)
    except AnswerFileError as e:
        assert str(path) in str(e)
        return
    assert out["form_id"] == "f1" and sorted(a["set_id"] for a in out["answers"]) == ["s0", "s1", "s2"]
    assert all(a["choice"] in CHOICES for a in out["answers"]) and len(out["sha256"]) == 64
