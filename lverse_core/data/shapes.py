"""The embedded data set: procedural scenes of coloured shapes with template captions.

It stands in for MS-COCO Captions (paper §4) on the CPU/GPU profiles, with what COCO lacks: exact ground truth.
Every caption names each object's size, colour and shape, so a generated caption can be checked with
``caption_correct`` and a generated image with a detector trained on ``attributes.json``.

The files are written in the real data sets' formats, so the loaders in ``lverse_core.data`` that read MS-COCO,
ImageNet and CC3M are the ones exercised on every profile:

    <root>/images/<split>/<image_id:06d>.png     the scenes (RGB PNG, image_size x image_size)
    <root>/dataset_coco.json                     Karpathy's caption-split schema (dataset, images, sentences)
    <root>/imagefolder/<split>/<shape>/<file>    ImageFolder tree (hard links; class = the first object's shape)
    <root>/cc3m_train.tsv                        CC3M style: caption \\t relative image path, no header
    <root>/attributes.json                       ground truth objects per image
    <root>/ood/<name>.png                        real photographs from skimage / sklearn (paper Figure 5)
    <root>/COMPLETE.json                         generation parameters; written last

Everything is a pure function of ``cfg.seed`` (each image draws from its own generator seeded by (seed, id)), so
the same seed gives byte-identical files. This module says what a scene and its captions are; writing the files
(atomically, under a lock) is ``lverse_core.data.shapes_dataset.ensure_dataset``, which builds on this module.
"""
from __future__ import annotations

import colorsys
import math
import re
from collections import Counter

import numpy as np
from PIL import Image, ImageDraw

from lverse_core.config import Config
from lverse_core.data.ood import OOD_SOURCES, write_ood_images  # noqa: F401  (re-exported: part of this module's API)

GENERATOR_VERSION = 4  # bump when the pictures or captions change, so old data sets are regenerated

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
SPLITS = ("train", "restval", "val", "test")

# Saturated, well separated hues: distinguishable at 32 px and never close to the grey-ish backgrounds.
RGB = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 220),
    "yellow": (240, 215, 30),
    "purple": (135, 50, 185),
    "orange": (250, 135, 20),
}
# Half-extent of an object as a fraction of the image side.
RADIUS = {"small": 0.09, "large": 0.16}
# Objects stay inside [CROP_SAFE, 1 - CROP_SAFE] of the image: RandomResizedCrop(scale >= 0.75, ratio 1) keeps a
# square of side >= sqrt(0.75) = 0.866, so any training crop (paper §3.5) still shows every object whole and the
# captions stay true.
CROP_SAFE = 1.0 - math.sqrt(0.75)
SUPERSAMPLE = 4  # objects are drawn at 4x and box-downsampled: anti-aliased edges


_COUNT_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_NUMBER = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


# -- scenes --------------------------------------------------------------------------------------------------------

def split_sizes(cfg: Config) -> dict[str, int]:
    d = cfg.data
    return {"train": d.n_train, "restval": d.n_restval, "val": d.n_val, "test": d.n_test}


def split_ids(cfg: Config) -> dict[str, range]:
    """Consecutive image ids per split, in the order train, restval, val, test."""
    out, start = {}, 0
    for split, n in split_sizes(cfg).items():
        out[split] = range(start, start + n)
        start += n
    return out


def _fits(box: tuple, placed: list[tuple], gap: float) -> bool:
    return all(box[2] + gap <= b[0] or b[2] + gap <= box[0] or box[3] + gap <= b[1] or b[3] + gap <= box[1]
               for b in placed)


def sample_scene(rng: np.random.Generator, image_size: int, max_objects: int) -> list[dict]:
    """1..max_objects distinct (size, colour, shape) objects whose boxes do not overlap.

    Attributes are drawn first (uniformly, no identical twins: "a red circle left of a red circle" would be
    ambiguous), then a layout: large objects are placed first, and a layout that leaves no room for an object is
    redrawn whole, so crowded scenes do not lose their large objects. Only if 50 layouts fail is the last object
    dropped (rare; the tests bound how rare).
    """
    n = int(rng.integers(1, max_objects + 1))
    kinds: list[tuple[str, str, str]] = []
    while len(kinds) < n:
        kind = (SIZES[rng.integers(len(SIZES))], COLOURS[rng.integers(len(COLOURS))],
                SHAPES[rng.integers(len(SHAPES))])
        if kind not in kinds:
            kinds.append(kind)
    radii = [RADIUS[k[0]] * image_size * rng.uniform(0.92, 1.08) for k in kinds]
    lo, hi = CROP_SAFE * image_size, (1.0 - CROP_SAFE) * image_size
    gap = max(1.0, 0.02 * image_size)
    order = sorted(range(len(kinds)), key=lambda i: -radii[i])
    while True:
        for _layout in range(50):
            boxes: dict[int, tuple] = {}
            for i in order:
                r = radii[i]
                for _attempt in range(30):
                    x, y = rng.uniform(lo + r, hi - r), rng.uniform(lo + r, hi - r)
                    if _fits((x - r, y - r, x + r, y + r), list(boxes.values()), gap):
                        boxes[i] = (x - r, y - r, x + r, y + r)
                        break
                else:
                    break
            if len(boxes) == len(kinds):
                return [{"shape": k[2], "colour": k[1], "size": k[0], "x": round((b[0] + b[2]) / 2, 2),
                         "y": round((b[1] + b[3]) / 2, 2), "bbox": [round(v, 2) for v in b]}
                        for k, b in ((kinds[i], boxes[i]) for i in range(len(kinds)))]
        kinds.pop(), radii.pop()
        order = [i for i in order if i < len(kinds)]


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Low-saturation gradient + faint stripes + noise: textured, never close to an object colour."""
    hue = rng.uniform()
    c0 = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.0, 0.15), rng.uniform(0.35, 0.85)))
    c1 = np.array(colorsys.hsv_to_rgb((hue + rng.uniform(-0.1, 0.1)) % 1, rng.uniform(0.0, 0.15),
                                      rng.uniform(0.35, 0.85)))
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / max(s - 1, 1)
    theta = rng.uniform(0, 2 * np.pi)
    t = (np.cos(theta) * (xx - 0.5) + np.sin(theta) * (yy - 0.5)) / np.sqrt(0.5) * 0.5 + 0.5  # in [0, 1]
    img = (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]) * 255.0
    if rng.uniform() < 0.5:
        phi, freq = rng.uniform(0, 2 * np.pi), rng.uniform(3, 8)
        stripes = np.sin(2 * np.pi * freq * (np.cos(phi) * xx + np.sin(phi) * yy))
        img += rng.uniform(4, 10) * stripes[..., None]
    img += rng.normal(0.0, rng.uniform(3, 8), size=(s, s, 1)) + rng.normal(0.0, 2.0, size=(s, s, 3))
    return img


def render_scene(rng: np.random.Generator, objects: list[dict], image_size: int) -> Image.Image:
    """The scene as an RGB PIL image: objects drawn at SUPERSAMPLE x resolution onto a textured background."""
    s, k = image_size, SUPERSAMPLE
    img = _background(rng, s)
    for o in objects:
        # draw only the object's pixel window at k x: box-downsampling a window aligned to the pixel grid gives
        # exactly the pixels a full-image mask would, at a fraction of the cost
        x0, y0, x1, y1 = o["bbox"]
        wx0, wy0 = max(int(math.floor(x0)) - 1, 0), max(int(math.floor(y0)) - 1, 0)
        wx1, wy1 = min(int(math.ceil(x1)) + 1, s), min(int(math.ceil(y1)) + 1, s)
        mask = Image.new("L", ((wx1 - wx0) * k, (wy1 - wy0) * k), 0)
        draw = ImageDraw.Draw(mask)
        bx0, by0, bx1, by1 = (x0 - wx0) * k, (y0 - wy0) * k, (x1 - wx0) * k, (y1 - wy0) * k
        if o["shape"] == "circle":
            draw.ellipse((bx0, by0, bx1, by1), fill=255)
        elif o["shape"] == "square":
            draw.rectangle((bx0, by0, bx1, by1), fill=255)
        else:  # triangle pointing up, filling its box
            draw.polygon([((bx0 + bx1) / 2, by0), (bx1, by1), (bx0, by1)], fill=255)
        m = np.asarray(mask.resize((wx1 - wx0, wy1 - wy0), Image.Resampling.BOX), dtype=np.float32)[..., None]
        m = m / 255.0
        colour = np.array(RGB[o["colour"]], dtype=np.float32) + rng.normal(0.0, 6.0, size=3)  # slight shade jitter
        win = img[wy0:wy1, wx0:wx1]
        img[wy0:wy1, wx0:wx1] = win * (1.0 - m) + colour[None, None] * m
    img += rng.normal(0.0, 2.0, size=img.shape)  # sensor-like noise over everything
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


# -- captions ------------------------------------------------------------------------------------------------------

def describe(o: dict) -> str:
    return f"a {o['size']} {o['colour']} {o['shape']}"


def relation(a: dict, b: dict) -> str:
    """Where ``a`` is relative to ``b``, by the larger displacement (image y grows downwards)."""
    dx, dy = a["x"] - b["x"], a["y"] - b["y"]
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def _listing(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _region(o: dict, s: int) -> str:
    """Where an object sits in the picture, in words ("in the top left", "on the right", "in the middle")."""
    col = "left" if o["x"] < s / 3 else "right" if o["x"] > 2 * s / 3 else ""
    row = "top" if o["y"] < s / 3 else "bottom" if o["y"] > 2 * s / 3 else ""
    if row and col:
        return f"in the {row} {col}"
    if col:
        return f"on the {col}"
    return f"at the {row}" if row else "in the middle"


def caption_pool(objects: list[dict], image_size: int, rng: np.random.Generator) -> list[str]:
    """All template captions of a scene; each names every object's size, colour and shape, ends with a full stop."""
    n = len(objects)
    order = [objects[i] for i in rng.permutation(n)]
    d = [describe(o) for o in order]
    listed = _listing(d)
    if n == 1:
        o = order[0]
        return [f"{d[0]}.", f"there is {d[0]}.", f"{d[0]} on a textured background.", f"a picture of {d[0]}.",
                f"{d[0]} {_region(o, image_size)}.", f"one object: {d[0]}.", f"an image showing {d[0]}.",
                f"a single {o['size']} {o['colour']} {o['shape']}.",
                f"{d[0]} on a {('grey', 'muted', 'noisy')[rng.integers(3)]} background."]
    a, b = order[0], order[1]
    rest = d[2:]
    tail = f", with {_listing(rest)}" if rest else ""
    tail_and = f", and {_listing(rest)}" if rest else ""
    num = _NUMBER[n]
    return [
        f"{d[0]} {relation(a, b)} {d[1]}{tail}.",
        f"there is {d[1]} {relation(b, a)} {d[0]}{tail}.",
        f"{num} objects: {listed}.",
        f"{listed}.",
        f"an image with {d[0]} {relation(a, b)} {d[1]}{tail_and}.",
        f"{d[1]} is {relation(b, a)} {d[0]}{tail}.",
        f"a picture of {num} shapes: {listed}.",
        f"{num} shapes on a textured background: {listed}.",
        f"we can see {listed}.",
    ]


def make_captions(objects: list[dict], image_size: int, n: int, rng: np.random.Generator) -> list[str]:
    pool = caption_pool(objects, image_size, rng)
    pick = rng.choice(len(pool), size=n, replace=n > len(pool))
    return [pool[i] for i in pick]


def caption_tokens(text: str) -> list[str]:
    """Karpathy-style tokens: lower-cased words without punctuation."""
    return re.findall(r"[a-z0-9]+", text.lower())


def _singular(word: str) -> tuple[str, bool]:
    if word.endswith("s") and word[:-1] in SHAPES:
        return word[:-1], True
    if word.endswith("es") and word[:-2] in SHAPES:
        return word[:-2], True
    return word, False


def parse_caption(text: str) -> list[dict]:
    """The objects a caption names, as dicts (shape, colour, size); a missing attribute is None.

    Each shape word closes an object whose colour and size are the last colour and size words since the previous
    shape word; a plural shape ("two small red circles") counts the number word before it. Unknown words are
    ignored, so it works on generated text that deviates slightly from the templates.
    """
    objects: list[dict] = []
    colour = size = None
    count = 1
    for word in re.findall(r"[a-z]+", text.lower()):
        shape, plural = _singular(word)
        if word in COLOURS:
            colour = word
        elif word in SIZES:
            size = word
        elif word in _COUNT_WORDS:
            count = _COUNT_WORDS[word]
        elif shape in SHAPES:
            objects.extend({"shape": shape, "colour": colour, "size": size} for _ in range(count if plural else 1))
            colour = size = None
            count = 1
    return objects


def _key(o: dict) -> tuple:
    return (o.get("size"), o.get("colour"), o.get("shape"))


def caption_correct(text: str, objects: list[dict]) -> bool:
    """True when the multiset of (size, colour, shape) the caption names equals the ground-truth objects."""
    return Counter(map(_key, parse_caption(text))) == Counter(map(_key, objects))
