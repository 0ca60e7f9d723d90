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

Streaming (memory independent of the number of images; paper Table 1 evaluates 50,000 images): torch-fidelity's
``calculate_metrics`` keeps every feature of a set until the end. Here ``FidAccumulator`` builds the same registered
extractor as ``calculate_metrics`` does (``torch_fidelity.utils.create_feature_extractor``), calls it on one batch at
a time and keeps per set only float64 running sums of the features and of their outer products
(``FeatureStatistics``): O(F^2) memory, 32 MiB per set for Inception's 2048 features. Every FID here, both sides
and every blur radius, goes through that one path; tests check it equals ``calculate_metrics`` on the same images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import Dataset

from lverse_core.config import Config, require_asset
from lverse_core.data.pixels import signed_from_uint8, uint8_from_signed

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
            return (self.judge.features(signed_from_uint8(x)),)  # features_list can only be ("features",)

    torch_fidelity.register_feature_extractor(KIT_EXTRACTOR, KitJudgeFeatures)


def kit_extractor_class():
    """The registered torch-fidelity class of the kit's extractor."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    _register_kit_extractor()
    return FEATURE_EXTRACTORS_REGISTRY[KIT_EXTRACTOR]


# -- inputs --------------------------------------------------------------------------------------------------------

def check_image_range(images: torch.Tensor) -> None:
    """Raise unless ``images`` are uint8, or float in [-1, 1] (to 1%: decoder outputs overshoot a little)."""
    if images.dtype == torch.uint8:
        return
    if not torch.is_floating_point(images):
        raise TypeError(f"images must be uint8 in [0, 255] or float in [-1, 1], got dtype {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.01 or hi > 1.01:
        raise ValueError(f"float images must lie in [-1, 1] (the kit's range), got values in [{lo:.3g}, {hi:.3g}]; "
                         f"pass uint8 for [0, 255] images")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) or (3, H, W) uint8, or float in [-1, 1] -> uint8 of the same shape (``pixels.uint8_from_signed``)
    after ``check_image_range``: a float image outside [-1, 1] is refused, never clamped."""
    check_image_range(images)
    return uint8_from_signed(images)


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

    ``compute_fid`` reads both sides through it one image at a time (radius 0; ``FidAccumulator`` blurs each
    batch for every radius); tests use it with a radius as an independent reference.
    """

    def __init__(self, source: torch.Tensor | Sequence[torch.Tensor] | Dataset, radius: float = 0,
                 name: str = "images"):
        if torch.is_tensor(source) and (source.ndim != 4 or source.shape[1] != 3):
            raise ValueError(f"{name}: expected a tensor of shape (N, 3, H, W), got {tuple(source.shape)}")
        if torch.is_tensor(source):
            check_image_range(source)  # the whole set at once, without a converted copy of it
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


def _resolve_cuda(cfg: Config, cuda: bool | None) -> bool:
    """``cuda`` or, when None, whether ``cfg`` runs on a GPU; an error if a GPU is asked for and torch sees none."""
    if cuda is None:
        cuda = cfg.resolved_device() == "cuda"
    if cuda and not torch.cuda.is_available():
        raise RuntimeError("FID with cuda=True but torch sees no GPU; pass cuda=False")
    return bool(cuda)


# -- streaming FID -------------------------------------------------------------------------------------------------

class FeatureStatistics:
    """Mean and unbiased covariance of features fed batch by batch, in float64, in O(F^2) memory whatever N.

    Keeps the count, the sum of (f - c) and the sum of outer products (f - c)(f - c)^T, with c the first batch's
    mean: the same statistics as ``features_to_statistics`` on all features at once, without the cancellation that
    raw second moments suffer when features sit far from 0 (Inception's pool features are non-negative). The sums
    live on the device of the first batch (a GPU's float64 makes the 2048 x 2048 products cheap).
    """

    def __init__(self) -> None:
        self.n = 0
        self.centre: torch.Tensor | None = None
        self.sum: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None

    def update(self, features: torch.Tensor) -> None:
        """Add features (B, F) of B more images."""
        if not torch.is_tensor(features) or features.ndim != 2:
            raise ValueError(f"features must be a (B, F) tensor, got "
                             f"{tuple(features.shape) if torch.is_tensor(features) else type(features).__name__}")
        f = features.detach().to(torch.float64)
        if self.centre is None:
            self.centre = f.mean(dim=0)
            self.sum = torch.zeros_like(self.centre)
            self.outer = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64, device=f.device)
        elif f.shape[1] != self.centre.shape[0]:
            raise ValueError(f"features of {f.shape[1]} dimensions after earlier batches of {self.centre.shape[0]}")
        d = f.to(self.centre.device) - self.centre
        self.n += d.shape[0]
        self.sum += d.sum(dim=0)
        self.outer += d.T @ d

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu (F,), sigma (F, F)) as numpy float64, as ``features_to_statistics`` gives them."""
        if self.n < 2:
            raise ValueError(f"FID statistics need at least 2 images, got {self.n}")
        m = self.sum / self.n
        sigma = (self.outer - self.n * torch.outer(m, m)) / (self.n - 1)
        return (self.centre + m).cpu().numpy(), sigma.cpu().numpy()


class FeatureExtractor:
    """The profile's torch-fidelity feature extractor (``extractor_settings``), built the way ``calculate_metrics``
    builds it (``create_feature_extractor``: registry lookup, eval mode, no gradients, on the GPU if ``cuda``),
    called on one uint8 batch (B, 3, H, W) at a time -> features (B, F) on the extractor's device."""

    def __init__(self, cfg: Config, *, cuda: bool | None = None, judge_path: str | Path | None = None):
        from torch_fidelity.utils import create_feature_extractor

        settings = extractor_settings(cfg, judge_path)
        self.cuda = _resolve_cuda(cfg, cuda)
        self.layer = settings["feature_layer_fid"]
        self.module = create_feature_extractor(
            settings["feature_extractor"], [self.layer], cuda=self.cuda, verbose=False,
            feature_extractor_weights_path=settings["feature_extractor_weights_path"], feature_extractor_compile=False)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"the feature extractor takes uint8 batches (B, 3, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        x = images.cuda(non_blocking=True) if self.cuda else images.cpu()
        return self.module.convert_features_tuple_to_dict(self.module(x))[self.layer]


def blur_batch(images: torch.Tensor, radius: float) -> torch.Tensor:
    """``gaussian_blur`` of every uint8 image of (B, 3, H, W) (on the CPU: it is PIL's); radius 0 returns them."""
    if radius == 0:
        return images
    return torch.stack([gaussian_blur(img, radius) for img in images.cpu()])


class FidAccumulator:
    """FID statistics of named image sets ("real", "AugVAE-SL", ...), fed batch by batch, for every blur radius.

    ``add(name, images)`` converts a batch to uint8 (float inputs must lie in [-1, 1]), blurs it by each radius
    (``blur_batch``) and adds the extractor's features to that set's ``FeatureStatistics``; ``fid(a, b, radius)`` is
    ``statistics_to_fid`` of two sets. Memory: O(F^2) per set and radius, nothing per image.
    """

    def __init__(self, cfg: Config, radii: Sequence[float] = (0,), *, cuda: bool | None = None,
                 judge_path: str | Path | None = None):
        self.radii = [float(r) for r in radii]
        if not self.radii or any(r < 0 for r in self.radii):
            raise ValueError(f"blur radii must be a non-empty list of numbers >= 0, got {list(radii)}")
        self.extractor = FeatureExtractor(cfg, cuda=cuda, judge_path=judge_path)
        self.stats: dict[tuple[str, float], FeatureStatistics] = {}

    def add(self, name: str, images: torch.Tensor) -> None:
        """Add a batch (B, 3, H, W), uint8 or float in [-1, 1], to the set ``name``."""
        if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f"{name}: expected a batch of RGB images of shape (B, 3, H, W), got {shape}")
        u8 = to_uint8(images)
        for r in self.radii:
            self.stats.setdefault((name, r), FeatureStatistics()).update(self.extractor(blur_batch(u8, r)))

    def statistics(self, name: str, radius: float = 0) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) of the set ``name`` blurred by ``radius``."""
        if (name, float(radius)) not in self.stats:
            sets = sorted({n for n, _ in self.stats})
            raise ValueError(f"no images were added to the set {name!r} (sets: {sets}) or radius {radius} is not one "
                             f"of {self.radii}")
        return self.stats[(name, float(radius))].statistics()

    def fid(self, a: str, b: str, radius: float = 0) -> float:
        """FID between the sets ``a`` and ``b``, both blurred by ``radius``."""
        return statistics_to_fid(*self.statistics(a, radius), *self.statistics(b, radius))


def uint8_batches(source, batch_size: int, name: str):
    """Batches (B, 3, H, W) uint8 of ``source`` (a tensor, a list of images or a Dataset; see ``BlurredUInt8Images``),
    read one batch at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ds = BlurredUInt8Images(source, 0, name)
    for i in range(0, len(ds), batch_size):
        yield torch.stack([ds[j] for j in range(i, min(i + batch_size, len(ds)))])


def compute_fid(real, fake, cfg: Config, blur_radius: float = 0, *, cuda: bool | None = None,
                judge_path: str | Path | None = None, batch_size: int = 64) -> float:
    """FID between ``real`` and ``fake`` in the feature space of ``cfg`` (see ``fid_label``), streamed.

    ``real``/``fake``: uint8 [0, 255] or float [-1, 1] tensors (N, 3, H, W), lists of (3, H, W) tensors, or
    Datasets of such items (or of (image, label) pairs or dicts with 'image'). ``blur_radius`` > 0 gives the
    paper's FID-k (both sides blurred alike). ``cuda`` defaults to ``cfg.resolved_device() == "cuda"``.
    Nothing is cached on disk and nothing is downloaded.
    """
    return compute_fid_sweep(real, fake, cfg, [blur_radius], cuda=cuda, judge_path=judge_path,
                             batch_size=batch_size)[float(blur_radius)]


def compute_fid_sweep(real, fake, cfg: Config, radii: Sequence[float] | None = None, *, cuda: bool | None = None,
                      judge_path: str | Path | None = None, batch_size: int = 64) -> dict[float, float]:
    """FID-k for every radius k of ``radii`` (default ``cfg.eval.blur_radii``), as in paper Table 3: one pass over
    each set, every batch blurred by every radius (see ``compute_fid`` for the inputs)."""
    radii = list(radii or cfg.eval.blur_radii)
    acc = FidAccumulator(cfg, radii, cuda=cuda, judge_path=judge_path)
    for name, source in (("real", real), ("fake", fake)):
        for batch in uint8_batches(source, batch_size, name):
            acc.add(name, batch)
    return {r: acc.fid("real", "fake", r) for r in radii}
