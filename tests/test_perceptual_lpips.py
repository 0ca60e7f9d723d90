"""The perceptual term (augvae_train.perceptual): the official LPIPS with the lpips package's learned linear layers
and a VGG16 from the local weights file, or the kit's unweighted VGG16 features; both offline."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lverse_core.config import load_profile
from lverse_core.data.stand_ins import random_vgg16_state
from lverse_core.models.perceptual import LPIPSPerceptual, VGGPerceptual, perceptual_loss_from_config


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg16-random.pth"
    torch.save(random_vgg16_state(), path)
    return path


@pytest.fixture(scope="module")
def lpips_loss(vgg_file):
    return LPIPSPerceptual(vgg_file)


def test_the_packages_linear_layers_and_the_local_vgg16_are_the_ones_loaded(lpips_loss, vgg_file):
    import lpips

    shipped = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth", map_location="cpu",
                         weights_only=True)
    for k in range(5):
        assert torch.equal(lpips_loss.lpips.state_dict()[f"lin{k}.model.1.weight"], shipped[f"lin{k}.model.1.weight"])
    assert (shipped["lin0.model.1.weight"] != 1).any()  # learned, not the unweighted variant's ones
    vgg = torch.load(vgg_file, weights_only=True)
    net = lpips_loss.lpips.net.state_dict()
    assert torch.equal(net["slice1.0.weight"], vgg["features.0.weight"])
    assert torch.equal(net["slice5.28.bias"], vgg["features.28.bias"])
    assert not any(p.requires_grad for p in lpips_loss.parameters()) and not lpips_loss.training


def test_lpips_and_the_unweighted_variant_differ(lpips_loss, vgg_file):
    torch.manual_seed(1)
    unweighted = VGGPerceptual(vgg_file)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    a, b = float(lpips_loss(x, y)), float(unweighted(x, y))
    assert a > 0 and b > 0 and abs(a - b) > 1e-3 * max(a, b)
    assert float(lpips_loss(x, x)) == 0.0
    y.requires_grad_(True)
    lpips_loss(x, y).backward()  # the training loss backpropagates through it to the reconstruction
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_the_profile_key_chooses_the_term(tmp_path, vgg_file, monkeypatch):
    monkeypatch.setenv("LVERSE_VGG16_WEIGHTS", str(vgg_file))
    assert load_profile("paper").augvae_train.perceptual == "lpips"
    assert all(load_profile(p).augvae_train.perceptual == "unweighted" for p in ("ci", "smoke", "gpu"))
    assert isinstance(perceptual_loss_from_config(load_profile("paper")), LPIPSPerceptual)
    assert isinstance(perceptual_loss_from_config(load_profile("ci", **{"augvae_train.lpips_weight": 0.1})),
                      VGGPerceptual)


def test_a_file_that_is_not_vgg16_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(RuntimeError, match="is not torchvision's VGG16 state dict"):
        LPIPSPerceptual(bad)


def test_training_with_the_lpips_term_logs_it_and_adds_it_to_the_loss(tmp_path, vgg_file, monkeypatch):
    import csv

    from lverse_core.training.augvae_train import train_augvae

    monkeypatch.setenv("LVERSE_VGG16_WEIGHTS", str(vgg_file))
    cfg = load_profile("ci", runs_dir=str(tmp_path / "runs"), reports_dir=str(tmp_path / "reports"),
                       **{"augvae_train.perceptual": "lpips", "augvae_train.lpips_weight": 0.1,
                          "augvae_train.edge_weight": 0.0, "augvae_train.ml_steps": 2, "augvae_train.log_every": 1})
    images = torch.utils.data.TensorDataset(torch.rand(8, 3, 32, 32) * 2 - 1, torch.zeros(8))
    train_augvae(cfg, "ml", dataset=images, progress=False)
    with open(cfg.runs_root / "logs" / "augvae_ml.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(float(r["perceptual"]) > 0 for r in rows)
    r = rows[-1]
    assert float(r["loss"]) == pytest.approx(float(r["mse"]) + float(r["commit"]) + 0.1 * float(r["perceptual"]),
                                             rel=1e-4)
