"""Official AugVAE checkpoints (PyTorch Lightning ``.ckpt`` files of github tgisaturday/L-Verse) -> kit checkpoints.

    python -m lverse_core convert-official augvae_ml.ckpt --variant ml --profile paper   # runs/paper/augvae_ml.pt

The official model (``latent_verse/models/vqvae.py`` at commit e52ed9f, read in its copy MIMICLab/L-Verse at b019c1c
for key names and shapes; no code of it is used here; the keys and shapes are checked in as
``lverse_core/reference/official_augvae_keys_{ml,sl}.json``) is the kit's AugVAE with the parity options of the
``paper`` profile (``augvae.encoder_stem``, ``downsample_pad``, ``quant_bias``: models/augvae.py). Its state dict
differs in names and layout only:

    encoders.e.{conv_in, down.i.block.j, down.i.downsample.conv, mid.block_b, norm_out, conv_out}
        -> encoders.e.{conv_in, body.n, norm_out, conv_out}  (body: the levels' blocks and downsamplers, then mid)
    decoders.i.{conv_in, mid.block_b, up.i.block.j, up.i.upsample.conv, norm_out, conv_out}
        -> decoders.(n_dec - 1 - i).{conv_in, body.n, ...}  (official lists run deepest first; ``up`` is indexed
           finest first but runs deepest first; body: mid, then the levels deepest first)
    connectors.i -> connectors.(n_dec - 1 - i)                 SL only
    pre_quants.i.weight, post_quants.i.weight (tied) -> quant_conv.weight, post_quant_conv.weight
    pre_quants.i.bias, post_quants.i.bias -> row i of quant_conv.bias, post_quant_conv.bias
    quantizers.i.embedding.{weight, cluster_size, embed_avg} (tied) -> quantizer.{embed, cluster_size, embed_avg}
    loss.* (the LPIPS network of the training loss) -> dropped

The file is read with ``torch.load(weights_only=True)`` and only ``argparse.Namespace`` allowed besides tensors and
containers (the official hyper-parameters are a Namespace): nothing in it is executed. Every check runs before the
kit checkpoint is written (atomically), so a refused file leaves nothing behind.
"""
from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path
from typing import Any

import torch

from lverse_core.config import Config
from lverse_core.models.augvae import AugVAE
from lverse_core.models.quantize import EMAVectorQuantizer
from lverse_core.training.augvae_train import NAMES, VARIANTS, checkpoint_path, planned_steps
from lverse_core.training.loop import CheckpointError, check_model_args, save_checkpoint

ALLOWED_GLOBALS = [argparse.Namespace]
OFFICIAL_VARIANTS = ("ml", "sl")


class OfficialCheckpointError(CheckpointError):
    """A file that is not an official AugVAE checkpoint of the asked-for variant, or not one the kit can hold."""


# -- reading ---------------------------------------------------------------------------------------------------------

def read_official(path: str | Path) -> dict[str, Any]:
    """The official checkpoint's dict, loaded without executing code; an OfficialCheckpointError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"{path} does not exist or is not a file")
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise OfficialCheckpointError(_unreadable(path, e)) from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise OfficialCheckpointError(f"{path} is not a PyTorch Lightning checkpoint (no 'state_dict' dict); an "
                                      f"official AugVAE checkpoint is the .ckpt file its train_vae.py wrote")
    if "kind" in ckpt and "model" in ckpt:
        raise OfficialCheckpointError(f"{path} is already a kit checkpoint ('{ckpt['kind']}'); nothing to convert")
    hparams = ckpt.get("hyper_parameters")
    args = hparams.get("args") if isinstance(hparams, dict) else None
    if not isinstance(args, argparse.Namespace):
        raise OfficialCheckpointError(f"{path} has no official hyper-parameters (hyper_parameters['args'] as an "
                                      f"argparse.Namespace): it was not written by the official AugVAE")
    return ckpt


def _unreadable(path: Path, e: Exception) -> str:
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip file at all: truncated, random bytes, a legacy pickle
        unsafe = None
    if unsafe:
        return (f"{path} needs Python objects the kit does not load (only tensors, containers and argparse.Namespace "
                f"are allowed, so that nothing in the file runs): {', '.join(sorted(unsafe))}. Where these come "
                f"from the Lightning trainer (callbacks keyed by class), save the checkpoint's 'state_dict' and "
                f"'hyper_parameters' alone with the official code and convert that file")
    return (f"{path} cannot be read as a torch checkpoint ({type(e).__name__}: {str(e)[:200]}); it is truncated, "
            f"corrupt or not a .ckpt file")


# -- model arguments -------------------------------------------------------------------------------------------------

def _arg(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    return getattr(args, name, default)


def _need(args: argparse.Namespace, name: str) -> Any:
    if not hasattr(args, name):
        raise OfficialCheckpointError(f"the official hyper-parameters lack '{name}': not an AugVAE checkpoint of the "
                                      f"official train_vae.py")
    return getattr(args, name)


def official_model_args(args: argparse.Namespace, state: dict[str, torch.Tensor], variant: str,
                        cfg: Config) -> dict[str, Any]:
    """The kit's AugVAE arguments for an official model: from its hyper-parameters, and the level counts from its
    keys (the SL finetune keeps the ML's arguments but drops encoders and decoders). Options the kit cannot hold are
    refused; ``sl_level``/``sl_quantize_fine`` of an ML come from the profile (they do not shape an ML)."""
    refuse = []
    if _arg(args, "use_attn", False):
        refuse.append("use_attn is set (attention blocks; the paper's configs never set it)")
    if _arg(args, "double_z", False):
        refuse.append("double_z is set (an encoder output of 2 z channels; the paper's configs never set it)")
    if float(_arg(args, "dropout", 0.0) or 0.0) != 0.0:
        refuse.append(f"dropout is {args.dropout} (the kit's residual blocks have none)")
    if _arg(args, "in_channels", 3) != 3:
        refuse.append(f"in_channels is {args.in_channels} (RGB only)")
    ch_mult = list(_need(args, "ch_mult"))
    if len(ch_mult) < 2 or ch_mult[1:] != [2, 4]:
        refuse.append(f"ch_mult is {ch_mult}: the official E(2) is always [2, 4] and the kit builds it from "
                      f"ch_mult[1:]")
    z = _need(args, "z_channels")
    if _arg(args, "codebook_dim", z) != z:
        refuse.append(f"codebook_dim {args.codebook_dim} differs from z_channels {z}")
    if refuse:
        raise OfficialCheckpointError("the kit cannot hold this official model: " + "; ".join(refuse))
    n_levels = _count(state, r"pre_quants\.(\d+)\.")
    n_enc = _count(state, r"encoders\.(\d+)\.")
    attn = list(_arg(args, "attn_resolutions", []))
    if variant == "ml" and len(attn) != n_levels:
        raise OfficialCheckpointError(f"hyper-parameters name {len(attn)} levels (attn_resolutions {attn}) but the "
                                      f"weights hold {n_levels}")
    a = cfg.augvae
    n_res = int(_need(args, "num_res_blocks"))
    return dict(hidden=int(_need(args, "hidden_dim")), ch_mult=ch_mult, z_channels=int(z),
                codebook_size=int(_need(args, "num_tokens")), n_levels=n_levels,
                sl_level=a.sl_level if variant == "ml" else n_enc - 1,
                enc_res_blocks=n_res, dec_res_blocks=n_res + 1, mid_res_blocks=2, norm_groups=32,
                decay=float(_need(args, "quant_ema_decay")), eps=float(_need(args, "quant_ema_eps")),
                beta=float(_need(args, "quant_beta")), ema_update="per_level", dead_code_threshold=0.0,
                data_init=False,
                sl_quantize_fine=a.sl_quantize_fine if variant == "ml" else True,
                encoder_stem="official", downsample_pad="official", quant_bias="per_level")


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def detect_variant(state: dict[str, torch.Tensor]) -> str:
    """``sl`` when the weights hold the finetune's connectors, ``ml`` when they hold every level's encoder."""
    if not any(k.startswith("encoders.") for k in state) or not any(k.startswith("pre_quants.") for k in state):
        raise OfficialCheckpointError("the weights hold no AugVAE encoders and pre-quant convs: this is a checkpoint "
                                      "of another model")
    return "sl" if any(k.startswith("connectors.") for k in state) else "ml"


# -- renaming --------------------------------------------------------------------------------------------------------

def _levels(state: dict[str, torch.Tensor], prefix: str, part: str) -> tuple[int, int]:
    """(resolutions, residual blocks per resolution) of one official encoder (part 'down') or decoder ('up')."""
    found = [(int(m.group(1)), int(m.group(2))) for k in state
             if (m := re.match(rf"{re.escape(prefix)}{part}\.(\d+)\.block\.(\d+)\.", k))]
    if not found:
        raise OfficialCheckpointError(f"no {prefix}{part}.*.block.* weights: not an official AugVAE")
    return max(i for i, _ in found) + 1, max(j for _, j in found) + 1


def _block_tail(tail: str, key: str) -> str:
    head, _, rest = tail.partition(".")
    if head in ("norm1", "conv1", "norm2", "conv2"):
        return tail
    if head == "nin_shortcut":
        return "skip." + rest
    raise OfficialCheckpointError(f"{key}: a residual-block part the kit does not have ({head})")


def _encoder_key(rest: str, n_res_levels: int, r: int, key: str) -> str:
    if m := re.fullmatch(r"down\.(\d+)\.block\.(\d+)\.(.+)", rest):
        i, j = int(m.group(1)), int(m.group(2))
        return f"body.{i * (r + 1) + j}.{_block_tail(m.group(3), key)}"
    if m := re.fullmatch(r"down\.(\d+)\.downsample\.conv\.(weight|bias)", rest):
        return f"body.{int(m.group(1)) * (r + 1) + r}.{m.group(2)}"
    if m := re.fullmatch(r"mid\.block_([12])\.(.+)", rest):
        return f"body.{n_res_levels * r + n_res_levels - 1 + int(m.group(1)) - 1}.{_block_tail(m.group(2), key)}"
    if re.fullmatch(r"(conv_in|norm_out|conv_out)\.(weight|bias)", rest):
        return rest
    raise OfficialCheckpointError(f"{key}: an encoder part the kit does not have")


def _decoder_key(rest: str, n_res_levels: int, r: int, key: str) -> str:
    if m := re.fullmatch(r"mid\.block_([12])\.(.+)", rest):
        return f"body.{int(m.group(1)) - 1}.{_block_tail(m.group(2), key)}"
    if m := re.fullmatch(r"up\.(\d+)\.block\.(\d+)\.(.+)", rest):
        pos = n_res_levels - 1 - int(m.group(1))  # the kit's body runs deepest first
        return f"body.{2 + pos * (r + 1) + int(m.group(2))}.{_block_tail(m.group(3), key)}"
    if m := re.fullmatch(r"up\.(\d+)\.upsample\.conv\.(weight|bias)", rest):
        pos = n_res_levels - 1 - int(m.group(1))
        return f"body.{2 + pos * (r + 1) + r}.conv.{m.group(2)}"
    if re.fullmatch(r"(conv_in|norm_out|conv_out)\.(weight|bias)", rest):
        return rest
    raise OfficialCheckpointError(f"{key}: a decoder part the kit does not have")


_QUANT = {"pre_quants": "quant_conv", "post_quants": "post_quant_conv"}
_EMA = {"weight": "embed", "cluster_size": "cluster_size", "embed_avg": "embed_avg"}


def kit_key(key: str, levels_of, n_dec: int) -> tuple[str, int | None] | None:
    """Where official ``key`` goes in the kit's state dict: (kit key, bias row or None), or None (dropped).
    ``levels_of(prefix, part)`` gives (resolutions, blocks per resolution) of one encoder or decoder (``_levels``);
    ``n_dec`` is the number of official decoders."""
    if key.startswith("loss."):
        return None  # the training loss's LPIPS network: not part of the model
    if m := re.fullmatch(r"encoders\.(\d+)\.(.+)", key):
        levels, r = levels_of(f"encoders.{m.group(1)}.", "down")
        return f"encoders.{m.group(1)}.{_encoder_key(m.group(2), levels, r, key)}", None
    if m := re.fullmatch(r"decoders\.(\d+)\.(.+)", key):
        levels, r = levels_of(f"decoders.{m.group(1)}.", "up")
        return f"decoders.{n_dec - 1 - int(m.group(1))}.{_decoder_key(m.group(2), levels, r, key)}", None
    if m := re.fullmatch(r"connectors\.(\d+)\.(weight|bias)", key):
        return f"connectors.{n_dec - 1 - int(m.group(1))}.{m.group(2)}", None
    if m := re.fullmatch(r"(pre_quants|post_quants)\.(\d+)\.(weight|bias)", key):
        conv = _QUANT[m.group(1)]
        return (f"{conv}.weight", None) if m.group(3) == "weight" else (f"{conv}.bias", int(m.group(2)))
    if m := re.fullmatch(r"quantizers\.\d+\.embedding\.(weight|cluster_size|embed_avg)", key):
        return f"quantizer.{_EMA[m.group(1)]}", None
    raise OfficialCheckpointError(f"{key}: not a key of the official AugVAE")


def kit_state_from_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official state dict renamed to the kit's: loss dropped, tied copies merged (after checking that they are
    equal), per-level biases stacked in row order, every tensor float32."""
    n_dec = _count(state, r"decoders\.(\d+)\.")
    structure: dict[tuple[str, str], tuple[int, int]] = {}

    def levels_of(prefix: str, part: str) -> tuple[int, int]:  # one scan of the keys per module, not per key
        if (prefix, part) not in structure:
            structure[prefix, part] = _levels(state, prefix, part)
        return structure[prefix, part]

    whole: dict[str, tuple[str, torch.Tensor]] = {}
    rows: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in state.items():
        if not torch.is_tensor(value):
            raise OfficialCheckpointError(f"{key}: not a tensor")
        dest = kit_key(key, levels_of, n_dec)
        if dest is None:
            continue
        name, row = dest
        value = value.detach().to(torch.float32)
        if row is not None:
            rows.setdefault(name, {})[row] = value
        elif name in whole:  # a tied copy: the official modules share these tensors across levels
            first, kept = whole[name]
            if kept.shape != value.shape or not torch.equal(kept, value):
                raise OfficialCheckpointError(f"{key} and {first} should be one tied tensor but differ")
        else:
            whole[name] = (key, value)
    out = {name: value for name, (_, value) in whole.items()}
    for name, by_row in rows.items():
        if sorted(by_row) != list(range(len(by_row))):
            raise OfficialCheckpointError(f"{name}: per-level biases {sorted(by_row)} are not levels 0..n-1")
        out[name] = torch.stack([by_row[i] for i in range(len(by_row))])
    return out


# -- converting ------------------------------------------------------------------------------------------------------

def _check_shapes(model: AugVAE, state: dict[str, torch.Tensor], path: Path) -> None:
    # the quantizer's flag and restart counter are the kit's own training state: set below, not converted
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()
            if k not in ("quantizer.initted", "quantizer.idle_updates")}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    if missing or extra or wrong:
        parts = [f"missing {missing[:5]}" if missing else "", f"unexpected {extra[:5]}" if extra else "",
                 "shapes " + ", ".join(f"{k}: {got[k]} vs {want[k]}" for k in wrong[:5]) if wrong else ""]
        raise OfficialCheckpointError(f"{path}: the renamed weights do not fit the kit's AugVAE ("
                                      + "; ".join(p for p in parts if p) + ")")


def _plain(value: Any) -> Any:
    """A hyper-parameter as plain data (the kit's checkpoints load with weights_only and no allow-list)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def convert_official(cfg: Config, source: str | Path, variant: str, out: str | Path | None = None) -> Path:
    """Convert the official ``variant`` (ml | sl) checkpoint ``source`` into a kit checkpoint for profile ``cfg``
    (default ``runs/<profile>/augvae_<variant>.pt``), which ``load_augvae``, the notebooks and pre-tokenization use as
    they would a finished training of their own. Returns the path written."""
    if variant not in OFFICIAL_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(OFFICIAL_VARIANTS)} (official checkpoints are "
                         f"AugVAE-ML and AugVAE-SL), got {variant!r}")
    source = Path(source)
    ckpt = read_official(source)
    state = ckpt["state_dict"]
    found = detect_variant(state)
    if found != variant:
        raise OfficialCheckpointError(f"{source} holds an official AugVAE-{found.upper()}, not the "
                                      f"AugVAE-{variant.upper()} asked for (--variant {found})")
    args = ckpt["hyper_parameters"]["args"]
    model_args = official_model_args(args, state, variant, cfg)
    kit_state = kit_state_from_official(state)
    with torch.device("meta"):  # shapes only: no memory for a paper-size model
        shell = AugVAE(variant, **model_args)
    _check_shapes(shell, kit_state, source)
    with torch.device("meta"):
        expected = AugVAE.from_config(cfg, variant)
    dest = Path(out) if out is not None else checkpoint_path(cfg, variant)
    if dest.resolve() == source.resolve():
        raise OfficialCheckpointError(f"--out {dest} is the official file itself; write the kit checkpoint elsewhere")
    saved_args = {**shell.args, "variant": variant}
    try:
        check_model_args(source, saved_args, {**expected.args, "variant": variant})
    except CheckpointError as e:
        raise OfficialCheckpointError(f"{e}. The official AugVAE needs a profile with its architecture (paper, or "
                                      f"one that extends it)") from None
    model = AugVAE(variant, **model_args)
    kit_state["quantizer.initted"] = torch.tensor(True)
    kit_state = EMAVectorQuantizer.complete_state(kit_state, "quantizer.")
    model.load_state_dict(kit_state)
    digest = _sha256(source)
    save_checkpoint(dest, {
        "kind": VARIANTS[variant][1], "model_args": saved_args, "config": cfg.to_dict(),
        # a finished run of this profile: the trainer skips it, ml_to_sl and load_augvae take it as their own
        "step": planned_steps(cfg, variant), "finished": True, "model": model.state_dict(), "world_size": 1,
        "official": {"source": str(source), "sha256": digest, "epoch": _plain(ckpt.get("epoch")),
                     "global_step": _plain(ckpt.get("global_step")),
                     "args": {k: _plain(v) for k, v in sorted(vars(args).items())},
                     "batch_size": _plain(ckpt["hyper_parameters"].get("batch_size")),
                     "learning_rate": _plain(ckpt["hyper_parameters"].get("learning_rate"))}})
    # its provenance record: converted (not trained here) from the official file, so a reader and the trainer take
    # it as this profile's while the profile's architecture (augvae.*) is the one recorded
    from lverse_core import provenance

    made = provenance.made_from(cfg, VARIANTS[variant][1], {"official checkpoint": f"sha256:{digest[:24]}"},
                                NAMES[variant], architecture=("augvae",))
    provenance.record(dest, made, made_by="conversion", official_source=str(source))
    return dest
