"""AugVAE's parity options (augvae.encoder_stem, downsample_pad, quant_bias): the official trainable parameter
counts at paper size (meta device), what each option changes, that embedded profiles keep the kit's variant, and
that checkpoints written before the options load as the kit's variant."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lverse_core.config import ConfigError, available_profiles, load_profile
from lverse_core.models.augvae import PARITY_OPTIONS, AugVAE, PadDownsample, count_parameters
from lverse_core.training.augvae_train import checkpoint_path, load_augvae
from lverse_core.training.loop import CheckpointError, save_checkpoint

OFFICIAL = {"augvae.encoder_stem": "official", "augvae.downsample_pad": "official", "augvae.quant_bias": "per_level"}
# trainable parameters of the official modules at commit e52ed9f (paper configs imagenet_augvae_ml/sl)
OFFICIAL_ML, OFFICIAL_SL = 221_224_195, 112_290_819


def small_cfg(tmp_path, **over):
    return load_profile("ci", **{"runs_dir": str(tmp_path / "runs"), "reports_dir": str(tmp_path / "reports"),
                                 **over})


def test_paper_size_has_the_official_parameter_counts():
    cfg = load_profile("paper")
    with torch.device("meta"):
        ml, sl = AugVAE.from_config(cfg, "ml"), AugVAE.from_config(cfg, "sl")
        kit = load_profile("paper", **{f"augvae.{n}": values[0] for n, values in PARITY_OPTIONS.items()})
        kit_ml, kit_sl = AugVAE.from_config(kit, "ml"), AugVAE.from_config(kit, "sl")
    assert (count_parameters(ml), count_parameters(sl)) == (OFFICIAL_ML, OFFICIAL_SL)
    # the kit's variant: three (ML) or one (SL) wider E(2) stem, biases shared
    assert (count_parameters(kit_ml), count_parameters(kit_sl)) == (222_894_211, 112_846_467)
    assert all(p.requires_grad for p in ml.parameters())  # every parameter is trainable, as the official count


@pytest.mark.parametrize("name", ["paper", "paper-dry", "paper-cc"])
def test_paper_profiles_use_the_official_modules(name):
    a = load_profile(name).augvae
    assert (a.encoder_stem, a.downsample_pad, a.quant_bias) == ("official", "official", "per_level")


def test_embedded_profiles_keep_the_kits_variant_and_record_nothing_new():
    for name in ("ci", "smoke", "gpu"):
        cfg = load_profile(name)
        with torch.device("meta"):
            model = AugVAE.from_config(cfg, "ml")
        assert not set(PARITY_OPTIONS) & set(model.args), name  # their checkpoints' model args are unchanged
    assert {"ci", "smoke", "gpu", "paper"} <= set(available_profiles())


@pytest.mark.parametrize("key,value", [("augvae.encoder_stem", "taming"), ("augvae.downsample_pad", "asym"),
                                       ("augvae.quant_bias", "level")])
def test_unknown_option_values_list_the_valid_ones(key, value):
    with pytest.raises(ConfigError, match=rf"{key}: '{value}' is not one of"):
        load_profile("ci", **{key: value})
    with pytest.raises(ValueError, match="must be one of"):
        AugVAE("ml", hidden=16, ch_mult=[1, 2], z_channels=16, codebook_size=8, n_levels=2, norm_groups=8,
               **{key.split(".")[1]: value})


def test_official_stem_widens_in_the_first_residual_block(tmp_path):
    cfg = small_cfg(tmp_path, **{"augvae.encoder_stem": "official"})
    h, z = cfg.augvae.hidden, cfg.augvae.z_channels
    ml = AugVAE.from_config(cfg, "ml")
    e2 = ml.encoders[1]
    assert tuple(e2.conv_in.weight.shape) == (h, z, 3, 3)
    first = e2.body[0]
    assert (first.conv1.in_channels, first.conv1.out_channels) == (h, 2 * h)
    assert tuple(first.skip.weight.shape) == (2 * h, h, 1, 1)  # the 1x1 nin_shortcut
    assert ml.encoders[0].conv_in.out_channels == h * cfg.augvae.ch_mult[0]  # E(4): the same as the kit's stem
    kit = AugVAE.from_config(small_cfg(tmp_path), "ml")
    assert kit.encoders[1].conv_in.out_channels == 2 * h


def test_official_downsampling_pads_right_and_below_and_keeps_the_key_names(tmp_path):
    torch.manual_seed(0)
    down = PadDownsample(4)
    x = torch.randn(2, 4, 8, 8)
    ref = F.conv2d(F.pad(x, (0, 1, 0, 1)), down.weight, down.bias, stride=2)
    assert torch.equal(down(x), ref) and down(x).shape == (2, 4, 4, 4)
    sym = F.conv2d(x, down.weight, down.bias, stride=2, padding=1)
    assert sym.shape == ref.shape and not torch.allclose(sym, ref)
    off = AugVAE.from_config(small_cfg(tmp_path, **{"augvae.downsample_pad": "official"}), "ml")
    kit = AugVAE.from_config(small_cfg(tmp_path), "ml")
    kit.load_state_dict(off.state_dict())  # same keys and shapes: only the padding differs
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert not torch.allclose(kit.eval()._encode_levels(x)[1], off.eval()._encode_levels(x)[1])


def test_per_level_biases_share_the_weight_and_use_the_official_rows(tmp_path):
    torch.manual_seed(0)
    cfg = small_cfg(tmp_path, **{"augvae.quant_bias": "per_level"})
    n = cfg.augvae.n_levels
    ml = AugVAE.from_config(cfg, "ml").eval()
    kit = AugVAE.from_config(small_cfg(tmp_path), "ml").eval()
    assert tuple(ml.quant_conv.bias.shape) == (n, cfg.augvae.z_channels)
    # equal rows: the per-level model is the shared one
    sd = kit.state_dict()
    for conv in ("quant_conv", "post_quant_conv"):
        sd[f"{conv}.bias"] = sd[f"{conv}.bias"].expand(n, -1).clone()
    ml.load_state_dict(sd)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(ml.decode(ml.encode(x)), kit.decode(kit.encode(x)), atol=1e-6)
    # pre-quant row k serves level k; post-quant row n-1-k serves ML level k, row 0 the SL level
    q = torch.randn(1, cfg.augvae.z_channels, 2, 2)
    with torch.no_grad():
        ml.quant_conv.bias[2] += 1.0
        ml.post_quant_conv.bias[n - 1] += 1.0
    zs = ml._encode_levels(x)
    kit_zs = kit._encode_levels(x)
    assert [torch.allclose(a, b, atol=1e-6) for a, b in zip(zs, kit_zs)] == [k != 2 for k in range(n)]
    assert torch.allclose(ml._post_quant(q, 0), kit.post_quant_conv(q) + 1.0, atol=1e-6)
    sl = AugVAE.ml_to_sl(ml)
    with torch.no_grad():
        sl.post_quant_conv.bias[0] += 5.0
    assert torch.allclose(sl._post_quant(q, sl.sl_level), ml._post_quant(q, n - 1) + 5.0, atol=1e-6)


def test_ml_to_sl_carries_the_options_over(tmp_path):
    cfg = small_cfg(tmp_path, **OFFICIAL)
    ml = AugVAE.from_config(cfg, "ml").eval()
    sl = AugVAE.ml_to_sl(ml).eval()
    assert {k: sl.args[k] for k in PARITY_OPTIONS} == {k.split(".")[1]: v for k, v in OFFICIAL.items()}
    assert sl.args == AugVAE.from_config(cfg, "sl").args
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(sl.encode(x), ml.encode(x)[1])


def _write(cfg, model, variant):
    from lverse_core import provenance
    from lverse_core.training.augvae_train import augvae_made_from

    path = save_checkpoint(checkpoint_path(cfg, variant), {
        "kind": f"augvae-{variant}", "model_args": {**model.args, "variant": model.variant}, "step": 1,
        "finished": True, "model": model.state_dict()})
    provenance.record(path, augvae_made_from(cfg, variant))  # as the trainer records what it made


def test_a_checkpoint_without_the_options_loads_as_the_kits_variant(tmp_path):
    cfg = small_cfg(tmp_path)
    old = AugVAE.from_config(cfg, "ml")
    args = dict(old.args)
    assert not set(PARITY_OPTIONS) & set(args)  # what a checkpoint from before the options records
    _write(cfg, old, "ml")
    loaded = load_augvae(cfg, "ml", "cpu")
    assert loaded.encoders[1].conv_in.out_channels == 2 * cfg.augvae.hidden
    assert isinstance(loaded.quant_conv, torch.nn.Conv2d) and loaded.quant_conv.bias.dim() == 1
    assert not isinstance(loaded.encoders[0].body[1], PadDownsample)
    rebuilt = AugVAE("ml", **args)
    assert rebuilt.state_dict().keys() == old.state_dict().keys()
    # the same checkpoint under a profile with the official modules: refused, naming the option
    with pytest.raises(CheckpointError, match="encoder_stem"):
        load_augvae(small_cfg(tmp_path, **OFFICIAL), "ml", "cpu")


def test_a_checkpoint_with_the_options_loads_and_reproduces_its_outputs(tmp_path):
    cfg = small_cfg(tmp_path, **OFFICIAL)
    model = AugVAE.from_config(cfg, "ml").eval()
    _write(cfg, model, "ml")
    loaded = load_augvae(cfg, "ml", "cpu")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert all(torch.equal(a, b) for a, b in zip(loaded.encode(x), model.encode(x)))
    assert torch.equal(loaded.decode(model.encode(x)), model.decode(model.encode(x)))
