"""A tiny random BiART, a stand-in tokenizer, decoder and CLIP scorer for tests/test_generate.py and its torchrun
worker: generation's sharding and seeding are tested without trained models."""
from __future__ import annotations

import torch

from lverse_core.models.biart import BiART, BiARTArgs
from lverse_core.config import load_profile

TEXT_VOCAB, IMAGE_VOCAB, TEXT_LEN = 40, 24, 8


def tiny_cfg(runs_dir: str = "/tmp/unused-runs", **overrides):
    """ci profile, 32 px -> a 4x4 code grid (16 image tokens), 3 candidates, 6 caption tokens, images reranked by the
    clip-score alone (the paper's rule; tests that want BiART's likelihood too set its weight)."""
    return load_profile("ci", runs_dir=runs_dir, **{"data.image_size": 32, "augvae.codebook_size": IMAGE_VOCAB,
                                                    "biart.text_len": TEXT_LEN, "sampling.n_candidates": 3,
                                                    "sampling.image_likelihood_weight": 0.0,
                                                    "sampling.caption_tokens": 6, "sampling.batch_size": 64,
                                                    **overrides})


def tiny_biart(seed: int = 0) -> BiART:
    torch.manual_seed(seed)
    model = BiART(BiARTArgs(n_layer=1, n_head=2, n_embd=32, text_len=TEXT_LEN, image_tokens=16,
                            text_vocab=TEXT_VOCAB, image_vocab=IMAGE_VOCAB, pad_id=0, dropout=0.0))
    with torch.no_grad():  # larger logits than the 0.02 init: candidates differ, and so does the reranker's pick
        model.head_text.weight.mul_(40)
        model.head_image.weight.mul_(40)
    return model.eval()


class StubTokenizer:
    pad_id, eot_id, unk_id = 0, 1, 2
    full_stop_ids = {3}
    vocab_size, text_len = TEXT_VOCAB, TEXT_LEN

    def encode(self, texts):
        rows = []
        for t in texts:
            ids = [4 + sum(map(ord, w)) % (TEXT_VOCAB - 4) for w in t.split()][:TEXT_LEN - 1] + [self.eot_id]
            rows.append(ids + [self.pad_id] * (TEXT_LEN - len(ids)))
        return torch.tensor(rows)

    def decode(self, ids):
        return [" ".join("." if t == 3 else f"w{t}" for t in row if t not in (0, 1)) for row in ids.tolist()]


def stub_decode(codes: torch.Tensor) -> torch.Tensor:
    """codes (M, 4, 4) -> (M, 3, 8, 8) images in [-1, 1] whose brightness follows the codes."""
    x = codes.float() / (IMAGE_VOCAB - 1) * 2 - 1
    return x.repeat_interleave(2, -1).repeat_interleave(2, -2)[:, None].expand(-1, 3, -1, -1)


class RecordingScorer:
    """Scores = sign * (image brightness + caption length); remembers every (score, text) it was asked about."""

    def __init__(self, sign: float = 1.0):
        self.sign, self.seen = sign, []

    def score(self, images: torch.Tensor, texts):
        s = self.sign * (images.float().mean(dim=(1, 2, 3)) + torch.tensor([len(t) / 10 for t in texts]))
        self.seen.extend(zip(s.tolist(), texts, images.float().mean(dim=(1, 2, 3)).tolist()))
        return s


def inputs(n_prompts: int = 7):
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, IMAGE_VOCAB, (n_prompts, 4, 4), generator=g)
    image_ids = [1000 + 3 * i for i in range(n_prompts)]
    captions = [f"a {c} thing number {i}" for i, c in zip(range(n_prompts), ["red", "blue", "green"] * 9)]
    images = torch.rand(n_prompts, 3, 8, 8, generator=g) * 2 - 1
    return codes, image_ids, captions, images
