"""EMA vector quantizer with one codebook shared by every AugVAE level (paper §3.3).

Follows the EMA quantizer of VQ-VAE-2 (Razavi et al., the paper's [33]) as used by the official AugVAE code
(github tgisaturday/L-Verse), rewritten here:

    k(z)   = argmin_j ||z - e_j||^2                         nearest code of each encoder vector
    N_j   <- decay * N_j + (1 - decay) * n_j                 EMA of cluster sizes (n_j: vectors assigned to j)
    m_j   <- decay * m_j + (1 - decay) * sum_{k(z)=j} z      EMA of the assigned vectors' sum
    e_j    = m_j / N~_j,   N~_j = (N_j + eps) / (sum N + K eps) * sum N     (Laplace smoothing)
    loss   = beta * ||z - sg(e_k(z))||^2                     commitment, on the encoder side only

The codebook lives in buffers, away from the optimizer; gradients reach the encoder through the straight-through
estimator ``z + sg(e - z)``. ``ema_update`` chooses between the official code's behaviour (the shared buffers are
updated once per level, so a step applies ``n_levels`` decays in a row and later levels see codes the earlier
levels already moved) and one pooled update per step over the vectors of all levels (one decay per step, each
level weighted by its number of vectors). Under DDP the counts and sums are all-reduced first, so every process
holds the same codebook and N processes equal one process with the same global batch.

Two options for short runs (off in the paper profile, as in the official code): initialising the codebook from
encoder outputs of the first training batch, and restarting dead codes with random encoder outputs of the current
batch (without either, a short CPU prototype run collapsed to a single code within 100 steps).

**The dead-code restart.** Each code keeps ``idle_updates``, the number of consecutive updates in which it got no
encoder vector. After an update's EMA step, a code is *due* when its EMA count is below ``dead_code_threshold`` and
``idle_updates >= restart_patience``; the due codes (ascending) take distinct random encoder vectors of the batch
(while it has as many), with ``N_j = threshold``, ``m_j = threshold * e_j`` and ``idle_updates = 0``. A restarted
code that gets no vector decays to ``threshold * decay**t`` after ``t`` updates, below the threshold from the first
one, but it is restarted again only at the ``restart_patience``-th update in a row without a vector: it survives
``restart_patience - 1`` updates without a hit (AugVAE's ``restart_patience`` is in training steps and is
multiplied by the codebook updates per step, e.g. 10 steps x 4 levels = 40 updates for the ML's per-level update;
its count is then ``0.99**40 = 0.67`` of the threshold). One vector resets the wait, so a code that gets a vector
at least once in every ``restart_patience`` updates is never restarted, however low its count; a code that stays
unused is restarted every ``restart_patience`` updates. A code that has never had a vector (a randn start, an empty
k-means cluster) counts as idle for ``restart_patience`` updates already, so it is due at its first update below
the threshold. ``restart_patience = 0`` is the rule before the counter: every code below the threshold restarts at
every update (its count set to exactly the threshold, so one update without a hit made it due again).

A training step reads nothing back to the host: the statistics (perplexity, codes used, dead and restarted codes)
are device tensors, read when a log line is written; the codebook's "initialised" flag is read once, until it is
set; counts are scatter-adds (CUDA's ``bincount`` reads its input's maximum first). The restart never reads how
many codes are due: every update with a threshold draws the random rows it would need for the whole code range
(a permutation of the batch's vectors, or draws with replacement when the batch has fewer) and the due codes take
them with a mask, so the same seed gives the same restarts on every device. :meth:`update_` returns which codes
got vectors and which it restarted; :meth:`step_statistics` turns a training step's updates into its ``dead`` codes
(below the threshold and without a vector in the whole step, counted before the step's restarts: a code restarted
in the step counts as dead, and one that sits below the threshold only because a coarse level feeds it few vectors
per update does not) and its ``restarted`` ones.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _counts(codes: torch.Tensor, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n,) how often each of 0..n-1 occurs in ``codes``: ``bincount`` without its read of the maximum on a GPU
    (a scatter-add of ones; exact in float32 up to 2**24 per code)."""
    codes = codes.reshape(-1)
    return torch.zeros(n, dtype=dtype, device=codes.device).index_add_(
        0, codes, torch.ones(codes.shape[0], dtype=dtype, device=codes.device))


class EMAVectorQuantizer(nn.Module):
    """A codebook of ``codebook_size`` vectors of size ``dim``; call it on (B, dim, H, W) maps, one per level."""

    def __init__(self, codebook_size: int, dim: int, decay: float = 0.99, eps: float = 1e-5, beta: float = 0.25,
                 dead_code_threshold: float = 0.0, data_init: bool = False, restart_patience: int = 10):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        if int(restart_patience) != restart_patience or restart_patience < 0:
            raise ValueError(f"restart_patience must be a whole number of updates >= 0, got {restart_patience}")
        self.codebook_size, self.dim = codebook_size, dim
        self.decay, self.eps, self.beta = decay, eps, beta
        self.dead_code_threshold, self.data_init = dead_code_threshold, data_init
        self.restart_patience = int(restart_patience)  # codebook updates without a vector before a restart
        embed = torch.randn(codebook_size, dim)  # official init: randn
        self.register_buffer("embed", embed)  # (K, D) the codebook
        self.register_buffer("embed_avg", embed.clone())  # (K, D) EMA of assigned-vector sums
        self.register_buffer("cluster_size", torch.zeros(codebook_size))  # (K,) EMA of counts
        self.register_buffer("initted", torch.tensor(not data_init))
        # (K,) consecutive updates without a vector; a code that never had one starts as idle for the full patience
        self.register_buffer("idle_updates", torch.full((codebook_size,), self.restart_patience, dtype=torch.long))
        self._initted_seen = not data_init  # host copy of ``initted`` once it is True (read until then)

    def _load_from_state_dict(self, *args, **kwargs):
        self._initted_seen = False  # a loaded ``initted`` may be False again: read it on the next training step
        super()._load_from_state_dict(*args, **kwargs)

    @staticmethod
    def complete_state(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
        """``state`` with the restart's idle counter added when it lacks one (written before the counter existed,
        or converted from the official code): every code counts as just hit."""
        key = prefix + "idle_updates"
        if key in state or prefix + "embed" not in state:
            return state
        return {**state, key: torch.zeros(state[prefix + "embed"].shape[0], dtype=torch.long)}

    @property
    def count_threshold(self) -> float:
        """The EMA count below which a code is dead: ``dead_code_threshold``, or 1 (less than one vector per
        update) when restarts are off."""
        return self.dead_code_threshold if self.dead_code_threshold > 0 else 1.0

    def is_initialised(self) -> bool:
        """Whether the codebook is initialised; reads the buffer (a host sync) only until it is True."""
        if not self._initted_seen:
            self._initted_seen = bool(self.initted)
        return self._initted_seen

    # -- lookup ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def nearest(self, flat: torch.Tensor, code_range: tuple[int, int] | None = None) -> torch.Tensor:
        """(N, D) -> (N,) index of the nearest code (squared Euclidean distance), searched among the codes
        ``code_range = (lo, hi)`` only when given (per-level codebooks, an ablation: see AugVAE's ``codebook``)."""
        lo, hi = code_range or (0, self.codebook_size)
        embed = self.embed[lo:hi]
        # ||z||^2 is the same for every code, so argmin_j ||e_j||^2 - 2 z.e_j suffices: one fused addmm
        score = torch.addmm(embed.pow(2).sum(1)[None], flat.to(embed.dtype), embed.t(), alpha=-2.0)
        return score.argmin(1) + lo

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, H, W) long codes -> (B, D, H, W) code vectors."""
        return F.embedding(codes, self.embed).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor, code_range: tuple[int, int] | None = None):
        """Quantize a (B, D, H, W) map without touching the codebook (among ``code_range`` codes when given).

        Returns ``(z_q, codes, loss, flat)``: the straight-through quantized map (B, D, H, W), codes (B, H, W)
        long, the commitment loss ``beta * mse(z, sg(z_q))`` and the (B*H*W, D) detached encoder vectors, which
        the caller hands to :meth:`update_` (once per level or pooled, see the module docstring).
        """
        if z.dim() != 4 or z.shape[1] != self.dim:
            raise ValueError(f"quantizer expects {self.dim} channels, got a map of shape {tuple(z.shape)}")
        # FP32 always (paper §3.5: the quantizer underflows in lower precision), also inside a bf16 autocast region
        with torch.autocast(z.device.type, enabled=False):
            return self._quantize(z.float(), code_range)

    def _quantize(self, z: torch.Tensor, code_range: tuple[int, int] | None = None):
        B, D, H, W = z.shape
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, D)  # (B*H*W, D)
        if self.training and not self.is_initialised():
            self._init_from_data_(flat)
        codes = self.nearest(flat, code_range)
        q = F.embedding(codes, self.embed).view(B, H, W, D).permute(0, 3, 1, 2)  # (B, D, H, W)
        loss = self.beta * F.mse_loss(z, q.detach())  # pulls the encoder to its code; the codebook moves by EMA
        z_q = z + (q - z).detach()  # straight-through estimator
        return z_q, codes.view(B, H, W), loss, flat

    # -- EMA update --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def update_(self, flat: torch.Tensor, codes: torch.Tensor,
                code_range: tuple[int, int] | None = None) -> dict[str, torch.Tensor] | None:
        """One EMA step of the codebook from encoder vectors ``flat`` (N, D) and their codes (N,); training only
        (None otherwise). With ``code_range = (lo, hi)`` only those codes take the step, as an independent codebook
        of hi - lo codes. Returns (K,) bool masks over the whole codebook, on the device: ``hit``, the codes that got
        a vector, and ``restarted``, the codes this update restarted (module docstring); see :meth:`step_statistics`."""
        if not self.training:
            return None
        lo, hi = code_range or (0, self.codebook_size)
        flat = flat.float()
        codes = codes.reshape(-1) - lo
        # n_j and sum_{k(z)=j} z by scatter-adds: O(N D) instead of the (N, K) one-hot matmul
        counts = _counts(codes, hi - lo, flat.dtype)  # (K,)
        sums = torch.zeros_like(self.embed_avg[lo:hi]).index_add_(0, codes, flat)  # (K, D)
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        cluster_size, embed_avg = self.cluster_size[lo:hi], self.embed_avg[lo:hi]  # views: updated in place
        cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = cluster_size.sum()
        smoothed = (cluster_size + self.eps) / (n + (hi - lo) * self.eps) * n
        self.embed[lo:hi] = embed_avg / smoothed.unsqueeze(1)
        idle = self.idle_updates[lo:hi]  # a view: a hit resets the wait, an update without one lengthens it
        idle.copy_(torch.where(counts > 0, torch.zeros_like(idle), idle + 1))
        hit = torch.zeros_like(self.cluster_size, dtype=torch.bool)
        hit[lo:hi] = counts > 0
        restarted = self._restart_dead_(flat, lo, hi) if self.dead_code_threshold > 0 else torch.zeros_like(hit)
        return {"hit": hit, "restarted": restarted}

    @torch.no_grad()
    def step_statistics(self, updates: list[dict[str, torch.Tensor] | None]) -> dict[str, torch.Tensor]:
        """A training step's ``dead`` and ``restarted`` codes from the results of its :meth:`update_` calls, as 0-dim
        float64 tensors on the device (no host read): ``dead``, the codes whose EMA count is below
        :attr:`count_threshold` and that got no vector in any of the updates, counted before the restarts (a code
        the step restarted counts); ``restarted``, the restarts of the step (a code restarted by two of its updates,
        possible only with ``restart_patience`` below the updates per step, counts twice). Without updates (eval
        mode, where :meth:`update_` returns None): the codes below the threshold now, and 0."""
        below = self.cluster_size < self.count_threshold
        updates = [u for u in updates if u is not None]
        if not updates:
            return {"dead": below.sum().double(), "restarted": below.new_zeros((), dtype=torch.float64)}
        hit, restarted = torch.zeros_like(below), torch.zeros_like(below)
        n = below.new_zeros((), dtype=torch.float64)
        for u in updates:
            hit, restarted = hit | u["hit"], restarted | u["restarted"]
            n = n + u["restarted"].sum()
        return {"dead": ((below & ~hit) | restarted).sum().double(), "restarted": n}

    @torch.no_grad()
    def _sample(self, flat: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` random rows of ``flat`` (with replacement if there are fewer), identical on every process."""
        idx = torch.randint(0, flat.shape[0], (n,), device=flat.device) if flat.shape[0] < n else \
            torch.randperm(flat.shape[0], device=flat.device)[:n]
        out = flat[idx].float().contiguous()
        if _distributed():
            dist.broadcast(out, 0)
        return out

    @torch.no_grad()
    def _init_from_data_(self, flat: torch.Tensor, code_range: tuple[int, int] | None = None) -> None:
        """Codes ``code_range`` (default all) set to random encoder vectors; marks the codebook initialised."""
        lo, hi = code_range or (0, self.codebook_size)
        self.embed[lo:hi] = self._sample(flat, hi - lo)
        self.embed_avg[lo:hi] = self.embed[lo:hi]
        self.cluster_size[lo:hi] = 1.0
        self.idle_updates[lo:hi] = 0
        self.initted.fill_(True)
        self._initted_seen = True

    @torch.no_grad()
    def _restart_dead_(self, flat: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Restart the due codes of ``lo:hi`` (module docstring) without reading how many there are: the j-th due
        code (ascending) takes row ``idx[j]`` of ``flat``, ``idx`` drawn as ``_sample`` draws ``hi - lo`` rows (the
        most that can be due). Returns the (K,) bool mask of the codes it restarted."""
        dead = torch.zeros_like(self.cluster_size, dtype=torch.bool)
        dead[lo:hi] = (self.cluster_size[lo:hi] < self.dead_code_threshold) & \
            (self.idle_updates[lo:hi] >= self.restart_patience)
        if _distributed():  # every process must restart the same codes
            dist.broadcast(dead, 0)
        n_max = hi - lo
        new = self._sample(flat, n_max)  # (n_max, D), identical on every process
        rank = (torch.cumsum(dead.long(), 0) - 1).clamp(0, n_max - 1)  # position of each due code among the due
        mask = dead.unsqueeze(1)
        picked = new[rank]  # (K, D); rows of codes that are not due are ignored
        self.embed.copy_(torch.where(mask, picked, self.embed))
        self.cluster_size.copy_(torch.where(dead, torch.full_like(self.cluster_size, self.dead_code_threshold),
                                            self.cluster_size))
        self.embed_avg.copy_(torch.where(mask, picked * self.dead_code_threshold, self.embed_avg))
        self.idle_updates.copy_(torch.where(dead, torch.zeros_like(self.idle_updates), self.idle_updates))
        return dead

    @torch.no_grad()
    def init_kmeans_(self, flat: torch.Tensor, batches: int = 1, iters: int = 20, seed: int = 0) -> dict[str, float]:
        """Set the whole codebook to the k-means centroids of encoder vectors ``flat`` (N, D), gathered over
        ``batches`` training batches: k-means++ seeding, then ``iters`` Lloyd steps (:func:`kmeans`). The EMA state
        restarts from those clusters (counts per batch, as the EMA keeps them) and the codebook counts as
        initialised. Under DDP rank 0's centroids go to every rank.
        Returns the fraction of codes with vectors and the mean squared distance of the vectors to their code."""
        if flat.dim() != 2 or flat.shape[1] != self.dim:
            raise ValueError(f"init_kmeans_ expects (N, {self.dim}) vectors, got {tuple(flat.shape)}")
        centroids = torch.zeros_like(self.embed)
        counts, err = torch.zeros_like(self.cluster_size), float("nan")
        if not _distributed() or dist.get_rank() == 0:
            if flat.shape[0] < self.codebook_size:
                raise ValueError(f"k-means of {self.codebook_size} codes needs at least that many vectors, got "
                                 f"{flat.shape[0]}: keep more batches (augvae_train.kmeans_batches)")
            gen = torch.Generator(device=flat.device).manual_seed(seed)
            centroids, counts, err = kmeans(flat.float(), self.codebook_size, iters, gen)
        if _distributed():
            dist.broadcast(centroids, 0)
            dist.broadcast(counts, 0)
        counts = counts / max(1, batches)
        self.embed.copy_(centroids)
        self.cluster_size.copy_(counts)
        self.embed_avg.copy_(centroids * counts.unsqueeze(1))
        # a cluster with vectors was just hit; an empty one never was (due at its first update below the threshold)
        self.idle_updates.copy_(torch.where(counts > 0, torch.zeros_like(self.idle_updates),
                                            torch.full_like(self.idle_updates, self.restart_patience)))
        self.initted.fill_(True)
        self._initted_seen = True
        return {"used": float((counts > 0).float().mean()), "mse": err}

    # -- statistics --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def usage(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Perplexity of the code histogram of ``codes`` and the fraction of the codebook they use, as 0-dim
        float64 tensors on the codes' device (``float()`` them where a number is needed: that reads the device)."""
        counts = _counts(codes, self.codebook_size)
        p = counts / counts.sum().clamp_min(1)
        perplexity = (-(p * torch.log(p.clamp_min(1e-12))).sum()).double().exp()
        return {"perplexity": perplexity, "used": (counts > 0).float().mean().double()}

    @torch.no_grad()
    def dead_fraction(self, threshold: float = 1.0) -> torch.Tensor:
        """Fraction of codes whose EMA count is below ``threshold`` (default: less than one vector per step), a
        0-dim float64 tensor on the codebook's device."""
        return (self.cluster_size < threshold).float().mean().double()

    @torch.no_grad()
    def dead_count(self) -> torch.Tensor:
        """How many codes have an EMA count below :attr:`count_threshold` now, a 0-dim float64 tensor on the
        codebook's device."""
        return (self.cluster_size < self.count_threshold).sum().double()


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None):
    """k-means of the rows of ``x`` (N, D) into ``k`` clusters: k-means++ seeding (each new centre drawn with
    probability proportional to the squared distance to the nearest centre so far), then ``iters`` Lloyd steps; a
    cluster left empty keeps its centre. Returns (centres (k, D), counts (k,) of the last assignment, mean squared
    distance of the rows to their centre)."""
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means of {k} clusters needs at least {k} rows, got {n}")
    idx = torch.empty(k, dtype=torch.long, device=x.device)
    idx[0] = torch.randint(0, n, (1,), generator=generator, device=x.device)
    d2 = (x - x[idx[0]]).pow(2).sum(1)
    for j in range(1, k):
        total = d2.sum()
        # all rows already at a centre (duplicates): any row will do
        probs = d2 / total if float(total) > 0 else torch.full_like(d2, 1.0 / n)
        idx[j] = torch.multinomial(probs, 1, generator=generator)[0]
        d2 = torch.minimum(d2, (x - x[idx[j]]).pow(2).sum(1))
    centres = x[idx].clone()
    sq = x.pow(2).sum(1)
    for step in range(iters + 1):  # the last pass only assigns
        dist2 = torch.addmm(centres.pow(2).sum(1)[None], x, centres.t(), alpha=-2.0)  # ||c||^2 - 2 x.c
        assign = dist2.argmin(1)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        if step == iters:
            break
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        full = counts > 0
        centres[full] = sums[full] / counts[full, None]
    err = float((dist2.gather(1, assign[:, None]).squeeze(1) + sq).clamp_min(0).mean())
    return centres, counts, err
