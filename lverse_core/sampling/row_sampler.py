"""Sampling where every row has its own random stream: a prompt's samples do not depend on its batch or its rank.

``torch.multinomial`` with one generator draws the random numbers of a whole batch from one stream, so the tokens
of a row change with the batch size and with which other prompts share the batch. Generation for Tables 2-3 must
give the same captions and images on 1 process or K torchrun ranks (``generate.py``), so each row here draws from
a counter-based generator instead: the uniform for (row, step, token) is a hash of the row's key, the step and the
token index, computed for the whole (B, V) block at once on any device. A token is then picked by the Gumbel-max
trick, argmax_v(l_v / T + G_v) with G_v = -log(-log U_v), which is an exact sample from softmax(l / T) (the same
distribution ``models.decoding.sample_next`` draws from, after the same top-k / top-p filtering).

The hash is Chris Wellons' "lowbias32" (hash-prospector), a bijection on 32-bit integers, evaluated in int64 with
the multiplications split into 16-bit halves so that no intermediate exceeds 2^63 (int64 overflow is not defined
behaviour we want to rely on across devices).
"""
from __future__ import annotations

from typing import Sequence

import torch

from lverse_core.models.decoding import filter_logits

MASK32 = 0xFFFFFFFF
TASK_SALT = {"captions": 0x2C1B3C6D, "images": 0x297A2D39}  # so a caption and an image prompt never share a stream


def _mul32(x, c: int):
    """Low 32 bits of x * c for x in [0, 2^32) (int or int64 tensor) and a 32-bit constant c, without overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & MASK32


def hash32(x):
    """lowbias32: a well-mixing bijection of 32-bit values; works on Python ints and int64 tensors alike."""
    x = x & MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _absorb(h, v):
    """Fold one more non-negative value (int or int64 tensor, folded to 32 bits) into the running key ``h``."""
    return hash32(h ^ hash32(v ^ (v >> 32)))


def mix(*values: int) -> int:
    """One 32-bit key from a sequence of non-negative integers."""
    h = 0x9E3779B9
    for v in values:
        v = int(v)
        if v < 0:
            raise ValueError(f"keys are built from non-negative integers, got {v}")
        h = _absorb(h, v)
    return h


def row_keys(seed: int, task: str, prompt_ids: Sequence[int], n_repeats: int, n_candidates: int) -> torch.Tensor:
    """Keys of every sampled row, prompt-major, then repeat, then candidate: (len(prompt_ids) * k * n,) int64.

    The key of a row is ``mix(seed, salt(task), prompt id, repeat, candidate)``, a pure function of those five
    (paper §3.6: "we repeat this process k times with different random seeds"); the last two are folded in as
    tensors, so 30,000 prompts x 64 candidates cost 30,000 Python-level hashes, not two million.
    """
    base = torch.tensor([mix(seed, TASK_SALT[task], p) for p in prompt_ids], dtype=torch.int64)  # (P,)
    r = torch.arange(n_repeats, dtype=torch.int64)
    c = torch.arange(n_candidates, dtype=torch.int64)
    h = _absorb(base[:, None], r[None, :])  # (P, k)
    return _absorb(h[:, :, None], c[None, None, :]).reshape(-1)  # (P * k * n,)


def uniforms(keys: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """(B, vocab) float32 uniforms in (0, 1): U[b, v] depends only on (keys[b], step, v)."""
    h = hash32(keys ^ mix(step))  # (B,)
    idx = hash32(torch.arange(vocab, device=keys.device, dtype=torch.int64) + 0x68E31DA4)  # (V,)
    x = hash32(hash32(h[:, None] ^ idx[None, :]) + h[:, None])  # (B, V); two rounds decorrelate rows
    return ((x >> 8).float() + 0.5) * (1.0 / (1 << 24))  # 24 bits: exact in float32, never 0 or 1


class RowSampler:
    """``sampler(logits (B, V)) -> ids (B,)`` for ``BiART.generate_*(sampler=...)``; counts its own steps.

    Row b at step t samples with the uniforms of (keys[b], t): results are independent of batch composition,
    batch size and process (up to float differences in the logits themselves).
    """

    def __init__(self, keys: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.keys, self.temperature, self.top_k, self.top_p = keys.long(), temperature, top_k, top_p
        self.step = 0

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.size(0) != self.keys.numel():
            raise ValueError(f"RowSampler has {self.keys.numel()} row keys but got logits for {logits.size(0)} rows")
        step, self.step = self.step, self.step + 1
        if self.temperature == 0:
            return logits.argmax(-1)
        scaled = filter_logits(logits.float() / self.temperature, self.top_k, self.top_p)
        u = uniforms(self.keys.to(logits.device), step, logits.size(-1))
        return (scaled - torch.log(-torch.log(u))).argmax(-1)
