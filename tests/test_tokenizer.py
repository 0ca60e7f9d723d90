"""The text tokenizer: CLIP BPE ids, fixed length, round trip, compact vocabulary, save/load."""
import json
import warnings

import pytest
import torch

from lverse_core.data import shapes_dataset
from lverse_core.config import load_profile
from lverse_core.data.tokenizer import FULL_VOCAB, TextTokenizer

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import clip


@pytest.fixture(scope="module")
def captions(tmp_path_factory):
    cfg = load_profile("ci", **{"data.root": str(tmp_path_factory.mktemp("tok") / "ci"), "data.ood_images": 0})
    root = shapes_dataset.ensure_dataset(cfg)
    tree = json.loads((root / "dataset_coco.json").read_text())
    return cfg, [s["raw"] for im in tree["images"] for s in im["sentences"]]


def test_round_trip_on_every_generated_caption(captions):
    cfg, caps = captions
    for compact in (True, False):
        tok = TextTokenizer.build(load_profile("ci", **{"biart.compact_vocab": compact}), caps)
        assert max(tok.lengths(caps)) < tok.text_len  # ci's text_len holds every caption
        assert tok.decode(tok.encode(caps)) == caps


def test_full_vocabulary_ids_are_clips(captions):
    cfg, caps = captions
    tok = TextTokenizer(64)
    assert tok.vocab_size == FULL_VOCAB == 49408
    ours = tok.encode(caps[:50])
    ref = clip.tokenize(caps[:50], context_length=65)  # [sot, ids..., eot, 0...]
    for row, r in zip(ours, ref):
        n = int((row != tok.pad_id).sum())
        assert torch.equal(row[:n], r[1:n + 1])
        assert row[n - 1] == tok.eot_id == 49407
    assert tok.pad_id not in set(ours[ours != tok.pad_id].tolist())


@pytest.mark.parametrize("text", ["Ünïcode &amp; fish", "a  tab\there", "CAPS, and it's <|endoftext|> ok",
                                  "émoji \U0001f642 x", "\x07bell", "fi ligature \ufb01", "a&b", "  ", "Mr. O'Neil's"])
def test_fast_bpe_equals_clip_on_odd_text(text):
    from lverse_core.data.tokenizer import bpe_ids, clip_bpe

    assert bpe_ids(text) == clip_bpe().encode(text)


def test_padding_truncation_and_eot(captions):
    cfg, caps = captions
    tok = TextTokenizer.build(cfg, caps)
    ids = tok.encode(["a red circle.", " ".join(["a large blue square"] * 20) + "."])
    assert ids.shape == (2, cfg.biart.text_len) and ids.dtype == torch.long
    n = tok.lengths(["a red circle."])[0]
    assert ids[0, n] == tok.eot_id and (ids[0, n + 1:] == tok.pad_id).all()
    assert ids[1, -1] == tok.eot_id and (ids[1] != tok.pad_id).all()  # truncated, still ends with eot
    assert tok.decode(ids[1])[0].startswith("a large blue square a large blue square")
    # decode stops at the first eot even if tokens follow it
    row = ids[0].clone()
    row[n + 1:n + 3] = ids[1, :2]
    assert tok.decode(row) == ["a red circle."]


def test_compact_vocabulary(captions):
    cfg, caps = captions
    tok = TextTokenizer.build(cfg, caps)
    assert tok.compact and tok.vocab_size < 100
    ids = tok.encode(caps)
    assert ids.max() < tok.vocab_size and ids.min() >= 0
    assert (tok.pad_id, tok.eot_id, tok.unk_id) == (0, 1, 2)
    unknown = tok.encode(["a small zebra."])[0]
    assert tok.unk_id in unknown.tolist()
    assert tok.decode(unknown) == ["a small <unk>."]
    # the full stop ids end sentences in both vocabularies
    full = TextTokenizer(cfg.biart.text_len)
    for t in (tok, full):
        dot = t.encode(["."])[0, 0].item()
        assert dot in t.full_stop_ids and len(t.full_stop_ids) == 3
    with pytest.raises(ValueError, match="no captions"):
        TextTokenizer.build(cfg, [])


def test_decode_spacing_and_non_ascii():
    tok = TextTokenizer(32)
    text = "two objects: a red circle, and it's big. déjà vu?"
    assert tok.decode(tok.encode([text])) == [text]
    assert tok.decode(torch.tensor([[tok.eot_id, 5, 6]])) == [""]


def test_save_load(captions, tmp_path):
    cfg, caps = captions
    tok = TextTokenizer.build(cfg, caps)
    path = tok.save(tmp_path / "sub" / "tokenizer.json")
    back = TextTokenizer.load(path)
    assert back.vocab_size == tok.vocab_size and back.text_len == tok.text_len
    assert torch.equal(back.encode(caps), tok.encode(caps))
    full = TextTokenizer.load(TextTokenizer(16).save(tmp_path / "full.json"))
    assert not full.compact and full.vocab_size == FULL_VOCAB
    (tmp_path / "bad.json").write_text("{\"format\": \"something else\"}")
    with pytest.raises(ValueError, match="not a lverse-text-tokenizer"):
        TextTokenizer.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        TextTokenizer.load(tmp_path / "absent.json")
    with pytest.raises(ValueError, match="text_len"):
        TextTokenizer(1)


def test_token_text_names_specials_and_bpe_pieces():
    from lverse_core.data.tokenizer import TextTokenizer

    tok = TextTokenizer(8, bpe_ids=None)
    ids = tok.encode("a red circle.")[0].tolist()
    words = [tok.token_text(i) for i in ids]
    assert words[:5] == ["a ", "red ", "circle ", ". ", "<eot>"] and words[-1] == "<pad>"
    compact = TextTokenizer(8, bpe_ids=tok.bpe_encode("a red circle."))
    assert [compact.token_text(i) for i in compact.encode("a red square")[0].tolist()][:3] == ["a ", "red ", "<unk>"]
