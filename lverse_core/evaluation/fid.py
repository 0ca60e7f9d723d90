"""Fréchet distance between two image sets, through torch-fidelity, never downloading anything.

Two feature spaces (``eval.fid_extractor``):
- ``inception``: torch-fidelity's Inception-v3 (``inception-v3-compat``, 2048-d pool features), the paper's FID
  (Table 1 with torch-fidelity; Table 3 used the DM-GAN code, same network). Its weights come from the local file
  ``assets.inception_fid`` (``feature_extractor_weights_path=``); a missing file is a ``MissingAssetError``.
- ``kit``: the penultimate layer of the kit's attribute judge (``lverse_core.evaluation.judge``, ``runs/<profile>/judge.pt``),
  registered with torch-fidelity as ``lverse-kit-judge-features``. It is NOT Inception: numbers in that space are
  comparable only with each other, never with the paper's; ``fid_label(cfg)`` says so in every table.

Paper Table 3 reports FID-k: both image sets blurred by a Gaussian of radius k before the features. Here that is
PIL's ``ImageFilter.GaussianBlur(radius=k)`` on the uint8 RGB image (PIL's radius is the standard deviation of the
Gaussian, approximated by three extended box blurs), applied by one function to both sides.

The Fréchet distance itself (``features_to_statistics`` -> ``statistics_to_fid``) is the formula of
Heusel et al. (2017), as in bioinf-jku/TTUR fid.py and torch-fidelity's metric_fid.py (v0.4.0):
    FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}).
``compute_fid`` lets torch-fidelity compute it; the small functions exist so tests can check the two agree.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import Dataset

from lverse_core.config import Config, require_asset

KIT_EXTRACTOR = "lverse-kit-judge-features"
KIT_FEATURE = "features"
INCEPTION_EXTRACTOR = "inception-v3-compat"
INCEPTION_FEATURE = "2048"


# -- the kit's feature extractor -----------------------------------------------------------------------------------

def _register_kit_extractor() -> None:
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if KIT_EXTRACTOR in FEATURE_EXTRACTORS_REGISTRY:
        return

    class KitJudgeFeatures(FeatureExtractorBase):
        """torch-fidelity extractor: uint8 (B, 3, H, W) -> the judge's penultimate features (B, F), float32.

        torch-fidelity builds it with all its keyword arguments; the judge checkpoint comes in through
        ``feature_extractor_weights_path`` exactly as Inception's weights would.
        """

        calls = 0  # forward passes since import; tests use it to see that this extractor (not Inception) ran

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            from lverse_core.evaluation.judge import load_judge_file

            if not feature_extractor_weights_path:
                raise ValueError(f"feature extractor {KIT_EXTRACTOR} needs feature_extractor_weights_path= "
                                 f"pointing at a judge checkpoint (runs/<profile>/judge.pt)")
            self.judge = load_judge_file(feature_extractor_weights_path)

        @staticmethod
        def get_provided_features_list():
            return (KIT_FEATURE,)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return KIT_FEATURE

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

        def forward(self, x):
            if x.dtype != torch.uint8:
                raise ValueError(f"{KIT_EXTRACTOR} expects uint8 images, got {x.dtype}")
            type(self).calls += 1
            return (self.judge.features(x.float() / 127.5 - 1.0),)  # features_list can only be ("features",)

    torch_fidelity.register_feature_extractor(KIT_EXTRACTOR, KitJudgeFeatures)


def kit_extractor_class():
    """The registered torch-fidelity class of the kit's extractor."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    _register_kit_extractor()
    return FEATURE_EXTRACTORS_REGISTRY[KIT_EXTRACTOR]


# -- inputs --------------------------------------------------------------------------------------------------------

def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) or (3, H, W) uint8, or float in [-1, 1] -> uint8 of the same shape (round to nearest)."""
    if images.dtype == torch.uint8:
        return images
    if not torch.is_floating_point(images):
        raise TypeError(f"images must be uint8 in [0, 255] or float in [-1, 1], got dtype {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.01 or hi > 1.01:
        raise ValueError(f"float images must lie in [-1, 1] (the kit's range), got values in [{lo:.3g}, {hi:.3g}]; "
                         f"pass uint8 for [0, 255] images")
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def gaussian_blur(image: torch.Tensor, radius: float) -> torch.Tensor:
    """PIL ``ImageFilter.GaussianBlur(radius)`` of one uint8 (3, H, W) image; radius 0 returns it unchanged."""
    if radius == 0:
        return image
    if radius < 0:
        raise ValueError(f"blur radius must be >= 0, got {radius}")
    pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), mode="RGB")
    out = np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=radius)))
    return torch.from_numpy(out.copy()).permute(2, 0, 1)


def _item_image(item: Any, where: str) -> torch.Tensor:
    if isinstance(item, dict):
        if "image" not in item:
            raise ValueError(f"{where}: dataset items that are dicts need an 'image' entry, got keys {list(item)}")
        item = item["image"]
    elif isinstance(item, (tuple, list)):
        item = item[0]  # (image, label) as in ImageFolder
    if not torch.is_tensor(item) or item.ndim != 3 or item.shape[0] != 3:
        shape = tuple(item.shape) if torch.is_tensor(item) else type(item).__name__
        raise ValueError(f"{where}: expected RGB image tensors of shape (3, H, W), got {shape}")
    return item


class BlurredUInt8Images(Dataset):
    """A view of images (a tensor (N, 3, H, W), a list of (3, H, W) tensors, or a Dataset whose items are
    tensors, (image, label) tuples or dicts with 'image') as uint8 tensors, each blurred by ``radius``.

    This one class feeds both sides of every FID, so real and generated images are blurred identically.
    """

    def __init__(self, source: torch.Tensor | Sequence[torch.Tensor] | Dataset, radius: float = 0,
                 name: str = "images"):
        if torch.is_tensor(source) and (source.ndim != 4 or source.shape[1] != 3):
            raise ValueError(f"{name}: expected a tensor of shape (N, 3, H, W), got {tuple(source.shape)}")
        if torch.is_tensor(source):
            source = to_uint8(source)  # validates the range of the whole set once
        self.source, self.radius, self.name = source, radius, name
        if len(self) == 0:
            raise ValueError(f"{name}: no images to compute FID on")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = _item_image(self.source[i], f"{self.name}[{i}]")
        return gaussian_blur(to_uint8(img), self.radius)


# -- FID -----------------------------------------------------------------------------------------------------------

def features_to_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) of features (N, F), in float64, unbiased covariance as in torch-fidelity."""
    f = np.asarray(features.detach().cpu() if torch.is_tensor(features) else features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N, F) with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def statistics_to_fid(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}); tr of the square root from the eigenvalues of S1 S2
    (real parts of their square roots), as torch-fidelity does, which tolerates singular covariances."""
    diff = mu1 - mu2
    eig = np.linalg.eigvals(sigma1 @ sigma2).astype(np.complex128)
    tr_covmean = np.sqrt(eig).real.sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def fid_label(cfg: Config) -> str:
    """A plain name of the FID feature space for table headers."""
    if cfg.eval.fid_extractor == "inception":
        return "FID (Inception-v3, torch-fidelity)"
    return "FID (kit judge features, not Inception)"


def extractor_settings(cfg: Config, judge_path: str | Path | None = None) -> dict[str, Any]:
    """The torch-fidelity keyword arguments that choose the feature space of ``cfg`` (checked local files)."""
    if cfg.eval.fid_extractor == "inception":
        weights = require_asset(cfg, "inception_fid")
        return {"feature_extractor": INCEPTION_EXTRACTOR, "feature_layer_fid": INCEPTION_FEATURE,
                "feature_extractor_weights_path": str(weights)}
    from lverse_core.evaluation.judge import judge_path as default_judge_path
    from lverse_core.training.loop import CheckpointError

    path = Path(judge_path) if judge_path is not None else default_judge_path(cfg)
    if not path.exists():
        raise CheckpointError(f"FID in the kit's feature space needs the judge checkpoint {path}; train it with "
                              f"lverse_core.evaluation.judge.train_judge(cfg)")
    _register_kit_extractor()
    return {"feature_extractor": KIT_EXTRACTOR, "feature_layer_fid": KIT_FEATURE,
            "feature_extractor_weights_path": str(path)}


def compute_fid(real, fake, cfg: Config, blur_radius: float = 0, *, cuda: bool | None = None,
                judge_path: str | Path | None = None, batch_size: int = 64) -> float:
    """FID between ``real`` and ``fake`` in the feature space of ``cfg`` (see ``fid_label``).

    ``real``/``fake``: uint8 [0, 255] or float [-1, 1] tensors (N, 3, H, W), lists of (3, H, W) tensors, or
    Datasets of such items. ``blur_radius`` > 0 gives the paper's FID-k (both sides blurred alike).
    ``cuda`` defaults to ``cfg.resolved_device() == "cuda"``; it is always passed to torch-fidelity explicitly
    (its own default is True). Nothing is cached on disk and nothing is downloaded.
    """
    import torch_fidelity

    settings = extractor_settings(cfg, judge_path)
    if cuda is None:
        cuda = cfg.resolved_device() == "cuda"
    if cuda and not torch.cuda.is_available():
        raise RuntimeError("compute_fid(cuda=True) but torch sees no GPU; pass cuda=False")
    ds_real = BlurredUInt8Images(real, blur_radius, "real")
    ds_fake = BlurredUInt8Images(fake, blur_radius, "fake")
    metrics = torch_fidelity.calculate_metrics(
        input1=ds_real, input2=ds_fake, fid=True, cuda=bool(cuda), batch_size=batch_size, cache=False,
        verbose=False, save_cpu_ram=True, samples_shuffle=False, datasets_download=False, **settings)
    return float(metrics["frechet_inception_distance"])


def compute_fid_sweep(real, fake, cfg: Config, radii: Sequence[float] | None = None, **kwargs) -> dict[float, float]:
    """FID-k for every radius k of ``radii`` (default ``cfg.eval.blur_radii``), as in paper Table 3."""
    return {r: compute_fid(real, fake, cfg, blur_radius=r, **kwargs) for r in (radii or cfg.eval.blur_radii)}
