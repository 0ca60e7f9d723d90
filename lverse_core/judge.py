"""The attribute judge: a small CNN that lists the objects in an embedded-data image.

It answers "is this generated image right for its caption?" on the embedded profiles (the stand-in for the
paper's text-to-image evaluation, §4.3 / Table 3, where a human or a detector would look at the picture), and its
penultimate layer is the kit's FID feature space (``lverse_core.fid``; on COCO the paper uses Inception-v3).

Model: four stride-2 conv stages (BatchNorm + SiLU), global max pooling, one linear layer to
``feature_dim`` features (the FID features), then one count head per attribute combination:
for every (colour, shape, size) triple a softmax over 0..max_objects copies. Decoding takes the most likely
count of every triple, so a scene with two identical objects is represented exactly (a multi-set).

Trained on REAL embedded training images (``data.CaptionImageDataset`` + ``data.load_attributes``); its accuracy
on real test images is the ceiling any generated image can reach (DESIGN.md: 100% on real, 86% on VQ
reconstructions for the CPU prototype).

    judge, metrics = train_judge(cfg)          # writes runs/<profile>/judge.pt (kind "judge")
    judge = load_judge(cfg)
    objects = judge.judge_image(images)        # images (B, 3, S, S) in [-1, 1] -> list of object lists
    ok = image_matches(objects[0], caption)    # shapes.caption_correct on the judged objects
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import Config
from .train import CheckpointError, load_checkpoint, save_checkpoint, seed_everything

CHECKPOINT_KIND = "judge"


def _triple(obj: dict) -> tuple[str, str, str]:
    return (obj["colour"], obj["shape"], obj["size"])


class JudgeNet(nn.Module):
    """CNN: image (B, 3, S, S) in [-1, 1] -> count logits (B, n_triples, max_objects + 1) and features (B, F)."""

    def __init__(self, shapes: Sequence[str], colours: Sequence[str], sizes: Sequence[str], max_objects: int,
                 image_size: int, width: int = 32, feature_dim: int = 128):
        """``image_size``: the side (px) every input is resized to before the trunk."""
        super().__init__()
        self.model_args = {"shapes": list(shapes), "colours": list(colours), "sizes": list(sizes),
                           "max_objects": int(max_objects), "image_size": int(image_size), "width": int(width),
                           "feature_dim": int(feature_dim)}
        # Triples in a fixed order: colour-major, then shape, then size.
        self.triples = [(c, s, z) for c in colours for s in shapes for z in sizes]
        self.image_size = image_size
        self.max_objects = max_objects
        chans = [width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate(chans):
            # BatchNorm, not GroupNorm: with GroupNorm the small objects drowned in the normalised background and
            # the judge learnt only the prior (measured). The first stage is a single conv to keep 64 px cheap.
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.SiLU()]
            if i:
                layers += [nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.SiLU()]
            c_in = c
        self.trunk = nn.Sequential(*layers)
        self.to_features = nn.Linear(c_in, feature_dim)
        self.head = nn.Linear(feature_dim, len(self.triples) * (max_objects + 1))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"judge expects images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            # Generated or real images at another size: resize to what the judge was trained on.
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim): the kit's FID feature space."""
        # Max pooling: "is there a red square anywhere" is a max, and it learnt ~2x faster than mean (measured).
        h = self.trunk(self._prepare(x)).amax(dim=(2, 3))  # (B, C)
        return F.relu(self.to_features(h))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        logits = self.head(f).view(x.shape[0], len(self.triples), self.max_objects + 1)  # (B, T, K+1)
        return logits, f

    def targets(self, objects: Sequence[Sequence[dict]]) -> torch.Tensor:
        """Count targets (B, n_triples) from ground-truth object lists; unknown attributes are an error."""
        index = {t: i for i, t in enumerate(self.triples)}
        out = torch.zeros(len(objects), len(self.triples), dtype=torch.long)
        for b, objs in enumerate(objects):
            for t, n in Counter(_triple(o) for o in objs).items():
                if t not in index:
                    raise ValueError(f"object {t} has an attribute outside the judge's vocabulary "
                                     f"(colours {self.model_args['colours']}, shapes {self.model_args['shapes']}, "
                                     f"sizes {self.model_args['sizes']})")
                out[b, index[t]] = min(n, self.max_objects)
        return out

    @torch.no_grad()
    def judge_image(self, images: torch.Tensor, batch_size: int = 256) -> list[list[dict]]:
        """The objects seen in each image: a list of dict(shape, colour, size) per image (a multi-set)."""
        was_training = self.training
        self.eval()
        dev = next(self.parameters()).device
        out: list[list[dict]] = []
        for i in range(0, images.shape[0], batch_size):
            logits, _ = self(images[i:i + batch_size].to(dev, torch.float32))
            counts = logits.argmax(-1).cpu()  # (b, T)
            for row in counts:
                objs = []
                for t in row.nonzero().flatten().tolist():
                    c, s, z = self.triples[t]
                    objs += [{"shape": s, "colour": c, "size": z}] * int(row[t])
                out.append(objs)
        self.train(was_training)
        return out


def judge_image(judge: JudgeNet, images: torch.Tensor) -> list[list[dict]]:
    """Module-level alias of ``JudgeNet.judge_image``."""
    return judge.judge_image(images)


def same_objects(a: Sequence[dict], b: Sequence[dict]) -> bool:
    """True when two object lists hold the same (colour, shape, size) multi-set (positions ignored)."""
    return Counter(map(_triple, a)) == Counter(map(_triple, b))


def image_matches(objects_pred: Sequence[dict], caption: str) -> bool:
    """Is an image whose judged objects are ``objects_pred`` right for ``caption``? (shapes.caption_correct)."""
    from .shapes import caption_correct

    return bool(caption_correct(caption, list(objects_pred)))


# -- training ------------------------------------------------------------------------------------------------------

def build_judge(cfg: Config, shapes: Sequence[str], colours: Sequence[str], sizes: Sequence[str]) -> JudgeNet:
    e = cfg.eval
    size = min(e.judge_image_size, cfg.data.image_size) if e.judge_image_size else cfg.data.image_size
    return JudgeNet(shapes, colours, sizes, max_objects=cfg.data.max_objects, image_size=size,
                    width=e.judge_width, feature_dim=e.judge_feature_dim)


def fit_judge(judge: JudgeNet, images: torch.Tensor, objects: Sequence[Sequence[dict]], *, steps: int,
              batch_size: int, lr: float, noise: float = 0.0, seed: int = 0,
              device: str | torch.device = "cpu") -> list[float]:
    """Train ``judge`` in place on images (N, 3, S, S) (uint8 or float in [-1, 1]); returns the loss per step.

    Images stay uint8 in memory (8000 x 64 px = 98 MB) and are converted one batch at a time.
    """
    if images.shape[0] != len(objects):
        raise ValueError(f"{images.shape[0]} images but {len(objects)} object lists")
    targets = judge.targets(objects)
    gen = torch.Generator().manual_seed(seed)
    judge.to(device).train()
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    losses = []
    n = images.shape[0]
    perm, pos = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + batch_size]
        pos += batch_size
        x = to_unit_range(images[idx]).to(device)
        if noise > 0:
            # Mild pixel noise: generated images are never as clean as the rendered training scenes.
            x = x + noise * torch.randn(x.shape, generator=gen).to(device)
        logits, _ = judge(x)
        loss = F.cross_entropy(logits.flatten(0, 1), targets[idx].flatten().to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    judge.eval()
    return losses


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [-1, 1] images -> float32 in [-1, 1]."""
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0
    return images.float()


def judge_accuracy(judge: JudgeNet, images: torch.Tensor, objects: Sequence[Sequence[dict]],
                   captions: Sequence[str] | None = None) -> dict[str, float]:
    """How well the judge sees real images: exact scene match, per-object recall/precision, caption agreement.

    ``exact``: the judged (colour, shape, size) multi-set equals the ground truth. ``caption`` (when captions are
    given): ``image_matches(judged, caption)``, the criterion Table 3 uses for generated images.
    """
    pred = judge.judge_image(to_unit_range(images))
    exact = sum(same_objects(p, t) for p, t in zip(pred, objects))
    tp = sum(sum((Counter(map(_triple, p)) & Counter(map(_triple, t))).values()) for p, t in zip(pred, objects))
    n_true = sum(len(t) for t in objects)
    n_pred = sum(len(p) for p in pred)
    out = {"n": len(pred), "exact": exact / max(len(pred), 1), "object_recall": tp / max(n_true, 1),
           "object_precision": tp / max(n_pred, 1)}
    if captions is not None:
        out["caption"] = sum(image_matches(p, c) for p, c in zip(pred, captions)) / max(len(pred), 1)
    return out


def _load_split(cfg: Config, split: str) -> tuple[torch.Tensor, list[list[dict]], list[str]]:
    """All images of a split as uint8 (N, 3, S, S), their ground-truth objects and first captions."""
    from . import data

    ds = data.CaptionImageDataset(cfg, split, train=False)
    attrs = data.load_attributes(cfg)
    images, objects, captions = [], [], []
    for i in range(len(ds)):
        item = ds[i]
        images.append(((item["image"].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
        objects.append(attrs[int(item["image_id"])])
        captions.append(item["captions"][0])
    return torch.stack(images), objects, captions


def judge_path(cfg: Config) -> Path:
    return cfg.runs_root / "judge.pt"


def train_judge(cfg: Config, log: bool = True) -> tuple[JudgeNet, dict[str, Any]]:
    """Train the judge on the real training split, score it on real test images, save runs/<profile>/judge.pt."""
    from . import shapes

    if cfg.data.source != "shapes":
        raise ValueError(f"the attribute judge needs the embedded data set (data.source = shapes), not "
                         f"{cfg.data.source!r}; the paper profile measures FID with Inception (eval.fid_extractor)")
    shapes.ensure_dataset(cfg)
    seed_everything(cfg.seed)
    images, objects, _ = _load_split(cfg, "train")
    judge = build_judge(cfg, shapes.SHAPES, shapes.COLOURS, shapes.SIZES)
    e = cfg.eval
    losses = fit_judge(judge, images, objects, steps=e.judge_steps, batch_size=e.judge_batch_size, lr=e.judge_lr,
                       noise=e.judge_noise, seed=cfg.seed, device=cfg.resolved_device())
    judge.cpu()
    test_images, test_objects, test_captions = _load_split(cfg, "test")
    metrics = {"train_loss_first": losses[0], "train_loss_last": sum(losses[-10:]) / len(losses[-10:]),
               "steps": len(losses), **{f"test_{k}": v for k, v in
                                        judge_accuracy(judge, test_images, test_objects, test_captions).items()}}
    save_judge(cfg, judge, metrics)
    if log:
        from .train import CSVLog

        csv = CSVLog(cfg.runs_root / "logs" / "judge.csv", ["loss"])
        for s in range(0, len(losses), 20):
            csv.write(s + 1, loss=losses[s])
    return judge, metrics


def save_judge(cfg: Config, judge: JudgeNet, metrics: dict[str, Any] | None = None,
               path: str | Path | None = None) -> Path:
    return save_checkpoint(path or judge_path(cfg), {
        "kind": CHECKPOINT_KIND, "model_args": judge.model_args, "config": cfg.to_dict(),
        "model": judge.state_dict(), "metrics": dict(metrics or {})})


def load_judge_file(path: str | Path, map_location: Any = "cpu") -> JudgeNet:
    """Rebuild a judge from a checkpoint written by ``save_judge``."""
    state = load_checkpoint(path, CHECKPOINT_KIND, map_location=map_location)
    try:
        judge = JudgeNet(**state["model_args"])
        judge.load_state_dict(state["model"])
    except (TypeError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: judge checkpoint does not match this code ({e}); retrain with "
                              f"lverse_core.judge.train_judge(cfg)") from e
    return judge.eval()


def load_judge(cfg: Config) -> JudgeNet:
    """The trained judge of this profile (runs/<profile>/judge.pt); train it with ``train_judge(cfg)`` first."""
    path = judge_path(cfg)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist: train the judge first with lverse_core.judge.train_judge(cfg)")
    return load_judge_file(path)


def ensure_judge(cfg: Config) -> JudgeNet:
    """Load the profile's judge, training it first when there is none."""
    return load_judge(cfg) if judge_path(cfg).exists() else train_judge(cfg)[0]
