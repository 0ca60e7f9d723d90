"""Official AugVAE checkpoints -> kit checkpoints (lverse_core/training/official_augvae.py), with no official file:
checkpoints in the official layout are written from the checked-in key manifest (lverse_core/reference/
official_augvae_keys_*.json) at a small size, converted, and checked tensor by tensor; a small kit model goes to the
official layout and back with identical outputs and codes; every refusal leaves nothing written."""
from __future__ import annotations

import argparse
import collections
import json
import math

import pytest
import torch

from lverse_core.config import REPO_ROOT, load_profile
from lverse_core.models.augvae import AugVAE
from lverse_core.pipeline.cli import main
from lverse_core.training.augvae_train import checkpoint_path, load_augvae
from lverse_core.training.loop import load_checkpoint, save_checkpoint
from lverse_core.training.official_augvae import OfficialCheckpointError, convert_official

REFERENCE = REPO_ROOT / "lverse_core" / "reference"
SMALL = {"h": 32, "2h": 64, "4h": 128, "z": 32, "2z": 64, "K": 64}  # GroupNorm(32) needs multiples of 32


def manifest(variant: str) -> list[dict]:
    return json.loads((REFERENCE / f"official_augvae_keys_{variant}.json").read_text())["entries"]


def small_cfg(tmp_path, **over):
    augvae = {"hidden": 32, "ch_mult": [1, 2, 4], "z_channels": 32, "codebook_size": 64, "n_levels": 4,
              "sl_level": 1, "enc_res_blocks": 2, "dec_res_blocks": 3, "mid_res_blocks": 2, "norm_groups": 32,
              "ema_update": "per_level", "dead_code_threshold": 0.0, "data_init": False, "sl_quantize_fine": True,
              "encoder_stem": "official", "downsample_pad": "official", "quant_bias": "per_level"}
    return load_profile("ci", runs_dir=str(tmp_path / "runs"), reports_dir=str(tmp_path / "reports"),
                        augvae=augvae, **over)


def official_args(**over) -> argparse.Namespace:
    """The official train_vae.py arguments of the paper's configs, at the small size."""
    args = dict(hidden_dim=32, in_channels=3, out_channels=3, ch_mult=[1, 2, 4], num_res_blocks=2, dropout=0.0,
                attn_resolutions=[8, 4, 2, 1], resolution=32, z_channels=32, codebook_dim=32, double_z=False,
                use_attn=False, num_tokens=64, quant_beta=0.25, quant_ema_decay=0.99, quant_ema_eps=1e-5,
                loss_type="lpips_l2", p_loss_weight=0.1, learning_rate=2.88e-4, base_lr=4.5e-6, world_size=8,
                lr_decay=True, epochs=30, batch_size=8, finetune=False)
    return argparse.Namespace(**{**args, **over})


def shape(entry: dict) -> list[int]:
    return [SMALL[d] if isinstance(d, str) else d for d in entry["dims"]]


def official_state(variant: str, value_of) -> collections.OrderedDict:
    """An official-layout state dict: ``value_of(entry)`` gives each key's tensor; tied keys share one tensor, as
    the official modules do (torch.save then stores it once)."""
    state, groups = collections.OrderedDict(), {}
    for e in manifest(variant):
        if "tied" in e:
            groups.setdefault(e["tied"], value_of(e))
            state[e["key"]] = groups[e["tied"]]
        else:
            state[e["key"]] = value_of(e)
    return state


def write_official(path, variant: str, state, args=None, **extra) -> None:
    """A PyTorch Lightning checkpoint as the official trainer writes it."""
    torch.save({"epoch": 29, "global_step": 480_000, "pytorch-lightning_version": "1.5.10", "state_dict": state,
                "callbacks": {"ModelCheckpoint{'monitor': 'val/total_loss'}": {
                    "monitor": "val/total_loss", "best_model_score": torch.tensor(0.05), "best_model_path": "x.ckpt"}},
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 2.88e-4, "params": [0]}]}],
                "lr_schedulers": [{"mode": "min", "factor": 0.5, "patience": 10, "best": 0.05}],
                "hparams_name": "kwargs",
                "hyper_parameters": {"args": args or official_args(finetune=variant == "sl"), "batch_size": 8,
                                     "learning_rate": 2.88e-4}, **extra}, path)


def random_value(e: dict, gen=torch.Generator().manual_seed(0)) -> torch.Tensor:
    if e["key"].endswith("cluster_size"):
        return torch.rand(shape(e), generator=gen) * 10
    return torch.randn(shape(e), generator=gen) * 0.05


# -- the manifest ----------------------------------------------------------------------------------------------------

def test_manifest_gives_the_official_trainable_counts_and_key_counts():
    for variant, trainable, keys in (("ml", 221_224_195, 610), ("sl", 112_290_819, 346)):
        entries = [e for e in manifest(variant) if not e["key"].startswith("loss.")]
        assert len(entries) == keys
        seen, total = set(), 0
        for e in entries:
            if e["key"].startswith("quantizers.") or e.get("tied", e["key"]) in seen:  # EMA: no gradient
                continue
            seen.add(e.get("tied", e["key"]))
            total += math.prod(e["shape"])
        assert total == trainable, variant
        paper = {"h": 128, "2h": 256, "4h": 512, "z": 256, "2z": 512, "K": 8192}
        assert all(e["shape"] == [paper[d] if isinstance(d, str) else d for d in e["dims"]] for e in entries)


# -- converting the official layout ----------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["ml", "sl"])
def test_every_official_tensor_lands_where_the_manifest_says_and_the_model_runs(tmp_path, variant):
    cfg = small_cfg(tmp_path)
    state = official_state(variant, random_value)
    src = tmp_path / f"official_{variant}.ckpt"
    write_official(src, variant, state)
    path = convert_official(cfg, src, variant)
    assert path == checkpoint_path(cfg, variant)
    kit = load_checkpoint(path, f"augvae-{variant}")
    assert kit["finished"] and kit["official"]["global_step"] == 480_000 and kit["official"]["args"]["num_tokens"] == 64
    model_state = kit["model"]
    landed = set()
    for e in manifest(variant):
        if e["kit"] is None:
            continue  # the loss's LPIPS network is dropped
        got = model_state[e["kit"]][e["row"]] if "row" in e else model_state[e["kit"]]
        assert torch.equal(got, state[e["key"]]), e["key"]
        landed.add(e["kit"])
    # the kit's own training state of the codebook: set by the conversion (initialised, every code just hit)
    assert landed == set(model_state) - {"quantizer.initted", "quantizer.idle_updates"}
    assert model_state["quantizer.initted"] and model_state["quantizer.idle_updates"].eq(0).all()
    model = load_augvae(cfg, variant, "cpu")  # as notebooks 01/03 and pre-tokenization load their own
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    codes = model.encode(x)
    if variant == "ml":
        assert [tuple(c.shape) for c in codes] == [(2, 8, 8), (2, 4, 4), (2, 2, 2), (2, 1, 1)]
    else:
        assert tuple(codes.shape) == (2, 4, 4)
    out = model.decode(codes)
    assert out.shape == x.shape and torch.isfinite(out).all()


def kit_to_official(model: AugVAE, variant: str) -> collections.OrderedDict:
    """The official layout of a kit model, through the manifest alone."""
    sd = model.state_dict()
    return official_state(variant, lambda e: (sd[e["kit"]][e["row"]] if "row" in e else sd[e["kit"]]).clone()
                          if e["kit"] else torch.zeros(shape(e)))


def test_round_trip_kit_to_official_and_back_gives_identical_outputs_and_codes(tmp_path):
    torch.manual_seed(0)
    cfg = small_cfg(tmp_path)
    ml = AugVAE.from_config(cfg, "ml")
    with torch.no_grad():  # distinct per-level biases, so a wrong row would show
        ml.quant_conv.bias.add_(torch.randn_like(ml.quant_conv.bias))
        ml.post_quant_conv.bias.add_(torch.randn_like(ml.post_quant_conv.bias))
    ml.train()(torch.rand(4, 3, 32, 32) * 2 - 1)  # one EMA update: a codebook that is not the initial one
    sl = AugVAE.ml_to_sl(ml)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    for variant, model in (("ml", ml.eval()), ("sl", sl.eval())):
        src = tmp_path / f"{variant}.ckpt"
        write_official(src, variant, kit_to_official(model, variant))
        convert_official(cfg, src, variant)
        back = load_augvae(cfg, variant, "cpu")
        codes, back_codes = model.encode(x), back.encode(x)
        if variant == "ml":
            assert all(torch.equal(a, b) for a, b in zip(codes, back_codes))
        else:
            assert torch.equal(codes, back_codes)
        assert torch.equal(back.decode(back_codes), model.decode(codes))
        with torch.no_grad():
            assert torch.equal(back(x)[0], model(x)[0])


# -- refusals --------------------------------------------------------------------------------------------------------

def _refused(cfg, src, variant, match, out=None):
    dest = out or checkpoint_path(cfg, variant)
    with pytest.raises(OfficialCheckpointError, match=match):
        convert_official(cfg, src, variant, out)
    assert not dest.exists()
    if dest.parent.exists():
        assert not list(dest.parent.glob(f"{dest.name}.*.tmp"))


def test_a_wrong_variant_is_refused(tmp_path):
    cfg = small_cfg(tmp_path)
    src = tmp_path / "ml.ckpt"
    write_official(src, "ml", official_state("ml", random_value))
    _refused(cfg, src, "sl", r"holds an official AugVAE-ML, not the AugVAE-SL.*--variant ml")
    with pytest.raises(ValueError, match="variant must be one of ml, sl"):
        convert_official(cfg, src, "baseline")


def test_files_that_are_not_official_checkpoints_are_refused(tmp_path):
    cfg = small_cfg(tmp_path)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00not a checkpoint" * 100)
    _refused(cfg, junk, "ml", "cannot be read as a torch checkpoint")
    _refused(cfg, tmp_path / "absent.ckpt", "ml", "does not exist")
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    _refused(cfg, plain, "ml", "not a PyTorch Lightning checkpoint")
    kit = tmp_path / "kit.pt"
    save_checkpoint(kit, {"kind": "augvae-ml", "model": {}, "state_dict": {}})
    _refused(cfg, kit, "ml", "already a kit checkpoint")
    no_args = tmp_path / "no_args.ckpt"
    torch.save({"state_dict": official_state("ml", random_value), "hyper_parameters": {"batch_size": 8}}, no_args)
    _refused(cfg, no_args, "ml", "no official hyper-parameters")
    partial = tmp_path / "partial.ckpt"
    args = official_args()
    del args.num_tokens
    write_official(partial, "ml", official_state("ml", random_value), args=args)
    _refused(cfg, partial, "ml", "lack 'num_tokens'")


class Payload:
    """Stands for any Python object a checkpoint might carry: loading it would run code from the file."""

    def __reduce__(self):
        return (print, ("this ran",))


def test_objects_other_than_namespace_are_refused_without_running_them(tmp_path, capsys):
    cfg = small_cfg(tmp_path)
    src = tmp_path / "payload.ckpt"
    write_official(src, "ml", official_state("ml", random_value), extra_object=Payload())
    _refused(cfg, src, "ml", r"needs Python objects the kit does not load.*print")
    assert "this ran" not in capsys.readouterr().out


@pytest.mark.parametrize("over,match", [({"use_attn": True}, "use_attn is set"), ({"double_z": True}, "double_z"),
                                        ({"dropout": 0.1}, "dropout"), ({"ch_mult": [1, 2, 4, 8]}, "ch_mult"),
                                        ({"codebook_dim": 16}, "codebook_dim")])
def test_official_options_the_kit_cannot_hold_are_refused(tmp_path, over, match):
    cfg = small_cfg(tmp_path)
    src = tmp_path / "opt.ckpt"
    write_official(src, "ml", official_state("ml", random_value), args=official_args(**over))
    _refused(cfg, src, "ml", match)


def test_other_architectures_and_inconsistent_weights_are_refused(tmp_path):
    cfg = small_cfg(tmp_path)
    other = tmp_path / "other.ckpt"
    write_official(other, "ml", collections.OrderedDict({"model.layer1.weight": torch.zeros(4, 4)}))
    _refused(cfg, other, "ml", "another model")
    state = official_state("ml", random_value)
    state["pre_quants.2.weight"] = state["pre_quants.0.weight"] + 1  # tied copies that were not tied
    untied = tmp_path / "untied.ckpt"
    write_official(untied, "ml", state)
    _refused(cfg, untied, "ml", "should be one tied tensor but differ")
    wide = tmp_path / "wide.ckpt"
    write_official(wide, "ml", official_state("ml", random_value), args=official_args(hidden_dim=64))
    _refused(cfg, wide, "ml", "do not fit the kit's AugVAE")
    extra = official_state("ml", random_value)
    extra["encoders.0.mid.attn_1.q.weight"] = torch.zeros(1)
    attn = tmp_path / "attn.ckpt"
    write_official(attn, "ml", extra)
    _refused(cfg, attn, "ml", "encoder part the kit does not have")


def test_a_profile_without_the_official_architecture_is_refused(tmp_path):
    src = tmp_path / "ml.ckpt"
    write_official(src, "ml", official_state("ml", random_value))
    kit_modules = small_cfg(tmp_path, **{"augvae.encoder_stem": "kit"})
    _refused(kit_modules, src, "ml", r"encoder_stem.*profile with its architecture")
    smaller_codebook = small_cfg(tmp_path, **{"augvae.codebook_size": 32})
    _refused(smaller_codebook, src, "ml", "codebook_size")


def test_the_command_line_reports_a_refusal_and_writes_nothing(tmp_path, capsys, workdir):
    src = tmp_path / "ml.ckpt"
    write_official(src, "ml", official_state("ml", random_value))
    out = tmp_path / "converted.pt"
    assert main(["convert-official", str(src), "--variant", "sl", "--profile", "ci", "--out", str(out)]) == 1
    assert "not the AugVAE-SL asked for" in capsys.readouterr().err and not out.exists()
    assert main(["convert-official", str(src), "--variant", "ml", "--profile", "ci", "--out", str(out)]) == 1
    assert "profile with its architecture" in capsys.readouterr().err and not out.exists()


def test_converted_weights_are_used_as_a_finished_training_of_the_profile(tmp_path):
    from lverse_core.pipeline.recon_eval import logged_variants
    from lverse_core.training.augvae_train import train_augvae

    cfg = small_cfg(tmp_path, **{"augvae_train.sl_steps": 1, "augvae_train.unquantized_steps": 0,
                                 "augvae_train.batch_size": 2})
    src = tmp_path / "ml.ckpt"
    write_official(src, "ml", official_state("ml", random_value))
    path = convert_official(cfg, src, "ml")
    before = path.read_bytes()
    images = torch.utils.data.TensorDataset(torch.rand(4, 3, 32, 32) * 2 - 1, torch.zeros(4))
    assert train_augvae(cfg, "ml", dataset=images, progress=False) == path and path.read_bytes() == before
    train_augvae(cfg, "sl", dataset=images, progress=False)  # the kit's SL finetune starts from the official ML
    sl = load_augvae(cfg, "sl", "cpu")
    assert sl.args["encoder_stem"] == "official" and logged_variants(cfg) == ["sl"]  # notebook 01 plots SL only


# -- the official computation, written from the official code's forward passes ----------------------------------------

def official_forward(sd: dict, variant: str, x: torch.Tensor):
    """The official AugVAE's eval forward on an official-layout state dict, in plain functional ops: per-level codes
    and the reconstruction. Independent of the kit's modules and of the converter."""
    import torch.nn.functional as F

    def conv(h, p, stride=1, padding=1):
        return F.conv2d(h, sd[f"{p}.weight"], sd[f"{p}.bias"], stride, padding)

    def norm_swish(h, p):
        h = F.group_norm(h, 32, sd[f"{p}.weight"], sd[f"{p}.bias"], eps=1e-6)
        return h * torch.sigmoid(h)

    def res(h, p):
        out = conv(norm_swish(conv(norm_swish(h, f"{p}.norm1"), f"{p}.conv1"), f"{p}.norm2"), f"{p}.conv2")
        return (conv(h, f"{p}.nin_shortcut", padding=0) if f"{p}.nin_shortcut.weight" in sd else h) + out

    def count(pattern):
        return len({k.split(".")[pattern.count(".")] for k in sd if k.startswith(pattern)})

    def encoder(h, p):
        levels, blocks = count(f"{p}.down."), count(f"{p}.down.0.block.")
        h = conv(h, f"{p}.conv_in")
        for i in range(levels):
            for j in range(blocks):
                h = res(h, f"{p}.down.{i}.block.{j}")
            if i != levels - 1:
                h = conv(F.pad(h, (0, 1, 0, 1)), f"{p}.down.{i}.downsample.conv", stride=2, padding=0)
        h = res(res(h, f"{p}.mid.block_1"), f"{p}.mid.block_2")
        return conv(norm_swish(h, f"{p}.norm_out"), f"{p}.conv_out")

    def decoder(h, p):
        levels, blocks = count(f"{p}.up."), count(f"{p}.up.0.block.")
        h = res(res(conv(h, f"{p}.conv_in"), f"{p}.mid.block_1"), f"{p}.mid.block_2")
        for i in reversed(range(levels)):
            for j in range(blocks):
                h = res(h, f"{p}.up.{i}.block.{j}")
            if i != 0:
                h = conv(F.interpolate(h, scale_factor=2.0, mode="nearest"), f"{p}.up.{i}.upsample.conv")
        return conv(norm_swish(h, f"{p}.norm_out"), f"{p}.conv_out")

    def quantize(z, i):
        e = sd[f"quantizers.{i}.embedding.weight"]
        B, C, H, W = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, C)
        idx = (flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * flat @ e.t()).argmin(1)
        return e[idx].view(B, H, W, C).permute(0, 3, 1, 2), idx.view(B, H, W)

    h, quants, codes = x, [], []
    for i in range(count("encoders.")):
        h = encoder(h, f"encoders.{i}")
        q, idx = quantize(conv(h, f"pre_quants.{i}", padding=0), i)
        quants.append(q)
        codes.append(idx)
    dec = None
    for i in range(count("decoders.")):
        if variant == "sl":  # the official finetune: post_quants[0] once, then a connector before every decoder
            dec = conv(conv(quants[-1], "post_quants.0", padding=0) if i == 0 else dec, f"connectors.{i}", padding=0)
        else:
            quant = conv(quants[-(i + 1)], f"post_quants.{i}", padding=0)
            dec = quant if i == 0 else torch.cat((quant, dec), dim=1)
        dec = decoder(dec, f"decoders.{i}")
    return codes, dec


def test_converted_models_compute_what_the_official_forward_computes(tmp_path):
    torch.manual_seed(3)
    cfg = small_cfg(tmp_path)
    ml = AugVAE.from_config(cfg, "ml")
    with torch.no_grad():  # distinct per-level biases and a trained-looking codebook, so a wrong row or order shows
        ml.quant_conv.bias.add_(torch.randn_like(ml.quant_conv.bias))
        ml.post_quant_conv.bias.add_(torch.randn_like(ml.post_quant_conv.bias))
    ml.train()(torch.rand(8, 3, 32, 32) * 2 - 1)
    sl = AugVAE.ml_to_sl(ml)
    x = (torch.rand(3, 3, 32, 32) * 2 - 1).double()  # float64: no near-tie of code distances can flip a code
    for variant, model in (("ml", ml), ("sl", sl)):
        official = kit_to_official(model.eval(), variant)
        src = tmp_path / f"{variant}.ckpt"
        write_official(src, variant, official)
        convert_official(cfg, src, variant)
        kit = load_augvae(cfg, variant, "cpu").double()
        codes, recon = official_forward({k: v.double() for k, v in official.items()}, variant, x)
        kit_codes = kit.encode(x)
        if variant == "ml":
            assert all(torch.equal(a, b) for a, b in zip(kit_codes, codes))
        else:
            assert torch.equal(kit_codes, codes[kit.sl_level])
        assert torch.allclose(kit.decode(kit_codes), recon.clamp(-1, 1), atol=1e-10)


def test_one_training_step_updates_the_codebook_as_the_official_ema_does(tmp_path):
    torch.manual_seed(4)
    cfg = small_cfg(tmp_path)
    ml = AugVAE.from_config(cfg, "ml").eval()
    official = kit_to_official(ml, "ml")
    src = tmp_path / "ml.ckpt"
    write_official(src, "ml", official)
    convert_official(cfg, src, "ml")
    kit = load_augvae(cfg, "ml", "cpu").train()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    zs = [z.detach() for z in kit._encode_levels(x)]
    # the official training step: each level quantizes with the codebook as the levels before it left it, then
    # moves the tied EMA tensors (counts, sums, Laplace-smoothed codebook) once
    e, cluster, avg = (official[f"quantizers.0.embedding.{p}"].clone() for p in ("weight", "cluster_size", "embed_avg"))
    K = e.shape[0]
    for z in zs:
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        onehot = torch.nn.functional.one_hot((flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1)
                                              - 2 * flat @ e.t()).argmin(1), K).float()
        cluster = cluster * 0.99 + onehot.sum(0) * 0.01
        avg = avg * 0.99 + (onehot.t() @ flat) * 0.01
        n = cluster.sum()
        e = avg / ((cluster + 1e-5) / (n + K * 1e-5) * n).unsqueeze(1)
    kit(x)
    # float32 on both sides, summed in another order (scatter-adds in the kit): agreement to rounding
    assert torch.allclose(kit.quantizer.cluster_size, cluster, rtol=1e-6, atol=1e-6)
    assert torch.allclose(kit.quantizer.embed, e, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(kit.quantizer.embed, official["quantizers.0.embedding.weight"])  # it did move
