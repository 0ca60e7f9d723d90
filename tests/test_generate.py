"""Sharded generation for Tables 2-3 (lverse_core/generate.py, row_sampler.py) on a tiny random BiART."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from _generate_stubs import RecordingScorer, StubTokenizer, inputs, stub_decode, tiny_biart, tiny_cfg
from lverse_core.config import REPO_ROOT
from lverse_core.sampling.generate import generate_captions, generate_images, t2i_prompts
from lverse_core.sampling.row_sampler import MASK32, RowSampler, hash32, row_keys, uniforms
from ._limits import HANG_GUARD_S


# -- the per-row random streams --------------------------------------------------------------------------------------

def _lowbias32_reference(x: int) -> int:
    """lowbias32 written with Python's unbounded ints, reduced mod 2^32 after every multiplication."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def test_hash32_equals_the_reference_on_ints_and_tensors():
    xs = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1, 0xDEADBEEF] + torch.randint(0, 2**32, (200,)).tolist()
    expected = [_lowbias32_reference(x) for x in xs]
    assert [hash32(x) for x in xs] == expected
    assert hash32(torch.tensor(xs, dtype=torch.int64)).tolist() == expected
    assert len(set(expected)) == len(expected)  # a bijection: no collisions on distinct inputs


def test_row_sampler_draws_from_the_softmax_and_rows_are_independent_of_the_batch():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    keys = row_keys(0, "captions", range(8000), 1, 2)  # 16000 rows
    logits = probs.log().expand(len(keys), 4)
    a = RowSampler(keys)(logits)
    freq = torch.bincount(a, minlength=4).float() / len(keys)
    assert torch.allclose(freq, probs, atol=0.015), freq
    # the same rows sampled in another batch give the same tokens, at every step
    s_all, s_part = RowSampler(keys), RowSampler(keys[100:110])
    for _ in range(3):
        assert torch.equal(s_all(logits)[100:110], s_part(logits[100:110]))
    u = uniforms(keys[:500], 0, 300)
    assert 0 < float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01


def test_row_keys_depend_on_every_part_of_the_key():
    base = row_keys(0, "images", [5], 2, 3)
    assert len(set(base.tolist())) == 6
    for other in (row_keys(1, "images", [5], 2, 3), row_keys(0, "captions", [5], 2, 3),
                  row_keys(0, "images", [6], 2, 3)):
        assert not set(other.tolist()) & set(base.tolist())


# -- generation ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return tiny_cfg(), tiny_biart(), StubTokenizer(), inputs()


def test_captions_do_not_depend_on_batch_size_and_use_the_rerankers_choice(tiny):
    cfg, model, tok, (codes, image_ids, _, images) = tiny
    n = cfg.sampling.n_candidates
    scorer = RecordingScorer()
    one_by_one = generate_captions(cfg, model, tok, codes, image_ids, scorer, images=images, batch_size=n)
    together = generate_captions(cfg, model, tok, codes, image_ids, RecordingScorer(), images=images, batch_size=64)
    assert one_by_one == together
    assert [r["image_id"] for r in together] == image_ids
    assert len(scorer.seen) == n * len(image_ids)  # every candidate was scored, in prompt order
    for p, rec in enumerate(together):
        cands = scorer.seen[p * n:(p + 1) * n]
        best = max(cands, key=lambda c: c[0])
        assert rec["caption"] == best[1] and rec["clip_score"] == pytest.approx(best[0])
        assert rec["caption_untruncated"].startswith(rec["caption"])
    inverse = generate_captions(cfg, model, tok, codes, image_ids, RecordingScorer(-1.0), images=images)
    assert [r["caption"] for r in inverse] != [r["caption"] for r in together]  # the choice matters
    unranked = generate_captions(cfg, model, tok, codes, image_ids)  # no scorer: the first candidate
    assert [r["caption"] for r in unranked] == [scorer.seen[p * n][1] for p in range(len(image_ids))]


def test_images_do_not_depend_on_batch_size_or_on_the_other_prompts(tiny):
    cfg, model, tok, (_, image_ids, captions, _) = tiny
    cfg = tiny_cfg(**{"sampling.n_repeats": 2})
    a_codes, a_recs = generate_images(cfg, model, tok, captions, image_ids, RecordingScorer(), stub_decode,
                                      batch_size=3)
    b_codes, b_recs = generate_images(cfg, model, tok, captions, image_ids, RecordingScorer(), stub_decode,
                                      batch_size=64)
    assert a_codes.shape == (len(captions), 2, 4, 4)
    assert torch.equal(a_codes, b_codes) and a_recs == b_recs
    sub_codes, _ = generate_images(cfg, model, tok, captions[2:5], image_ids[2:5], RecordingScorer(), stub_decode)
    assert torch.equal(sub_codes, a_codes[2:5])  # seeded by prompt id, not by position
    assert not torch.equal(a_codes[:, 0], a_codes[:, 1])  # the k rounds use other seeds


def test_images_keep_the_brightest_candidate_under_a_brightness_scorer(tiny):
    cfg, model, tok, (_, image_ids, captions, _) = tiny
    n = cfg.sampling.n_candidates
    scorer = RecordingScorer()
    codes, recs = generate_images(cfg, model, tok, captions, image_ids, scorer, stub_decode)
    chosen_brightness = stub_decode(codes[:, 0]).mean(dim=(1, 2, 3))
    for p in range(len(captions)):
        cands = scorer.seen[p * n:(p + 1) * n]
        assert float(chosen_brightness[p]) == pytest.approx(max(c[2] for c in cands), abs=1e-6)
        assert recs[p]["clip_scores"][0] == pytest.approx(max(c[0] for c in cands))
    dark, _ = generate_images(cfg, model, tok, captions, image_ids, RecordingScorer(-1.0), stub_decode)
    assert (stub_decode(dark[:, 0]).mean(dim=(1, 2, 3)) < chosen_brightness).all()


def test_images_rerank_by_biarts_likelihood_of_the_prompt(tiny, tmp_path):
    from lverse_core.sampling.candidates import caption_log_likelihood

    cfg, model, tok, (_, image_ids, captions, _) = tiny
    n = cfg.sampling.n_candidates
    drawn = []

    def recording_decode(codes):  # every candidate passes through the decoder once, in prompt order
        drawn.append(codes.reshape(len(codes), -1).clone())
        return stub_decode(codes)

    # with a huge weight the kept image is the candidate under which BiART finds its prompt most likely
    heavy = tiny_cfg(**{"sampling.image_likelihood_weight": 1000.0})
    codes, _ = generate_images(heavy, model, tok, captions, image_ids, RecordingScorer(), recording_decode)
    cands = torch.cat(drawn).view(len(captions), n, -1)
    for p, caption in enumerate(captions):
        ll = caption_log_likelihood(model, cands[p], tok.encode([caption] * n))
        assert torch.equal(codes[p, 0].flatten(), cands[p, int(ll.argmax())])
    clip_only, _ = generate_images(cfg, model, tok, captions, image_ids, RecordingScorer(), stub_decode)
    assert not torch.equal(codes, clip_only)  # the weight changes choices here
    # the weight is part of what a shard directory records: results of the other rule are never mixed in
    generate_images(cfg, model, tok, captions, image_ids, RecordingScorer(), stub_decode, shard_dir=tmp_path / "s")
    with pytest.raises(ValueError, match="image_likelihood_weight"):
        generate_images(heavy, model, tok, captions, image_ids, RecordingScorer(), stub_decode,
                        shard_dir=tmp_path / "s")


def test_two_gloo_processes_give_the_one_process_result(tiny, tmp_path):
    cfg, model, tok, (codes, image_ids, captions, images) = tiny
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    worker = str(REPO_ROOT / "tests" / "_ddp_generate_worker.py")
    with socket.socket() as s:  # a free port: other suites on this machine may run torchrun at the same time
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          port, worker, str(tmp_path / "ddp.pt")], env=env, capture_output=True, text=True,
                         timeout=HANG_GUARD_S)
    assert run.returncode == 0, run.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    one_caps = generate_captions(cfg, model, tok, codes, image_ids, RecordingScorer(), images=images)
    cfg2 = tiny_cfg(**{"sampling.n_repeats": 2})
    one_codes, one_recs = generate_images(cfg2, model, tok, captions, image_ids, RecordingScorer(), stub_decode)
    assert ddp["captions"] == one_caps
    assert torch.equal(ddp["codes"], one_codes) and ddp["records"] == one_recs


def test_shard_dir_resumes_only_the_missing_prompts(tiny, tmp_path):
    cfg, model, tok, (_, image_ids, captions, _) = tiny
    shards = tmp_path / "shards"
    full, recs = generate_images(cfg, model, tok, captions, image_ids, RecordingScorer(), stub_decode,
                                 shard_dir=shards, batch_size=6)  # 2 prompts (6 rows) per part file
    parts = sorted(shards.glob("part-*.pt"))
    assert len(parts) == 4
    parts[1].unlink()  # as if the run had been killed before this batch
    kept = {p: p.stat().st_mtime_ns for p in parts if p.exists()}
    scorer = RecordingScorer()
    again, recs2 = generate_images(cfg, model, tok, captions, image_ids, scorer, stub_decode, shard_dir=shards,
                                   batch_size=6)
    assert torch.equal(again, full) and recs2 == recs
    assert len(scorer.seen) == 2 * cfg.sampling.n_candidates  # only the two lost prompts were generated again
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    with pytest.raises(ValueError, match="another run.*seed"):
        generate_images(tiny_cfg(seed=1), model, tok, captions, image_ids, shard_dir=shards)


def test_bad_inputs_are_clear_errors(tiny):
    cfg, model, tok, (codes, image_ids, captions, _) = tiny
    with pytest.raises(ValueError, match="needs images="):
        generate_captions(cfg, model, tok, codes, image_ids, RecordingScorer())
    with pytest.raises(ValueError, match="unique"):
        generate_images(cfg, model, tok, captions[:2], [1, 1])
    with pytest.raises(ValueError, match="code maps"):
        generate_captions(cfg, model, tok, codes[:3], image_ids)


def test_t2i_prompts_round_robin_over_captions(monkeypatch):
    import lverse_core.data.loaders as data

    recs = [{"image_id": i, "captions": [f"image {i} caption {c}" for c in range(2)]} for i in (7, 8, 9)]
    monkeypatch.setattr(data, "caption_records", lambda cfg, split: recs)
    pr = t2i_prompts(tiny_cfg(), 5)
    assert pr["captions"] == ["image 7 caption 0", "image 8 caption 0", "image 9 caption 0", "image 7 caption 1",
                              "image 8 caption 1"]
    assert pr["prompt_ids"] == [700, 800, 900, 701, 801] and pr["real_ids"] == [7, 8, 9]
    with pytest.raises(ValueError, match="only 6 captions"):
        t2i_prompts(tiny_cfg(), 7)


def test_row_keys_equal_the_scalar_definition():
    from lverse_core.sampling.row_sampler import TASK_SALT, mix

    keys = row_keys(7, "images", [3, 2**40 + 5], 2, 3).tolist()
    expected = [mix(7, TASK_SALT["images"], p, r, c) for p in (3, 2**40 + 5) for r in range(2) for c in range(3)]
    assert keys == expected


def test_ranks_without_a_process_group_can_share_a_shard_dir(tiny, tmp_path):
    from lverse_core.training.loop import DistInfo

    cfg, model, tok, (_, image_ids, captions, _) = tiny
    full, recs = generate_images(cfg, model, tok, captions, image_ids)
    shards = tmp_path / "manual"
    with pytest.raises(RuntimeError, match="no result yet"):  # rank 0 alone: half the prompts are missing
        generate_images(cfg, model, tok, captions, image_ids, dist=DistInfo(rank=0, world_size=2), shard_dir=shards)
    codes, recs1 = generate_images(cfg, model, tok, captions, image_ids, dist=DistInfo(rank=1, world_size=2),
                                   shard_dir=shards)
    assert torch.equal(codes, full) and recs1 == recs


def test_generation_files_are_refused_when_their_checkpoints_changed(tmp_path):
    import json

    import numpy as np

    from lverse_core.config import load_profile
    from lverse_core.sampling.generate import load_generated_captions, load_generated_images, made_from
    from lverse_core.training.loop import CheckpointError

    cfg = load_profile("ci", runs_dir=str(tmp_path / "runs"))
    cfg.runs_root.mkdir(parents=True)
    with pytest.raises(CheckpointError, match="biart"):
        made_from(cfg)  # nothing trained yet: says what is missing
    for name in ("biart.pt", "augvae_sl.pt", "clip_reranker.pt"):
        (cfg.runs_root / name).write_bytes(name.encode())
    ids = made_from(cfg)
    assert set(ids) == {"biart", "augvae_sl", "clip_reranker"} and all(v.startswith("sha256:") for v in ids.values())
    caps = tmp_path / "captions.json"
    record = {"image_id": 1, "caption": "a red circle.", "caption_untruncated": "a red circle. a", "clip_score": 0.3}
    caps.write_text(json.dumps({"made_from": ids, "records": [record]}))
    imgs = tmp_path / "images.npz"
    np.savez(imgs, codes=np.zeros((1, 1, 2, 2), np.uint16), prompt_ids=np.array([100]), image_ids=np.array([1]),
             captions=np.array(["a red circle."]), clip_scores=np.zeros((1, 1), np.float32),
             made_from=np.array(json.dumps(ids)))
    assert load_generated_captions(caps, cfg)[0]["image_id"] == 1
    assert load_generated_images(imgs, cfg)["prompt_ids"] == [100]
    (cfg.runs_root / "biart.pt").write_bytes(b"retrained")  # BiART retrained after the files were generated
    with pytest.raises(CheckpointError, match="other biart checkpoint"):
        load_generated_captions(caps, cfg)
    with pytest.raises(CheckpointError, match="other biart checkpoint"):
        load_generated_images(imgs, cfg)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"records": []}))  # written before files recorded their checkpoints
    with pytest.raises(CheckpointError, match="does not record"):
        load_generated_captions(old, cfg)
    assert load_generated_captions(old) == []  # without a profile nothing is checked (reading a file as it is)


@pytest.mark.parametrize("content, words", [
    (b'{"records": [', "cannot be read"),
    (b"[1, 2]", "holds a list, not the mapping"),
    (b'{"records": {"1": "a red circle."}}', "'records' must be a list"),
    (b'{"records": ["a red circle."]}', "record 0 is a str"),
    (b'{"records": [{"image_id": "1", "caption": "a.", "caption_untruncated": "a.", "clip_score": 0.1}]}',
     "record 0 has image_id = '1'"),
    (b'{"records": [{"image_id": 1, "caption": "a.", "clip_score": 0.1}]}', "record 0 has caption_untruncated = None"),
])
def test_a_captions_file_of_the_wrong_shape_is_named(tmp_path, content, words):
    from lverse_core.sampling.generate import GeneratedFileError, load_generated_captions

    path = tmp_path / "captions.json"
    path.write_bytes(content)
    with pytest.raises(GeneratedFileError, match=rf"captions file .*captions.json.*{words}.*GENERATED_CAPTIONS"):
        load_generated_captions(path)


def test_caption_candidates_and_likelihood_reranking(tiny):
    from lverse_core.sampling.candidates import caption_log_likelihood, rerank_scores

    cfg, model, tok, (codes, image_ids, _, images) = tiny
    # captions get their own candidate count; images keep n_candidates
    cfg5 = tiny_cfg(**{"sampling.caption_candidates": 5})
    scorer = RecordingScorer()
    generate_captions(cfg5, model, tok, codes, image_ids, scorer, images=images)
    assert len(scorer.seen) == 5 * len(image_ids)
    # with a likelihood weight the kept caption maximises z(clip) + w z(log p(caption | codes)) over its image's
    # candidates; with a huge weight that is the most likely candidate, whatever CLIP says
    heavy = tiny_cfg(**{"sampling.caption_candidates": 5, "sampling.caption_likelihood_weight": 1000.0})
    rec = RecordingScorer()
    kept = generate_captions(heavy, model, tok, codes, image_ids, rec, images=images)
    flat = codes.reshape(len(codes), -1)
    for p, r in enumerate(kept):
        cands = [t for _, t, _ in rec.seen[p * 5:(p + 1) * 5]]
        ll = caption_log_likelihood(model, flat[p:p + 1].repeat(5, 1), tok.encode(cands))
        assert r["caption"] == cands[int(ll.argmax())]
    clip_only = generate_captions(cfg5, model, tok, codes, image_ids, RecordingScorer(), images=images)
    assert [r["caption"] for r in kept] != [r["caption"] for r in clip_only]  # the weight changes choices here
    # the score itself: weight 0 (the paper) or a single candidate is the clip-score, unchanged
    clip = torch.tensor([[1.0, 3.0, 2.0]])
    ll = torch.tensor([[-1.0, -9.0, -2.0]])
    assert torch.equal(rerank_scores(clip, ll, 0.0), clip)
    assert torch.equal(rerank_scores(clip[:, :1], None, 2.0), clip[:, :1])
    assert int(rerank_scores(clip, ll, 0.5).argmax()) == 1  # CLIP's pick survives a small weight
    assert int(rerank_scores(clip, ll, 2.0).argmax()) == 2  # second best on both beats best-then-worst
    with pytest.raises(ValueError, match="one log-likelihood per candidate"):
        rerank_scores(clip, None, 0.5)


def test_caption_log_likelihood_is_the_models_teacher_forced_text_nll(tiny):
    from lverse_core.models.biart import I2T
    from lverse_core.sampling.candidates import caption_log_likelihood

    _, model, tok, (codes, *_rest) = tiny
    text = tok.encode(["w5 w6 .", "w7", "w8 w9 w10 w11"])
    image = codes[:3].reshape(3, -1)
    ll = caption_log_likelihood(model, image, text)
    with torch.no_grad():
        mean_nll = float(model(text, image, I2T)["gen"])  # mean over the non-[PAD] text tokens of the batch
    n_tokens = int((text != tok.pad_id).sum())
    assert float(-ll.sum()) / n_tokens == pytest.approx(mean_nll, rel=1e-5)


def test_notebooks_share_one_caption_draw_through_the_cache_dir(tiny, tmp_path, monkeypatch):
    from lverse_core.sampling.generate import caption_cache_dir

    _, model, tok, (codes, image_ids, _, images) = tiny
    cfg = tiny_cfg(runs_dir=str(tmp_path / "runs"))
    scorer = RecordingScorer()
    d = caption_cache_dir(cfg, "test", model, scorer, codes, image_ids)
    assert d.parent == cfg.runs_root / "generated" and d.name.startswith("captions_test_")
    first = generate_captions(cfg, model, tok, codes, image_ids, scorer, images=images, shard_dir=d)
    # notebook 04, same models and settings: the same directory, and nothing is sampled again
    assert caption_cache_dir(cfg, "test", tiny_biart(), RecordingScorer(), codes, image_ids) == d
    monkeypatch.setattr(type(model), "generate_text", lambda *a, **k: pytest.fail("sampled again"))
    assert generate_captions(cfg, model, tok, codes, image_ids, scorer, images=images, shard_dir=d) == first
    monkeypatch.undo()
    # anything that changes the result gets its own directory (no mismatch error, nothing stale reused)
    other_weights = tiny_biart(seed=1)
    others = [caption_cache_dir(cfg, "test", other_weights, scorer, codes, image_ids),
              caption_cache_dir(tiny_cfg(runs_dir=str(tmp_path / "runs"), **{"sampling.temperature": 0.3}), "test",
                                model, scorer, codes, image_ids),
              caption_cache_dir(cfg, "test", model, scorer, codes.flip(1), image_ids),  # same sum, other codes
              caption_cache_dir(cfg, "test", model, scorer, codes, [i + 1 for i in image_ids]),
              caption_cache_dir(cfg, "val", model, scorer, codes, image_ids)]
    assert len({d, *others}) == 6
    weights = torch.nn.Linear(2, 2)
    scorer_a, scorer_b = RecordingScorer(), RecordingScorer()
    scorer_a.model, scorer_b.model = weights, torch.nn.Linear(2, 2)
    assert caption_cache_dir(cfg, "test", model, scorer_a, codes, image_ids) != \
        caption_cache_dir(cfg, "test", model, scorer_b, codes, image_ids)
