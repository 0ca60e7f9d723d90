"""Perceptual losses from a local VGG16 weights file (the official AugVAE loss adds 0.1 * LPIPS(VGG16)), and a
weight-free edge loss (``edge_loss``, ``augvae_train.edge_weight``; our addition, used by the smoke profile).

``augvae_train.perceptual`` chooses the term:
- ``lpips`` (the official loss, as in taming-transformers): LPIPS v0.1 of Zhang et al. (2018) from the ``lpips``
  package, whose learned per-channel linear layers ship inside the package; its VGG16 backbone is built without
  weights (``pnet_rand=True``: nothing is downloaded) and then loaded from ``assets.vgg16_lpips``.
- ``unweighted`` (the kit's earlier stand-in): the "baseline" variant of the same paper, unit-normalised VGG16
  features at relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3, squared differences averaged over space and summed
  over channels and layers with every channel weighted 1.
Both read only the local VGG16 file: without it, asking for either is an error.
"""
from __future__ import annotations

import re
import warnings

import torch
from torch import nn

from lverse_core.config import require_asset

_CUTS = (4, 9, 16, 23, 30)  # indices after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in vgg16.features


class VGGPerceptual(nn.Module):
    def __init__(self, weights_path):
        super().__init__()
        from torchvision.models import vgg16

        vgg = vgg16()
        try:
            vgg.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        except Exception as e:
            raise RuntimeError(f"{weights_path} is not torchvision's VGG16 state dict ({e}); "
                               "use vgg16-397923af.pth from download.pytorch.org/models") from e
        self.features = vgg.features[: _CUTS[-1]].eval()
        for p in self.parameters():
            p.requires_grad_(False)
        # ImageNet normalisation, applied to images in [-1, 1]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _feats(self, x):
        h = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i + 1 in _CUTS:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x, y):
        """Mean perceptual distance between image batches ``x`` and ``y`` in [-1, 1]."""
        return sum((a - b).pow(2).sum(1).mean() for a, b in zip(self._feats(x), self._feats(y)))


class LPIPSPerceptual(nn.Module):
    """LPIPS(VGG16) v0.1 with the ``lpips`` package's learned linear layers and a VGG16 from ``weights_path``."""

    def __init__(self, weights_path):
        super().__init__()
        import lpips

        with warnings.catch_warnings():  # the package still passes torchvision's deprecated ``pretrained`` flag
            warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
            self.lpips = lpips.LPIPS(net="vgg", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        try:
            vgg = torch.load(weights_path, map_location="cpu", weights_only=True)
            # the package's VGG16 keeps torchvision's feature indices, split into slices: sliceN.<index>.<param>
            self.lpips.net.load_state_dict({k: vgg[re.sub(r"^slice\d+\.", "features.", k)]
                                            for k in self.lpips.net.state_dict()})
        except Exception as e:
            raise RuntimeError(f"{weights_path} is not torchvision's VGG16 state dict ({e}); "
                               "use vgg16-397923af.pth from download.pytorch.org/models") from e
        self.eval()  # the official loss module trains with LPIPS's dropout on: docs/deviations.md
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x, y):
        """Mean LPIPS distance between image batches ``x`` and ``y`` in [-1, 1]."""
        return self.lpips(x, y).mean()


PERCEPTUAL = {"lpips": LPIPSPerceptual, "unweighted": VGGPerceptual}


def perceptual_loss_from_config(cfg) -> nn.Module:
    """The perceptual term ``augvae_train.perceptual`` names, its VGG16 read from ``assets.vgg16_lpips``."""
    return PERCEPTUAL[cfg.augvae_train.perceptual](require_asset(cfg, "vgg16_lpips"))


def edge_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the horizontal and vertical image gradients of ``x`` and ``y`` (B, C, H, W).

    Not part of the official recipe. MSE is satisfied by a blurred edge (a small triangle decoded as a soft blob
    costs few squared errors); the L1 of finite differences is not, so the decoder keeps corners and outlines. It
    needs no weights file. Measured on the smoke data alone it kept small shapes on one seed and lost colours on two;
    with the unquantized start of ``augvae_train.unquantized_steps`` it paid on all three, and the smoke profile
    uses both (docs/design-notes.md, "An unquantized start for AugVAE-SL").
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"edge_loss compares two (B, C, H, W) batches of one shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    dx = (x[..., :, 1:] - x[..., :, :-1]) - (y[..., :, 1:] - y[..., :, :-1])
    dy = (x[..., 1:, :] - x[..., :-1, :]) - (y[..., 1:, :] - y[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()
