"""A split's images decoded once into one uint8 tensor, and batches cropped on the training device.

Decoding a PNG or JPEG per sample per step is what the AugVAE loop spent 5-8% of its time on at the smoke size
(and the main process's time on a GPU, where it starves the device). When the images fit in memory
(``augvae_train.decode: once``; the embedded profiles), they are decoded once, through the kit's own loader and
its bad-input policy, to ``(N, 3, S, S)`` uint8; every training batch then takes its random resized crop
(scale 0.75-1, square: the official AugVAE augmentation) as one ``grid_sample`` call on the device.

The crop draws its positions from torch's global CPU generator, whose state every checkpoint saves, so a
resumed run sees exactly the crops the uninterrupted run would have seen. As in torchvision's
``RandomResizedCrop``, the crop side and corner are whole pixels; bicubic resampling without antialiasing is
what it does too when a crop is enlarged (a crop is never shrunk here).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from lverse_core.data.pixels import signed_from_uint8, uint8_from_signed

CROP_SCALE = (0.75, 1.0)  # area fraction of the crop, as in the official AugVAE code


# the conversions under the names this module's callers know (one definition: lverse_core.data.pixels)
to_uint8, from_uint8 = uint8_from_signed, signed_from_uint8


class DecodedImages:
    """``images``: (N, 3, S, S) uint8. Items are ``(image in [-1, 1], 0)`` like an ImageFolder dataset."""

    def __init__(self, images: torch.Tensor, train: bool = True):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"DecodedImages needs (N, 3, S, S) uint8 images, got {tuple(images.shape)} "
                             f"{images.dtype}")
        if images.shape[2] != images.shape[3]:
            raise ValueError(f"DecodedImages needs square images, got {images.shape[2]}x{images.shape[3]}")
        self.images, self.train = images, train
        self.size = images.shape[-1]

    @classmethod
    def from_dataset(cls, dataset: Dataset, train: bool = True, num_workers: int = 0,
                     batch_size: int = 256) -> "DecodedImages":
        """Decode every item of an eval-transformed dataset (``(image in [-1, 1], label)`` items) once."""
        if len(dataset) == 0:
            raise ValueError("DecodedImages.from_dataset: the data set is empty")
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
        chunks = [uint8_from_signed(x) for x, _ in loader]
        return cls(torch.cat(chunks), train)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return signed_from_uint8(self.images[i]), 0

    def batch(self, indices: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """Images ``indices`` as float (B, 3, S, S) in [-1, 1] on ``device``, randomly cropped when training."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        x = signed_from_uint8(self.images[idx].to(device, non_blocking=True))
        if not self.train:
            return x
        return random_resized_crop(x)


def crop_boxes(n: int, size: int, scale: tuple[float, float] = CROP_SCALE) -> torch.Tensor:
    """(n, 3) long: side, top, left of square crops whose area fraction is uniform in ``scale`` (whole pixels)."""
    area = torch.empty(n).uniform_(*scale)  # global CPU generator: saved in checkpoints
    side = (area.sqrt() * size).round().clamp(1, size).long()
    top = (torch.rand(n) * (size - side + 1)).floor().long()
    left = (torch.rand(n) * (size - side + 1)).floor().long()
    return torch.stack([side, top, left], 1)


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float] = CROP_SCALE) -> torch.Tensor:
    """x (B, C, S, S) float -> each image's random square crop resized back to S x S (bicubic), one call."""
    B, _, S, _ = x.shape
    boxes = crop_boxes(B, S, scale).to(x.device, x.dtype)
    side, top, left = boxes.unbind(1)
    # affine map from output coordinates in [-1, 1] to input coordinates (align_corners=False: pixel edges)
    theta = torch.zeros(B, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = side / S
    theta[:, 0, 2] = (2 * left + side) / S - 1  # crop centre, x
    theta[:, 1, 2] = (2 * top + side) / S - 1  # crop centre, y
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False).clamp(-1, 1)

