"""Caption reranking streamed (paper Table 2: 5,000 test images x 64 candidates): the same captions as sampling and
scoring every candidate at once, images read only when scored, and memory that does not grow with the number of
images beyond the captions it returns."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _generate_stubs import StubTokenizer, tiny_biart
from lverse_core.pipeline.biart_run import clip_score_fns
from lverse_core.sampling.candidates import full_length_text, image_to_text, rerank, truncate_at_full_stop

from test_recon_stream import _growth


def _whole_set_image_to_text(model, tokenizer, image_codes, *, n_candidates, n_tokens, score_fn, seed, batch_size):
    """image_to_text as it was: every candidate of every image sampled, decoded and scored, then reranked."""
    P = image_codes.size(0)
    rows = image_codes.reshape(P, -1).repeat_interleave(n_candidates, dim=0)
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([model.generate_text(rows[i:i + batch_size], model.args.text_len, generator=g)
                     for i in range(0, len(rows), batch_size)])
    stop = {tokenizer.eot_id, tokenizer.pad_id}
    truncated = [tokenizer.decode(torch.tensor([c]))[0] if c else ""
                 for c in truncate_at_full_stop(ids[:, :n_tokens], set(tokenizer.full_stop_ids), stop)]
    full = [tokenizer.decode(torch.tensor([c]))[0] if c else "" for c in full_length_text(ids, stop)]
    owner = torch.arange(P).repeat_interleave(n_candidates)
    scores = score_fn(owner, truncated).view(P, n_candidates)
    pick = [p * n_candidates + int(b) for p, b in enumerate(rerank(scores))]
    return {"truncated": [truncated[i] for i in pick], "full": [full[i] for i in pick], "scores": scores,
            "candidates": [truncated[p * n_candidates:(p + 1) * n_candidates] for p in range(P)]}


def _score(owner, texts):
    """Depends on the image and the text only (not on what else is scored in the call): prefers long captions,
    ties broken by image."""
    return torch.tensor([len(t) + 0.01 * ((int(o) * 7 + len(t)) % 5) for o, t in zip(owner.tolist(), texts)])


@pytest.mark.parametrize("n_candidates, batch_size", [(3, 4), (4, 8), (5, 64), (1, 3)])
def test_streamed_reranking_equals_reranking_every_candidate_at_once(n_candidates, batch_size):
    model, tok = tiny_biart(), StubTokenizer()
    codes = torch.randint(0, 24, (11, 4, 4), generator=torch.Generator().manual_seed(2))
    calls = []

    def score(owner, texts):
        calls.append(len(texts))
        return _score(owner, texts)

    got = image_to_text(model, tok, codes, n_candidates=n_candidates, n_tokens=6, score_fn=score, seed=3,
                        batch_size=batch_size, keep_candidates=True)
    want = _whole_set_image_to_text(model, tok, codes, n_candidates=n_candidates, n_tokens=6, score_fn=_score, seed=3,
                                    batch_size=batch_size)
    assert got["truncated"] == want["truncated"] and got["full"] == want["full"]
    assert got["candidates"] == want["candidates"] and torch.equal(got["scores"], want["scores"])
    assert len(set(got["truncated"])) > 1  # the samples differ: a wrong stream would show
    group = np.lcm(n_candidates, batch_size)
    assert max(calls) <= group and sum(calls) == 11 * n_candidates  # scored a group at a time, every candidate once
    assert "candidates" not in image_to_text(model, tok, codes[:2], n_candidates=n_candidates, n_tokens=6, seed=3,
                                             batch_size=batch_size)


def test_caption_scores_read_only_the_images_being_scored():
    class Recorder:
        def score(self, images, texts):
            return images.flatten(1).mean(1) + torch.tensor([float(len(t)) for t in texts])

    images = torch.randn(6, 3, 4, 4)
    reads = []

    def load(idx):
        reads.append(list(idx))
        return images[idx]

    owner = torch.arange(6).repeat_interleave(5)  # 6 images x 5 candidates
    texts = [f"caption {'x' * (i % 4)}" for i in range(30)]
    _, from_tensor = clip_score_fns(Recorder(), None, 2, images, batch_size=8)
    _, from_loader = clip_score_fns(Recorder(), None, 2, load, batch_size=8)
    assert torch.equal(from_loader(owner, texts), from_tensor(owner, texts))
    assert all(len(r) <= 3 and r == sorted(set(r)) for r in reads)  # 8 pairs span at most 3 images, each read once
    assert sorted({i for r in reads for i in r}) == list(range(6))


def test_caption_reranking_memory_does_not_grow_with_the_number_of_images(tmp_path):
    """Notebook 02's reranking (``image_to_text`` + ``clip_score_fns`` on a loader) and notebook 04's
    (``generate_captions``) at N and 8N images of 32 px, 16 candidates each.

    Bound: a quarter of one copy of the extra 7N images as float32, which notebook 02 stacked before scoring. The
    whole-set code also held every candidate's image codes, tokens and strings. Measured once against it (main at
    0167314, same worker): +2.69 MiB against this bound's 0.66 MiB with the images stacked as notebook 02 did; +0.67
    MiB with the images read lazily, from the per-candidate state alone. Streamed, what grows is the two captions and
    16 scores kept per image: +0.07 MiB, a tenth of the bound."""
    n, size = 32, 32
    out = _growth("captions", n, size, tmp_path)
    assert [r["n_images"] for r in out["results"]] == [32, n, 8 * n]
    assert all(len(r["notebook_02"]) == len(r["notebook_04"]) == 2 for r in out["results"])
    growth, bound = out["growth_bytes"], 7 * n * 3 * size * size * 4 / 4
    extra = growth["8N"] - growth["N"]
    assert extra < bound, (f"caption reranking: the heap in use grew by {growth['N'] / 2**20:.2f} MiB at N and "
                           f"{growth['8N'] / 2**20:.2f} MiB at 8N ({extra / 2**20:+.2f} MiB), against a bound of "
                           f"{bound / 2**20:.2f} MiB")
