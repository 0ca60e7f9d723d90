"""Sampling helpers and CLIP reranking (paper §3.6)."""
import pytest
import torch

from lverse_core.models.biart import BiART, BiARTArgs
from lverse_core.sampling.clip_reranker import (build_small_clip, load_reranker, open_clip, reranker_path, tokenize,
                                               train_clip_reranker)
from lverse_core.config import ConfigError, MissingAssetError, load_profile
from lverse_core.models.decoding import filter_logits, sample_next
from lverse_core.training.loop import CheckpointError, save_checkpoint
from lverse_core.sampling.candidates import (full_length_text, image_to_text, rerank, text_to_image,
                                            truncate_at_full_stop)

DOT, EOT, PAD = 3, 9, 0


def test_top_k_keeps_exactly_k():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(filter_logits(probs.log(), top_p=0.8)).tolist()
    assert kept == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(probs.log(), top_p=0.01)).sum() == 1  # never empty


def test_sample_next_is_seeded_and_greedy_at_zero_temperature():
    logits = torch.randn(4, 50)
    a = sample_next(logits, generator=torch.Generator().manual_seed(1))
    b = sample_next(logits, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(-1))
    assert (sample_next(logits, top_k=1) == logits.argmax(-1)).all()


def test_truncation_cuts_at_the_first_full_stop():
    ids = torch.tensor([[5, 6, DOT, 7, DOT, EOT], [5, 6, 7, 8, 8, 8], [5, EOT, 6, DOT, PAD, PAD], [DOT, 5, 5, 5, 5, 5]])
    cut = truncate_at_full_stop(ids, {DOT}, {EOT, PAD})
    assert cut == [[5, 6, DOT], [5, 6, 7, 8, 8, 8], [5], [DOT]]  # no full stop: the row is kept whole


def test_rerank_picks_the_highest_score():
    scores = torch.tensor([[0.1, 0.9, 0.3], [2.0, -1.0, 1.9]])
    assert rerank(scores).tolist() == [1, 0]
    with pytest.raises(ValueError):
        rerank(torch.zeros(3))


def tiny_model():
    torch.manual_seed(0)
    return BiART(BiARTArgs(n_layer=1, n_head=2, n_embd=16, text_len=6, image_tokens=4, text_vocab=12,
                           image_vocab=10, pad_id=PAD, dropout=0.0)).eval()


def test_text_to_image_returns_the_best_candidate_of_each_prompt():
    m = tiny_model()
    text = torch.randint(1, 12, (3, 6), generator=torch.Generator().manual_seed(0))
    score = lambda codes, caps: codes.float().sum(1)  # a stand-in for CLIP: prefers large codes
    out = text_to_image(m, text, ["a", "b", "c"], n_candidates=5, n_repeats=2, score_fn=score, seed=4, batch_size=4)
    assert out["codes"].shape == (3, 2, 4) and out["scores"].shape == (3, 2, 5)
    assert torch.equal(out["codes"].sum(-1).float(), out["scores"].max(-1).values)
    assert not torch.equal(out["scores"][:, 0], out["scores"][:, 1])  # repeats use different seeds
    again = text_to_image(m, text, ["a", "b", "c"], n_candidates=5, n_repeats=2, score_fn=score, seed=4, batch_size=4)
    assert torch.equal(again["codes"], out["codes"])  # reproducible for a seed
    kept = text_to_image(m, text, ["a", "b", "c"], n_candidates=5, n_repeats=2, score_fn=score, seed=4, batch_size=4,
                         keep_candidates=True)
    assert kept["candidates"].shape == (3, 2, 5, 4) and torch.equal(kept["codes"], out["codes"])
    picked = kept["candidates"].gather(2, kept["chosen"][..., None, None].expand(3, 2, 1, 4)).squeeze(2)
    assert torch.equal(picked, out["codes"]) and torch.equal(kept["chosen"], kept["scores"].argmax(-1))
    assert torch.equal(kept["ranking"], kept["scores"])  # weight 0: the clip-score is the ranking (paper)


def test_text_to_image_with_a_likelihood_weight_keeps_the_candidate_that_explains_its_prompt_best():
    from lverse_core.sampling.candidates import caption_log_likelihood, rerank_scores

    m = tiny_model()
    text = torch.randint(1, 12, (3, 6), generator=torch.Generator().manual_seed(0))
    score = lambda codes, caps: codes.float().sum(1)
    out = text_to_image(m, text, ["a", "b", "c"], n_candidates=5, score_fn=score, seed=4, batch_size=4,
                        keep_candidates=True, likelihood_weight=1.0)
    for p in range(3):
        cands = out["candidates"][p, 0]
        ll = caption_log_likelihood(m, cands, text[p:p + 1].repeat(5, 1))
        want = rerank_scores(out["scores"][p], ll[None], 1.0)
        assert torch.allclose(out["ranking"][p], want)
        assert int(out["chosen"][p, 0]) == int(want.argmax())
    heavy = text_to_image(m, text, ["a", "b", "c"], n_candidates=5, score_fn=score, seed=4, batch_size=4,
                          keep_candidates=True, likelihood_weight=1000.0)
    for p in range(3):  # a huge weight: BiART's likelihood of the prompt alone decides
        ll = caption_log_likelihood(m, heavy["candidates"][p, 0], text[p:p + 1].repeat(5, 1))
        assert int(heavy["chosen"][p, 0]) == int(ll.argmax())


class FakeTokenizer:
    eot_id, pad_id, full_stop_ids = EOT, PAD, {DOT}

    def decode(self, ids):
        return [" ".join(str(int(t)) for t in row) for row in ids]


def test_image_to_text_keeps_truncated_and_full_caption_of_the_same_candidate():
    m = tiny_model()
    codes = torch.randint(0, 10, (2, 4), generator=torch.Generator().manual_seed(0))
    score = lambda owner, texts: torch.tensor([float(len(t)) for t in texts])  # prefers long captions
    out = image_to_text(m, FakeTokenizer(), codes, n_candidates=4, n_tokens=6, score_fn=score, seed=1,
                        keep_candidates=True)
    assert len(out["truncated"]) == 2 and out["scores"].shape == (2, 4)
    for p in range(2):
        assert out["truncated"][p] == max(out["candidates"][p], key=len)
        assert out["full"][p].startswith(out["truncated"][p])


def test_untruncated_caption_is_the_full_length_sample_not_the_text_before_eot():
    ids = torch.tensor([[5, 6, DOT, EOT, 5, 6, DOT, PAD], [EOT, PAD, 7, 8, PAD, PAD, PAD, PAD]])
    assert full_length_text(ids, {EOT, PAD}) == [[5, 6, DOT, 5, 6, DOT], [7, 8]]
    m = tiny_model()  # text_len 6
    codes = torch.randint(0, 10, (3, 4), generator=torch.Generator().manual_seed(0))
    short = image_to_text(m, FakeTokenizer(), codes, n_candidates=2, n_tokens=3, seed=4)
    long = image_to_text(m, FakeTokenizer(), codes, n_candidates=2, n_tokens=6, seed=4)
    # the full row always runs to text_len; the truncated row sees only the first n_tokens of the same draw
    assert short["full"] == long["full"]
    assert all(len(f.split()) > len(t.split()) for f, t in zip(short["full"], short["truncated"]) if t.split())
    sample = m.generate_text(codes.repeat_interleave(2, 0), 6, generator=torch.Generator().manual_seed(4))
    want = [" ".join(map(str, r)) for r in full_length_text(sample, {EOT, PAD})]
    assert short["full"] == [want[0], want[2], want[4]]  # no scorer: candidate 0 of each prompt
    with pytest.raises(ValueError, match="caption_tokens"):
        image_to_text(m, FakeTokenizer(), codes, n_candidates=2, n_tokens=7)


def test_small_clip_round_trips_through_clip_load_and_ranks(tmp_path):
    cfg = load_profile("ci", runs_dir=str(tmp_path), **{"clip.train_steps": 30})
    colours = ["red", "green", "blue"]
    g = torch.Generator().manual_seed(0)
    ds = []
    for i in range(48):
        img = torch.full((3, 32, 32), -1.0)
        img[i % 3] = 1.0
        ds.append({"image": img + 0.1 * torch.randn(3, 32, 32, generator=g), "captions": [f"a {colours[i % 3]} square."]})
    train_clip_reranker(cfg, ds)
    scorer = load_reranker(cfg)  # through open_clip(path) on the CPU
    imgs = torch.stack([d["image"] for d in ds[:3]])
    scores = torch.stack([scorer.score(imgs, [f"a {c} square."] * 3) for c in colours])  # (text, image)
    assert rerank(scores.T).tolist() == [0, 1, 2]  # each image prefers its own colour


class _CountingImages:
    """Eight images with exact uint8 levels (as the eval transform gives); counts how often each is read."""

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.images = torch.randint(0, 256, (8, 3, 32, 32), generator=g).float() / 127.5 - 1
        self.reads = [0] * 8

    def __len__(self):
        return 8

    def __getitem__(self, i):
        self.reads[i] += 1
        return {"image": self.images[i].clone(), "captions": [f"scene {i}."]}


def test_clip_training_reads_each_image_once_and_keeps_it_exactly(tmp_path, monkeypatch):
    import lverse_core.sampling.clip_reranker as cr

    cfg = load_profile("ci", runs_dir=str(tmp_path), **{"clip.train_steps": 6, "clip.batch_size": 4})
    ds = _CountingImages()
    seen = []
    real = cr.clip_pixels
    monkeypatch.setattr(cr, "clip_pixels", lambda images, res: seen.append(images.clone()) or real(images, res))
    cr.train_clip_reranker(cfg, ds)
    assert ds.reads == [1] * 8  # 6 steps x 4 draws = 24 reads without the kept copies
    sampler = cr.StepSampler(8, 4, cfg.seed)
    for step, images in enumerate(seen):  # the kept uint8 copy gives back exactly the dataset's image
        assert torch.equal(images, ds.images[sampler.indices(step)])


def test_reranker_config_and_assets_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="transformer_width // 64"):
        build_small_clip(load_profile("ci", **{"clip.transformer_heads": 2}))
    cfg = load_profile("paper", **{"assets.clip_vit_b32": str(tmp_path / "nope.pt")})
    with pytest.raises(MissingAssetError, match="clip_vit_b32"):
        load_reranker(cfg)
    with pytest.raises(FileNotFoundError, match="train the CLIP reranker"):
        load_reranker(load_profile("ci", runs_dir=str(tmp_path)))


class _Payload:
    """A pickle that creates a marker file when unpickled: what a crafted weights file could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_reranker_files_are_read_without_running_pickles(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # would make a bare torch.load unpickle anything
    marker = tmp_path / "pwned"
    cfg = load_profile("ci", runs_dir=str(tmp_path))
    torch.save({"visual.proj": torch.zeros(1), "evil": _Payload(marker)}, reranker_path(cfg))
    with pytest.raises(CheckpointError, match="clip_reranker.pt"):
        load_reranker(cfg)
    assert not marker.exists()
    # the paper profile's OpenAI file (LVERSE_CLIP_WEIGHTS) goes through the same reader
    monkeypatch.setenv("LVERSE_CLIP_WEIGHTS", str(reranker_path(cfg)))
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_reranker(load_profile("paper"))
    assert not marker.exists()


def test_truncated_or_foreign_reranker_files_name_the_file(tmp_path):
    cfg = load_profile("ci", runs_dir=str(tmp_path))
    path = reranker_path(cfg)
    save_checkpoint(path, build_small_clip(cfg).state_dict())
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=f"{path}.*truncated"):
        load_reranker(cfg)
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_reranker(cfg)
    with pytest.raises(CheckpointError, match="not a CLIP model"):
        open_clip(path)


def test_openai_style_torchscript_archives_still_load(tmp_path):
    cfg = load_profile("ci", runs_dir=str(tmp_path))
    torch.manual_seed(0)
    model = build_small_clip(cfg).eval()
    img, txt = torch.randn(1, 3, 32, 32), tokenize(["a red square."], cfg.clip.context_length)
    torch.jit.save(torch.jit.trace(model, (img, txt), check_trace=False), str(tmp_path / "jit.pt"))
    loaded = open_clip(tmp_path / "jit.pt")
    with torch.no_grad():  # build_model stores weights in fp16 (as clip.load does): equal to fp16 rounding
        cos = torch.cosine_similarity(loaded.encode_image(img), model.encode_image(img))
    assert cos.item() > 0.999


def test_a_reranker_of_another_architecture_is_refused(tmp_path):
    from lverse_core.sampling.clip_reranker import ensure_reranker

    smoke = load_profile("smoke", runs_dir=str(tmp_path))
    ci = load_profile("ci", runs_dir=str(tmp_path))  # same runs dir: the smoke file is where ci looks
    save_checkpoint(reranker_path(ci), build_small_clip(smoke).state_dict())
    with pytest.raises(CheckpointError, match=r"another architecture.*'ci'.*file \(128,\) vs config \(64,\).*re-run notebooks/02"):
        load_reranker(ci)
    with pytest.raises(CheckpointError, match="another architecture"):
        ensure_reranker(ci)  # not reused as if it were ci's
    save_checkpoint(reranker_path(ci), build_small_clip(ci).state_dict())
    from lverse_core import provenance
    from lverse_core.sampling.clip_reranker import reranker_made_from

    with pytest.raises(CheckpointError, match="may be stale: it has no record"):
        load_reranker(ci)  # ci's architecture, but nothing says it was trained on this run's data
    provenance.record(reranker_path(ci), reranker_made_from(ci))  # as train_clip_reranker records it
    assert ensure_reranker(ci) == reranker_path(ci)
    load_reranker(ci)
    with pytest.raises(CheckpointError, match="not OpenAI CLIP ViT-B/32"):
        load_reranker(load_profile("paper", **{"assets.clip_vit_b32": str(reranker_path(ci))}))
