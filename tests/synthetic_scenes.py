"""Tiny stand-in scenes for tests that must not depend on the embedded data set (lverse_core/data/shapes.py).

Scenes of 1-2 objects (circle / square / triangle, 4 colours, 2 sizes) on a grey background, rendered with PIL,
returned as uint8 tensors with their ground-truth objects as the embedded set's attributes.json holds them
(shape, colour, size, centre x and y in px).
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle"]
COLOURS = ["red", "green", "blue", "yellow"]
SIZES = ["small", "large"]
RGB = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 210, 30)}


def render(objects: list[dict], size: int) -> np.ndarray:
    img = Image.new("RGB", (size, size), (128, 128, 128))
    d = ImageDraw.Draw(img)
    for o in objects:
        r = size * (0.10 if o["size"] == "small" else 0.20)
        x, y = o["x"], o["y"]
        box = [x - r, y - r, x + r, y + r]
        if o["shape"] == "circle":
            d.ellipse(box, fill=RGB[o["colour"]])
        elif o["shape"] == "square":
            d.rectangle(box, fill=RGB[o["colour"]])
        else:
            d.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=RGB[o["colour"]])
    return np.asarray(img)


def scenes(n: int, size: int = 32, seed: int = 0, max_objects: int = 2) -> tuple[torch.Tensor, list[list[dict]]]:
    """``n`` scenes: uint8 images (n, 3, size, size) and their object lists."""
    rng = np.random.default_rng(seed)
    images, objects = [], []
    for _ in range(n):
        k = int(rng.integers(1, max_objects + 1))
        # Objects sit in separate halves so they never hide each other.
        xs = [0.27, 0.73] if k == 2 else [0.5]
        objs = [{"shape": SHAPES[rng.integers(3)], "colour": COLOURS[rng.integers(4)],
                 "size": SIZES[rng.integers(2)], "x": float(x * size), "y": float(rng.uniform(0.3, 0.7) * size)}
                for x in xs]
        images.append(torch.from_numpy(render(objs, size).copy()).permute(2, 0, 1))
        objects.append(objs)
    return torch.stack(images), objects


def caption(objects: list[dict]) -> str:
    return " and ".join(f"a {o['size']} {o['colour']} {o['shape']}" for o in objects) + "."
