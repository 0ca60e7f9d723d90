"""The kit's three pixel ranges and the conversions between them, each named by its ranges.

- *uint8*: stored images, integers in [0, 255] (files, decoded caches, what FID and the judge read);
- *signed*: float in [-1, 1], what every model takes and gives (AugVAE, CLIP, the judge's input);
- *unit*: float in [0, 1], what PSNR/SSIM and matplotlib read.

Rounding to uint8 is to the nearest integer, so an image read from an 8-bit file survives
``uint8_from_signed(signed_from_uint8(x)) == x`` exactly.
"""
from __future__ import annotations

import torch


def uint8_from_signed(images: torch.Tensor) -> torch.Tensor:
    """float images in [-1, 1] -> uint8 in [0, 255] of the same shape (clamped, rounded to nearest); uint8 images
    are returned as they are. Any other dtype is a TypeError."""
    if images.dtype == torch.uint8:
        return images
    if not torch.is_floating_point(images):
        raise TypeError(f"images must be uint8 in [0, 255] or float in [-1, 1], got dtype {images.dtype}")
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def signed_from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32 in [-1, 1]; float images (already in [-1, 1]) come back as float32."""
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0
    if not torch.is_floating_point(images):
        raise TypeError(f"images must be uint8 in [0, 255] or float in [-1, 1], got dtype {images.dtype}")
    return images.float()


def unit_from_signed(images: torch.Tensor) -> torch.Tensor:
    """float images in [-1, 1] -> float32 in [0, 1] (clamped)."""
    return ((images.float() + 1) / 2).clamp(0, 1)
