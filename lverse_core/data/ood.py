"""Out-of-domain real photographs for the reconstruction figure (paper §4.1, Figure 5).

The paper reconstructs unseen photographs with ImageNet-trained VQ-VAEs after a LANCZOS resize to 256 x 256. The
kit takes its photographs from files that ship inside installed packages, so nothing is downloaded:
scikit-image's ``skimage.data`` (astronaut, coffee, chelsea, rocket, hubble_deep_field, retina,
immunohistochemistry), scikit-learn's ``load_sample_images`` (china, flower) and matplotlib's sample
``grace_hopper.jpg``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

OOD_SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "china", "flower", "hubble_deep_field", "retina",
               "immunohistochemistry", "grace_hopper")


def _ood_array(name: str) -> np.ndarray:
    """A real photograph that ships inside an installed package (no network)."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    if name == "grace_hopper":
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            return np.asarray(Image.open(f).convert("RGB"))
    import skimage.data

    return getattr(skimage.data, name)()


def square_resize(img: Image.Image, size: int) -> Image.Image:
    """Centre crop to a square, then LANCZOS resize (the paper's Figure 5 protocol)."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)


def write_ood_images(out_dir: Path, n: int, image_size: int) -> list[Path]:
    if n > len(OOD_SOURCES):
        raise ValueError(f"data.ood_images = {n}, but only {len(OOD_SOURCES)} offline photographs are available: "
                         f"{', '.join(OOD_SOURCES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in OOD_SOURCES[:n]:
        img = square_resize(Image.fromarray(_ood_array(name)).convert("RGB"), image_size)
        p = out_dir / f"{name}.png"
        img.save(p)
        paths.append(p)
    return paths
