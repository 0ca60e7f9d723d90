"""BiART: the bidirectional auto-regressive transformer of L-Verse (paper §3.4-3.6).

A plain GPT (minGPT / nanoGPT lineage: pre-LN blocks, causal scaled_dot_product_attention, dropout) that reads
one of two sequences and learns both directions with the same weights:

    text -> image:  [SOC] t_1 .. t_L [SOI] i_1 .. i_N     text = [REF] (segment 0), image = [GEN] (segment 1)
    image -> text:  [SOI] i_1 .. i_N [SOC] t_1 .. t_L     image = [REF],            text = [GEN]

Each input position carries token embedding + position embedding + segment embedding (§3.4: "a learnable
embedding vector is assigned to each segment index"). The start token of a part ([SOC] before text, [SOI]
before image) belongs to that part, so the two parts have L+1 and N+1 tokens; the model reads the first
L+N+1 of those L+N+2 tokens and predicts the next one at every position except where the next token is the
(deterministic) start token of the second part.

Vocabulary choices (the paper leaves them open):
- One input embedding table over a single id space: text ids [0, V_t), image codes [V_t, V_t + V_i), then
  [SOC] and [SOI]. [PAD] is the text tokenizer's own pad id (it only ever occurs in text). An embedding lookup
  costs the same whatever the table size, so sharing the table costs nothing.
- Two output heads, text (d -> V_t) and image (d -> V_i), applied only to the positions whose next token is of
  that modality (minDALL-E style). A shared head over V_t + V_i would spend most of its FLOPs scoring
  impossible tokens (49408 text logits at each of 1024 image positions in the paper profile) and would let
  sampling emit a token of the wrong modality.
- Positions are per modality (a text table of L+1 and an image table of N+1 rows) so a caption token has the
  same position embedding in both directions; the segment embedding tells [REF] from [GEN].
  ``positions="shared"`` uses one table over the whole L+N+2 sequence instead (the official README's snippet),
  where a token's position depends on the direction; ``segment_embedding=False`` drops the segment embedding.
  Both are ablation switches for the claims notebook (07): the paper argues the segment embedding tells the
  model which part is the condition, which per-modality positions may already make visible.

Sources: nanoGPT model.py (karpathy/nanoGPT), minGPT's weight-decay grouping, minDALL-E's separate heads; the
KV cache is our own, written for this module.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from lverse_core.models.decoding import sample_next

# Attention backends for KV-cache decoding. cuDNN is left out on purpose: every decode step has a new key length,
# and cuDNN builds a new execution plan for each shape (measured on an H100 with torch 2.11: 1.8 ms of CPU per call,
# 24 layers -> ~50 ms per token step instead of ~9 ms). Training (fixed shapes) keeps torch's default choice.
DECODE_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

T2I, I2T = "t2i", "i2t"  # the two directions; text->image and image->text
REF, GEN = 0, 1  # segment ids (paper §3.4)


class KVCache:
    """Keys and values of every layer for the first ``length`` positions, preallocated to ``max_len``."""

    def __init__(self, n_layer: int, B: int, n_head: int, max_len: int, head_dim: int, device, dtype):
        shape = (B, n_head, max_len, head_dim)
        self.k = [torch.empty(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.empty(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.length = 0  # positions already written


def _causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """Causal SDPA; on the CPU under bf16 autocast it runs in FP32.

    The CPU flash-attention kernel's bf16 backward is several times slower than its FP32 one (measured on a 2-core
    Xeon with AMX: 34% of a smoke training step for ~5% of its FLOPs); at these sequence lengths the FP32 attention
    costs little, so the step gets 1.3x faster with the same loss curve. GPUs keep bf16 flash attention.
    """
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), dropout_p=dropout_p,
                                                  is_causal=True).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd)  # fused q, k, v projection
        self.proj = nn.Linear(n_embd, n_embd)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if cache is None:
            y = _causal_attention(q, k, v, self.dropout if self.training else 0.0)
        else:
            start = cache.length
            cache.k[layer][:, :, start:start + T] = k
            cache.v[layer][:, :, start:start + T] = v
            k_all = cache.k[layer][:, :, :start + T]  # (B, nh, start+T, hs)
            v_all = cache.v[layer][:, :, :start + T]
            if start == 0:  # prefill: ordinary causal attention over the prompt
                y = F.scaled_dot_product_attention(q, k_all, v_all, is_causal=True)
            elif T == 1:  # one new token sees every cached position: no mask needed
                y = F.scaled_dot_product_attention(q, k_all, v_all)
            else:  # several new tokens after a prefix: causal within the new block
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
                y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # exact (erf) GELU, as nanoGPT's nn.GELU(): in bf16 on the CPU its forward + backward took 4.7 ms against
        # 13.6 ms for the tanh approximation (2848 x 1024 activations, 2-core Xeon)
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block (GPT-2): x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


@dataclass
class BiARTArgs:
    """Everything that fixes the architecture (stored as ``model_args`` in checkpoints)."""

    n_layer: int
    n_head: int
    n_embd: int
    text_len: int  # L, text positions (paper: 64 BPE tokens)
    image_tokens: int  # N = g*g image positions (paper: 32*32 = 1024)
    text_vocab: int  # V_t: 49408 for the full CLIP BPE, or the compact map's size
    image_vocab: int  # V_i: AugVAE codebook size (paper: 8192)
    pad_id: int  # the tokenizer's [PAD]; excluded from the loss
    dropout: float = 0.1  # not part of the architecture check (may differ between training and sampling)
    segment_embedding: bool = True  # [REF]/[GEN] segment embedding (paper §3.4); False: ablation, no such module
    positions: str = "per_modality"  # per_modality (text and image tables) | shared (one table, official snippet)

    def arch(self) -> dict:
        """The architecture arguments; the ablation switches only when not at their defaults, so checkpoints
        written before the switches existed keep loading."""
        d = asdict(self)
        d.pop("dropout")
        for name, default in (("segment_embedding", True), ("positions", "per_modality")):
            if d[name] == default:
                d.pop(name)
        return d


class BiART(nn.Module):
    def __init__(self, args: BiARTArgs):
        super().__init__()
        self.args = a = args
        self.soc_id = a.text_vocab + a.image_vocab  # [SOC]: start of caption
        self.soi_id = self.soc_id + 1  # [SOI]: start of image
        self.tok_emb = nn.Embedding(a.text_vocab + a.image_vocab + 2, a.n_embd)
        if a.positions == "per_modality":
            self.text_pos = nn.Parameter(torch.zeros(a.text_len + 1, a.n_embd))  # [SOC] + L text tokens
            self.image_pos = nn.Parameter(torch.zeros(a.image_tokens + 1, a.n_embd))  # [SOI] + N codes
        elif a.positions == "shared":
            self.pos_emb = nn.Parameter(torch.zeros(a.text_len + a.image_tokens + 2, a.n_embd))  # the whole sequence
        else:
            raise ValueError(f"biart.positions must be 'per_modality' or 'shared', got {a.positions!r}")
        self.seg_emb = nn.Embedding(2, a.n_embd) if a.segment_embedding else None  # [REF] = 0, [GEN] = 1
        self.drop = nn.Dropout(a.dropout)
        self.blocks = nn.ModuleList([Block(a.n_embd, a.n_head, a.dropout) for _ in range(a.n_layer)])
        self.ln_f = nn.LayerNorm(a.n_embd)
        self.head_text = nn.Linear(a.n_embd, a.text_vocab, bias=False)
        self.head_image = nn.Linear(a.n_embd, a.image_vocab, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 * n_layer)
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * a.n_layer))
        for table in self._position_tables():
            nn.init.normal_(table, std=0.02)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    # -- construction --------------------------------------------------------------------------------------------
    @classmethod
    def args_from_config(cls, cfg, text_vocab_size: int, pad_id: int) -> BiARTArgs:
        b = cfg.biart
        return BiARTArgs(n_layer=b.n_layer, n_head=b.n_head, n_embd=b.n_embd, text_len=b.text_len,
                         image_tokens=cfg.image_tokens, text_vocab=text_vocab_size,
                         image_vocab=cfg.augvae.codebook_size, pad_id=pad_id, dropout=b.dropout,
                         segment_embedding=b.segment_embedding, positions=b.positions)

    @classmethod
    def from_config(cls, cfg, text_vocab_size: int | None = None, pad_id: int | None = None, tokenizer=None):
        """Build from ``cfg.biart``; the text vocabulary comes from ``tokenizer`` or the explicit arguments."""
        if tokenizer is not None:
            text_vocab_size, pad_id = tokenizer.vocab_size, tokenizer.pad_id
        if text_vocab_size is None or pad_id is None:
            raise ValueError("BiART.from_config needs tokenizer= or both text_vocab_size= and pad_id=")
        return cls(cls.args_from_config(cfg, text_vocab_size, pad_id))

    def num_params(self, part: str = "all") -> int:
        """Parameter count: all | blocks (the transformer body) | embeddings | heads."""
        groups = {"blocks": [self.blocks, self.ln_f], "heads": [self.head_text, self.head_image],
                  "embeddings": [m for m in (self.tok_emb, self.seg_emb) if m is not None]}
        if part == "all":
            return sum(p.numel() for p in self.parameters())
        n = sum(p.numel() for m in groups[part] for p in m.parameters())
        return n + (sum(t.numel() for t in self._position_tables()) if part == "embeddings" else 0)

    def _position_tables(self) -> list[nn.Parameter]:
        return [self.pos_emb] if self.args.positions == "shared" else [self.text_pos, self.image_pos]

    # -- sequence layout -----------------------------------------------------------------------------------------
    def layout(self, direction: str, device=None) -> dict[str, torch.Tensor]:
        """Per-position constants of a full L+N+2 sequence: positions, segments, part of the next token.

        ``pos``/``seg`` index the L+N+2 tokens; ``text_out``/``image_out`` are the positions (of the L+N+1 model
        inputs) whose next token is text/image; ``ref_out`` marks which of those targets are [REF] tokens.
        """
        L, N = self.args.text_len, self.args.image_tokens
        if direction == T2I:
            first, second = L + 1, N + 1
            pos = torch.cat([torch.arange(L + 1), torch.arange(N + 1)])
            text_out = torch.arange(0, L)  # inputs [SOC] t_1 .. t_{L-1} predict t_1 .. t_L
            image_out = torch.arange(L + 1, L + N + 1)  # [SOI] i_1 .. i_{N-1} predict i_1 .. i_N
        elif direction == I2T:
            first, second = N + 1, L + 1
            pos = torch.cat([torch.arange(N + 1), torch.arange(L + 1)])
            image_out = torch.arange(0, N)
            text_out = torch.arange(N + 1, N + L + 1)
        else:
            raise ValueError(f"direction must be {T2I!r} or {I2T!r}, got {direction!r}")
        seg = torch.cat([torch.full((first,), REF), torch.full((second,), GEN)])
        if self.args.positions == "shared":  # one table: the position is the index in the whole sequence
            pos = torch.arange(first + second)
        return {k: v.to(device) for k, v in dict(pos=pos, seg=seg, text_out=text_out, image_out=image_out).items()}

    def build_sequence(self, text: torch.Tensor, image: torch.Tensor, direction: str) -> torch.Tensor:
        """The L+N+2 token ids in the shared id space: text (B, L) ids, image (B, N) codes."""
        B = text.size(0)
        soc = text.new_full((B, 1), self.soc_id)
        soi = text.new_full((B, 1), self.soi_id)
        img = image.reshape(B, -1).long() + self.args.text_vocab
        parts = [soc, text.long(), soi, img] if direction == T2I else [soi, img, soc, text.long()]
        return torch.cat(parts, dim=1)

    def _embed(self, ids: torch.Tensor, pos: torch.Tensor, seg: torch.Tensor, is_text: torch.Tensor) -> torch.Tensor:
        """Token + position + segment embedding; ``pos``/``seg``/``is_text`` are (T,) per-position constants."""
        if self.args.positions == "shared":
            pe = self.pos_emb[pos]
        else:
            pe = torch.where(is_text[:, None], self.text_pos[pos.clamp(max=self.args.text_len)],
                             self.image_pos[pos.clamp(max=self.args.image_tokens)])  # (T, C)
        x = self.tok_emb(ids) + pe
        return self.drop(x + self.seg_emb(seg) if self.seg_emb is not None else x)

    def _is_text(self, direction: str, start: int, T: int, device) -> torch.Tensor:
        L = self.args.text_len
        idx = torch.arange(start, start + T, device=device)
        return idx < L + 1 if direction == T2I else idx >= self.args.image_tokens + 1

    def _body(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.length += x.size(1)
        return self.ln_f(x)

    # -- training ------------------------------------------------------------------------------------------------
    def logits(self, text: torch.Tensor, image: torch.Tensor, direction: str):
        """Logits of every predicted token: (text_logits (B, L, V_t), image_logits (B, N, V_i)).

        Text logits are for t_1..t_L, image logits for i_1..i_N, whatever the direction.
        """
        seq = self.build_sequence(text, image, direction)  # (B, L+N+2)
        lay = self.layout(direction, seq.device)
        x_ids = seq[:, :-1]  # (B, L+N+1): the last token is never an input
        T = x_ids.size(1)
        is_text = self._is_text(direction, 0, T, seq.device)
        h = self._body(self._embed(x_ids, lay["pos"][:T], lay["seg"][:T], is_text))  # (B, T, C)
        return self.head_text(h[:, lay["text_out"]]), self.head_image(h[:, lay["image_out"]])

    def forward(self, text: torch.Tensor, image: torch.Tensor, direction: str) -> dict[str, torch.Tensor]:
        """Mean NLL of the [REF] and the [GEN] part (§3.4); text targets equal to [PAD] are excluded.

        Losses come out of ``forward`` so that a DistributedDataParallel wrapper sees the whole computation.
        """
        text_logits, image_logits = self.logits(text, image, direction)
        text_nll = F.cross_entropy(text_logits.float().flatten(0, 1), text.reshape(-1).long(),
                                   ignore_index=self.args.pad_id)
        image_nll = F.cross_entropy(image_logits.float().flatten(0, 1), image.reshape(-1).long())
        if direction == T2I:
            return {"ref": text_nll, "gen": image_nll}
        return {"ref": image_nll, "gen": text_nll}

    # -- sampling with a KV cache -------------------------------------------------------------------------------
    def _new_cache(self, B: int, max_len: int, device, dtype) -> KVCache:
        a = self.args
        return KVCache(a.n_layer, B, a.n_head, max_len, a.n_embd // a.n_head, device, dtype)

    @torch.no_grad()
    def _generate(self, prompt: torch.Tensor, direction: str, n_new: int, head: nn.Linear, *, temperature: float,
                  top_k: int, top_p: float, generator: torch.Generator | None, use_cache: bool,
                  sampler=None) -> torch.Tensor:
        """Sample ``n_new`` tokens after ``prompt`` (B, P) ids; returns them as head-local ids (B, n_new).

        ``sampler(logits (B, V)) -> ids (B,)``, called once per new token, replaces ``sample_next`` (and its
        settings); ``generate.RowSampler`` uses it to give every row its own random stream."""
        B, P = prompt.shape
        lay = self.layout(direction, prompt.device)
        offset = self.args.text_vocab if head is self.head_image else 0
        seq = prompt
        out = []
        dtype = self.tok_emb.weight.dtype  # under autocast, k and v come out of the Linear in the autocast dtype
        if torch.is_autocast_enabled(prompt.device.type):
            dtype = torch.get_autocast_dtype(prompt.device.type)
        cache = self._new_cache(B, P + n_new, prompt.device, dtype) if use_cache else None
        for _ in range(n_new):
            start = cache.length if use_cache else 0
            x_ids = seq[:, start:]
            T = x_ids.size(1)
            sl = slice(start, start + T)
            with sdpa_kernel(DECODE_BACKENDS):
                h = self._body(self._embed(x_ids, lay["pos"][sl], lay["seg"][sl],
                                           self._is_text(direction, start, T, prompt.device)), cache)
            logits = head(h[:, -1]).float()  # (B, V)
            if sampler is not None:
                nxt = sampler(logits)
            else:
                nxt = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            out.append(nxt)
            seq = torch.cat([seq, nxt[:, None] + offset], dim=1)
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def generate_image(self, text_tokens: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0,
                       top_p: float = 1.0, generator: torch.Generator | None = None, use_cache: bool = True,
                       as_grid: bool = False, sampler=None) -> torch.Tensor:
        """Text (B, L) ids -> image codes (B, N), or (B, g, g) with ``as_grid``; ``use_cache=False`` recomputes
        the whole sequence at every step (minGPT-style sampling, kept for tests and the benchmark)."""
        text_tokens = self._check_text(text_tokens)
        B = text_tokens.size(0)
        prompt = torch.cat([text_tokens.new_full((B, 1), self.soc_id), text_tokens,
                            text_tokens.new_full((B, 1), self.soi_id)], dim=1)
        codes = self._generate(prompt, T2I, self.args.image_tokens, self.head_image, temperature=temperature,
                               top_k=top_k, top_p=top_p, generator=generator, use_cache=use_cache, sampler=sampler)
        if as_grid:
            g = math.isqrt(self.args.image_tokens)
            return codes.view(B, g, g)
        return codes

    @torch.no_grad()
    def generate_text(self, image_codes: torch.Tensor, n_tokens: int | None = None, *, temperature: float = 1.0,
                      top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None,
                      use_cache: bool = True, sampler=None) -> torch.Tensor:
        """Image codes (B, N) or (B, g, g) -> ``n_tokens`` (default L) sampled text ids (B, n_tokens)."""
        B = image_codes.size(0)
        codes = image_codes.reshape(B, -1).long()
        if codes.size(1) != self.args.image_tokens:
            raise ValueError(f"image_codes has {codes.size(1)} codes per image; this BiART expects "
                             f"{self.args.image_tokens} (grid {math.isqrt(self.args.image_tokens)}^2)")
        if codes.min() < 0 or codes.max() >= self.args.image_vocab:
            raise ValueError(f"image codes must be in [0, {self.args.image_vocab}); got {int(codes.min())}.."
                             f"{int(codes.max())}")
        n_tokens = self.args.text_len if n_tokens is None else n_tokens
        if not 1 <= n_tokens <= self.args.text_len:
            raise ValueError(f"n_tokens={n_tokens} must be in 1..text_len={self.args.text_len}")
        prompt = torch.cat([codes.new_full((B, 1), self.soi_id), codes + self.args.text_vocab,
                            codes.new_full((B, 1), self.soc_id)], dim=1)
        return self._generate(prompt, I2T, n_tokens, self.head_text, temperature=temperature, top_k=top_k,
                              top_p=top_p, generator=generator, use_cache=use_cache, sampler=sampler)

    def _check_text(self, text: torch.Tensor) -> torch.Tensor:
        if text.dim() != 2 or text.size(1) != self.args.text_len:
            raise ValueError(f"text tokens must be (B, {self.args.text_len}) (biart.text_len), got "
                             f"{tuple(text.shape)}; encode them with the run's TextTokenizer")
        if text.min() < 0 or text.max() >= self.args.text_vocab:
            raise ValueError(f"text ids must be in [0, {self.args.text_vocab}); was the text encoded with a "
                             f"different tokenizer (compact vs full vocabulary)?")
        return text.long()

    # -- optimisation ------------------------------------------------------------------------------------------------
    def param_groups(self, weight_decay: float) -> list[dict]:
        """minGPT grouping: decay Linear weights only; biases, LayerNorms, embeddings and positions are not."""
        decay = {id(m.weight) for m in self.modules() if isinstance(m, nn.Linear)}
        params = list(self.parameters())
        return [{"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
                {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0}]
