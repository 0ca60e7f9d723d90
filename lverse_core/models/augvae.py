"""AugVAE: the feature-augmented VQ-VAE of L-Verse (paper §3.3), multi-level (ML) and single-level (SL).

Architecture as in the paper and the official code (github tgisaturday/L-Verse), written anew here:
Taming-style ResNet blocks (GroupNorm -> swish -> conv3x3, twice), stride-2 convs down, nearest + conv up, two
"mid" blocks at the deepest width in every encoder and decoder, no attention. The paper profile turns on three
parity options (below) and then has exactly the official trainable parameter counts, 221,224,195 for ML and
112,290,819 for SL (paper: ~100M SL); the kit's own variant has 222.9M / 112.8M.

    AugVAE-ML (256 px, n_levels = 4, level k has side 64 / 2^k):
        h_0 = E(4, z)(x)            h_k = E(2, z)(h_{k-1})                     encoders, k = 1..3
        q_k = VQ(quant_conv(h_k))   one EMA codebook shared by all levels (the "cross-level augmentation")
        d_3 = G(2, z)(post(q_3))    d_k = G(2, z)(cat(post(q_k), d_{k+1}))     k = 2, 1
        x^  = G(4, 3)(cat(post(q_0), d_1))
    AugVAE-SL (paper §3.3, finetuned from ML): keeps E(4), the first E(2), G(2) of level 1 and G(4, 3); each
        concatenation becomes a 1x1 "connector" conv z -> 2z, so the kept decoders keep their input width:
        x^ = G(4, 3)(conn_0(G(2, z)(conn_1(post(q_1)))))       one H/8 x H/8 code map (1024 codes at 256 px)

As in the official code, only the codebook and the pre/post-quant 1x1 convs are shared across levels; encoders and
decoders are per level. ``augvae.sl_quantize_fine`` reproduces the official SL that still quantizes the H/4 map
(commitment loss and EMA updates) although its codes are never decoded. Sizes come from the profile.

Parity options (config keys; the official values make official checkpoints load, docs/official-weights.md):
    encoder_stem     kit: each E(2) convolves z -> 2h first | official: conv_in z -> h, and the first residual
                     block widens h -> 2h through a 1x1 shortcut (GroupNorm then groups other channels: no exact
                     mapping between the two exists)
    downsample_pad   symmetric: 3x3 stride-2 conv with padding 1 | official: F.pad(x, (0, 1, 0, 1)), then the conv
                     without padding (same weights, different outputs)
    quant_bias       shared: one bias per 1x1 pre/post-quant conv | per_level: the weight shared, one bias per
                     level. The official code keeps its biases in the order of its module lists: pre-quant row k
                     serves level k; post-quant row i serves the i-th decoder it runs, deepest first, so ML level k
                     uses row n_levels - 1 - k and SL (official finetune) uses row 0, which an SL finetuned from an
                     ML starts from the bias ML learned for its deepest level.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lverse_core.models.quantize import EMAVectorQuantizer


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, ch, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class PadDownsample(nn.Conv2d):
    """Official (Taming) downsampling: zero-pad one column right and one row below, then a 3x3 stride-2 conv
    without padding. A Conv2d subclass so its weights keep the key names of the symmetric conv."""

    def __init__(self, ch: int):
        super().__init__(ch, ch, 3, stride=2, padding=0)

    def forward(self, x):
        return super().forward(F.pad(x, (0, 1, 0, 1)))


def _downsample(ch: int, pad: str) -> nn.Module:
    return PadDownsample(ch) if pad == "official" else nn.Conv2d(ch, ch, 3, stride=2, padding=1)


class Encoder(nn.Module):
    """E(f, d_out): (B, cin, n, n) -> (B, d_out, n/f, n/f), f = 2^(len(ch_mult) - 1).

    ``stem="official"``: conv_in goes to ``hidden`` channels and the first residual block widens them to
    ``hidden * ch_mult[0]`` (the same as the kit's stem when ch_mult[0] is 1, as in E(4)).
    """

    def __init__(self, cin: int, cout: int, hidden: int, ch_mult: list[int], n_res: int, groups: int, n_mid: int = 2,
                 stem: str = "kit", downsample_pad: str = "symmetric"):
        super().__init__()
        chs = [hidden * m for m in ch_mult]
        prev = hidden if stem == "official" else chs[0]
        self.conv_in = nn.Conv2d(cin, prev, 3, padding=1)
        layers: list[nn.Module] = []
        for i, ch in enumerate(chs):
            for _ in range(n_res):
                layers.append(ResBlock(prev, ch, groups))
                prev = ch
            if i < len(chs) - 1:
                layers.append(_downsample(prev, downsample_pad))
        layers += [ResBlock(prev, prev, groups) for _ in range(n_mid)]  # Taming's mid blocks (no attention)
        self.body = nn.Sequential(*layers)
        self.norm_out, self.conv_out = _norm(prev, groups), nn.Conv2d(prev, cout, 3, padding=1)

    def forward(self, x):
        return self.conv_out(F.silu(self.norm_out(self.body(self.conv_in(x)))))


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    """G(f, d_out): (B, cin, n, n) -> (B, d_out, n*f, n*f), channels run through ch_mult in reverse."""

    def __init__(self, cin: int, cout: int, hidden: int, ch_mult: list[int], n_res: int, groups: int, n_mid: int = 2):
        super().__init__()
        chs = [hidden * m for m in reversed(ch_mult)]
        self.conv_in = nn.Conv2d(cin, chs[0], 3, padding=1)
        layers: list[nn.Module] = [ResBlock(chs[0], chs[0], groups) for _ in range(n_mid)]  # Taming's mid blocks
        prev = chs[0]
        for i, ch in enumerate(chs):
            for _ in range(n_res):
                layers.append(ResBlock(prev, ch, groups))
                prev = ch
            if i < len(chs) - 1:
                layers.append(Upsample(prev))
        self.body = nn.Sequential(*layers)
        self.norm_out, self.conv_out = _norm(prev, groups), nn.Conv2d(prev, cout, 3, padding=1)

    def forward(self, x):
        return self.conv_out(F.silu(self.norm_out(self.body(self.conv_in(x)))))


class LevelBiasConv1x1(nn.Module):
    """A 1x1 conv whose weight serves every level and whose bias has one row per level (the official pre/post-quant
    convs: weights tied across levels, biases not). Initialised as ``nn.Conv2d`` would initialise each level."""

    def __init__(self, cin: int, cout: int, n_rows: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, 1, 1))
        self.bias = nn.Parameter(torch.empty(n_rows, cout))  # (levels, cout)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(cin)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x, row: int):
        return F.conv2d(x, self.weight, self.bias[row])


# training steps a dead code waits without a vector before it is restarted (quantize.py; augvae.restart_patience)
RESTART_PATIENCE = 10

# parity options: name -> (kit value, official value); stored in model args only when not the kit's value, so
# checkpoints written before the options existed load as the kit's variant
PARITY_OPTIONS = {"encoder_stem": ("kit", "official"), "downsample_pad": ("symmetric", "official"),
                  "quant_bias": ("shared", "per_level")}


def model_args_from_config(cfg) -> dict[str, Any]:
    """The architecture arguments of AugVAE for a profile (what a checkpoint stores as ``model_args``)."""
    a = cfg.augvae
    down = 2 ** (len(a.ch_mult) - 1) * 2 ** a.sl_level
    if cfg.data.image_size // down != cfg.image_grid:
        raise ValueError(
            f"augvae: ch_mult {a.ch_mult} with sl_level {a.sl_level} gives an SL grid of image_size/{down}, but the "
            f"kit's image grid is image_size/8 (paper: 256 px -> 32x32); use a 3-entry ch_mult and sl_level 1")
    return dict(hidden=a.hidden, ch_mult=list(a.ch_mult), z_channels=a.z_channels, codebook_size=a.codebook_size,
                n_levels=a.n_levels, sl_level=a.sl_level, enc_res_blocks=a.enc_res_blocks,
                dec_res_blocks=a.dec_res_blocks, mid_res_blocks=a.mid_res_blocks, norm_groups=a.norm_groups,
                decay=a.decay, eps=a.eps, beta=a.beta,
                ema_update=a.ema_update, dead_code_threshold=a.dead_code_threshold, data_init=a.data_init,
                restart_patience=a.restart_patience, sl_quantize_fine=a.sl_quantize_fine, codebook=a.codebook,
                **{name: getattr(a, name) for name in PARITY_OPTIONS})


class AugVAE(nn.Module):
    """AugVAE-ML (``variant="ml"``) or AugVAE-SL (``variant="sl"``); see the module docstring."""

    def __init__(self, variant: str = "ml", *, hidden: int, ch_mult: list[int], z_channels: int, codebook_size: int,
                 n_levels: int, sl_level: int = 1, enc_res_blocks: int = 2, dec_res_blocks: int = 3,
                 mid_res_blocks: int = 2, norm_groups: int = 32, decay: float = 0.99, eps: float = 1e-5,
                 beta: float = 0.25,
                 ema_update: str = "per_level", dead_code_threshold: float = 0.0, data_init: bool = False,
                 restart_patience: int = RESTART_PATIENCE, sl_quantize_fine: bool = False, codebook: str = "shared",
                 encoder_stem: str = "kit", downsample_pad: str = "symmetric", quant_bias: str = "shared",
                 in_channels: int = 3):
        super().__init__()
        options = dict(encoder_stem=encoder_stem, downsample_pad=downsample_pad, quant_bias=quant_bias)
        for name, value in options.items():
            if value not in PARITY_OPTIONS[name]:
                raise ValueError(f"augvae.{name} must be one of {', '.join(PARITY_OPTIONS[name])}, got {value!r}")
        if variant not in ("ml", "sl"):
            raise ValueError(f"variant must be 'ml' or 'sl', got {variant!r}")
        if codebook not in ("shared", "per_level"):
            raise ValueError(f"augvae.codebook must be 'shared' or 'per_level', got {codebook!r}")
        if codebook == "per_level" and codebook_size % n_levels:
            raise ValueError(f"augvae.codebook per_level splits the {codebook_size} codes into {n_levels} equal "
                             f"parts: make codebook_size a multiple of n_levels")
        if ema_update not in ("per_level", "pooled"):
            raise ValueError(f"ema_update must be 'per_level' or 'pooled', got {ema_update!r}")
        if len(ch_mult) < 2:
            raise ValueError(f"ch_mult needs at least 2 entries (E(2) uses ch_mult[1:]), got {ch_mult}")
        self.variant, self.ema_update, self.sl_quantize_fine = variant, ema_update, sl_quantize_fine
        self.codebook = codebook
        self.args = dict(hidden=hidden, ch_mult=list(ch_mult), z_channels=z_channels, codebook_size=codebook_size,
                         n_levels=n_levels, sl_level=sl_level, enc_res_blocks=enc_res_blocks,
                         dec_res_blocks=dec_res_blocks, mid_res_blocks=mid_res_blocks, norm_groups=norm_groups,
                         decay=decay, eps=eps, beta=beta,
                         ema_update=ema_update, dead_code_threshold=dead_code_threshold, data_init=data_init,
                         sl_quantize_fine=sl_quantize_fine)
        if codebook != "shared":  # stored only when not the default: older checkpoints keep loading
            self.args["codebook"] = codebook
        if restart_patience != RESTART_PATIENCE:  # likewise (a training setting: it shapes no weights' layout)
            self.args["restart_patience"] = restart_patience
        # likewise: recorded only when not the kit's value
        self.args.update({name: value for name, value in options.items() if value != PARITY_OPTIONS[name][0]})
        self.quant_bias = quant_bias
        self.n_levels, self.sl_level = n_levels, sl_level
        z, g = z_channels, norm_groups
        # SL keeps levels 0..sl_level (their encoders and decoders); ML keeps all
        n_enc = n_levels if variant == "ml" else sl_level + 1
        enc_opts = dict(stem=encoder_stem, downsample_pad=downsample_pad)
        self.encoders = nn.ModuleList(
            [Encoder(in_channels, z, hidden, ch_mult, enc_res_blocks, g, mid_res_blocks, **enc_opts)]
            + [Encoder(z, z, hidden, ch_mult[1:], enc_res_blocks, g, mid_res_blocks, **enc_opts)
               for _ in range(1, n_enc)])
        # decoder k reads level k; the deepest ML decoder sees post(q) alone, the others a 2z-wide input
        self.decoders = nn.ModuleList(
            [Decoder(2 * z, in_channels, hidden, ch_mult, dec_res_blocks, g, mid_res_blocks)]
            + [Decoder(z if (variant == "ml" and k == n_levels - 1) else 2 * z, z, hidden, ch_mult[1:],
                       dec_res_blocks, g, mid_res_blocks) for k in range(1, n_enc)])
        # shared across levels (official code); per_level: one bias row per level of the ML, kept by the SL too
        if quant_bias == "per_level":
            self.quant_conv = LevelBiasConv1x1(z, z, n_levels)
            self.post_quant_conv = LevelBiasConv1x1(z, z, n_levels)
        else:
            self.quant_conv = nn.Conv2d(z, z, 1)
            self.post_quant_conv = nn.Conv2d(z, z, 1)
        # the patience is in training steps; the quantizer counts codebook updates (one per quantized level and
        # step when the shared codebook is updated per level, else one per step)
        per_step = len(self.quantized_levels()) if (ema_update == "per_level" and codebook == "shared") else 1
        self.quantizer = EMAVectorQuantizer(codebook_size, z, decay, eps, beta, dead_code_threshold, data_init,
                                            restart_patience=restart_patience * per_step)
        # SL: 1x1 convs z -> 2z replacing the concatenations (paper §3.3), one before each kept decoder
        self.connectors = nn.ModuleList([nn.Conv2d(z, 2 * z, 1) for _ in range(n_enc)]) if variant == "sl" else None

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg, variant: str = "ml") -> "AugVAE":
        return cls(variant, **model_args_from_config(cfg))

    @classmethod
    def ml_to_sl(cls, ml: "AugVAE") -> "AugVAE":
        """AugVAE-SL initialised from a trained AugVAE-ML: shared weights copied, connectors new (paper §3.3)."""
        if ml.variant != "ml":
            raise ValueError("ml_to_sl needs an AugVAE-ML model")
        sl = cls("sl", **ml.args).to(next(ml.parameters()).device)
        missing, unexpected = sl.load_state_dict(ml.state_dict(), strict=False)
        # only the connectors may be new, and only the dropped deeper levels may be left over: anything else
        # would mean the two architectures drifted apart
        bad_missing = [k for k in missing if not k.startswith("connectors.")]
        bad_unexpected = [k for k in unexpected if not any(k.startswith(f"{p}.{i}.") for p in ("encoders", "decoders")
                                                           for i in range(sl.sl_level + 1, ml.n_levels))]
        if bad_missing or bad_unexpected:
            raise RuntimeError(f"ml_to_sl: state dicts do not line up (missing {bad_missing}, extra {bad_unexpected})")
        return sl

    # -- levels --------------------------------------------------------------------------------------------------
    def _pre_quant(self, h, level: int):
        return self.quant_conv(h, level) if self.quant_bias == "per_level" else self.quant_conv(h)

    def _post_quant(self, q, level: int):
        if self.quant_bias != "per_level":
            return self.post_quant_conv(q)
        # the official order (module docstring): the decoders run deepest first; SL reuses the first row
        row = self.n_levels - 1 - level if self.variant == "ml" else 0
        return self.post_quant_conv(q, row)

    def _encode_levels(self, x):
        """Continuous per-level latents z_k = quant_conv(h_k), finest first."""
        h = x
        zs = []
        for k, enc in enumerate(self.encoders):
            h = enc(h)
            zs.append(self._pre_quant(h, k))
        return zs

    def quantized_levels(self) -> list[int]:
        """The levels a training step quantizes (and updates the codebook with): every ML level; SL its own, and
        the H/4 map too with ``sl_quantize_fine``."""
        if self.variant == "ml":
            return list(range(self.n_levels))
        return sorted({0, self.sl_level}) if self.sl_quantize_fine else [self.sl_level]

    def _decode_quantized(self, qs: dict[int, torch.Tensor]) -> torch.Tensor:
        """Decode from quantized maps {level: (B, z, h_k, w_k)} (ML: all levels; SL: sl_level)."""
        if self.variant == "ml":
            d = None
            for k in reversed(range(self.n_levels)):
                p = self._post_quant(qs[k], k)
                d = self.decoders[k](p if d is None else torch.cat([p, d], 1))
            return d
        d = self.connectors[self.sl_level](self._post_quant(qs[self.sl_level], self.sl_level))
        for k in reversed(range(self.sl_level + 1)):
            if k < self.sl_level:
                d = self.connectors[k](d)
            d = self.decoders[k](d)
        return d

    # -- public API ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor):
        """Images in [-1, 1] (B, 3, H, W) -> ML: list of n_levels (B, h_k, w_k) long maps; SL: (B, H/8, W/8) long."""
        zs = self._encode_levels(x)
        levels = range(self.n_levels) if self.variant == "ml" else [self.sl_level]
        codes = [self.quantizer.nearest(zs[k].permute(0, 2, 3, 1).reshape(-1, zs[k].shape[1]), self.code_range(k))
                 .view(zs[k].shape[0], *zs[k].shape[2:]) for k in levels]
        return codes if self.variant == "ml" else codes[0]

    def code_range(self, level: int) -> tuple[int, int] | None:
        """The codes ``level`` may use: None (all: one shared codebook, the paper) or, with ``codebook:
        per_level`` (the control of the cross-level augmentation claim), its own 1/n_levels of the codebook, so
        levels cannot share codes while the total number of codes stays the same."""
        if self.codebook == "shared":
            return None
        size = self.quantizer.codebook_size // self.n_levels
        return level * size, (level + 1) * size

    @torch.no_grad()
    def decode(self, codes) -> torch.Tensor:
        """Codes as returned by :meth:`encode` -> images in [-1, 1] (B, 3, H, W)."""
        if self.variant == "ml":
            if not isinstance(codes, (list, tuple)) or len(codes) != self.n_levels:
                raise ValueError(f"AugVAE-ML decode needs a list of {self.n_levels} code maps")
            qs = {k: self.quantizer.lookup(c.long()) for k, c in enumerate(codes)}
        else:
            if not torch.is_tensor(codes) or codes.dim() != 3:
                raise ValueError("AugVAE-SL decode needs one (B, g, g) code tensor")
            if int(codes.max()) >= self.quantizer.codebook_size or int(codes.min()) < 0:
                raise ValueError(f"codes must lie in [0, {self.quantizer.codebook_size})")
            qs = {self.sl_level: self.quantizer.lookup(codes.long())}
        return self._decode_quantized(qs).clamp(-1, 1)

    def forward(self, x: torch.Tensor, quantize: bool = True):
        """Training pass: (reconstruction (B, 3, H, W) unclamped, dict with ``loss`` (tensor) and statistics (0-dim
        float64 tensors on the device, detached: nothing is read back to the host during a step).

        ``loss`` = MSE(x^, x) + sum of the commitment losses of the quantized levels; the EMA codebook is
        updated here in training mode (per level or pooled, ``ema_update``) and never in eval mode.
        ``quantize=False`` (single-level models only) decodes the continuous latent as it is, a plain
        autoencoder: ``loss`` is the MSE alone, the codebook is not touched, and the dict also holds ``vectors``,
        the (B*h*w, z) detached encoder vectors, for a k-means start of the codebook (``augvae_train``'s
        ``unquantized_steps``).
        """
        zs = self._encode_levels(x)
        if not quantize:
            if self.variant != "sl":
                raise ValueError("quantize=False (an unquantized warm-up) is for single-level models only")
            k = self.sl_level
            recon = self._decode_quantized({k: zs[k]})
            mse = F.mse_loss(recon, x)
            vectors = zs[k].detach().float().permute(0, 2, 3, 1).reshape(-1, zs[k].shape[1])
            zero = mse.new_zeros((), dtype=torch.float64)
            return recon, {"loss": mse, "mse": mse.detach().double(), f"perplexity_l{k}": zero, f"used_l{k}": zero,
                           "commit": zero, "dead": self.quantizer.dead_count(), "restarted": zero, "vectors": vectors}
        quantized = self.quantized_levels()
        qs, commit, pending, stats = {}, x.new_zeros(()), [], {}
        updates = []  # each codebook update's hit and restarted codes: the step's dead and restarted counts
        if self.codebook == "per_level" and self.training and not self.quantizer.is_initialised():
            for k in quantized:  # each level's codes start from that level's own encoder vectors
                z = zs[k].detach().float()
                self.quantizer._init_from_data_(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), self.code_range(k))
        for k in quantized:
            z_q, codes, loss_k, flat = self.quantizer(zs[k], self.code_range(k))
            qs[k] = z_q
            commit = commit + loss_k
            if self.ema_update == "per_level" or self.codebook == "per_level":  # disjoint ranges: one step each
                updates.append(self.quantizer.update_(flat, codes, self.code_range(k)))
            else:
                pending.append((flat, codes))
            u = self.quantizer.usage(codes)
            stats[f"perplexity_l{k}"], stats[f"used_l{k}"] = u["perplexity"], u["used"]
        if pending:
            updates.append(self.quantizer.update_(torch.cat([f for f, _ in pending]),
                                                  torch.cat([c.reshape(-1) for _, c in pending])))
        recon = self._decode_quantized(qs)
        mse = F.mse_loss(recon, x)
        stats.update(mse=mse.detach().double(), commit=commit.detach().double(),
                     **self.quantizer.step_statistics(updates))
        return recon, {"loss": mse + commit, **stats}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
