"""Stand-ins for the paper profile's assets, so the paper path can run end to end on any machine (profile paper-dry).

With ``assets.stand_ins: true`` every asset the paper profile reads, except the optional CoreNLP jars, is written by
the kit under ``data/<profile>/`` (``ensure_stand_ins``, called by notebook 00) and ``require_asset`` returns it
(paths: ``config.STAND_IN_PATHS``):

- the data: the embedded shapes set generated at ``data.image_size`` (256 px on paper-dry) in the real formats the
  paper's loaders read: Karpathy's ``dataset_coco.json`` with an image tree (the MS-COCO stand-in), an ImageFolder
  tree with ``train/`` and ``val/`` (ImageNet1K), a caption-TAB-path TSV (CC3M) and webdataset tar shards in
  img2dataset's layout (CC3M / LAION as shards, ``data.source`` or ``data.train_source: wds``);
- the weight files, with the real architectures and **random weights** (seeded): torch-fidelity's Inception-v3
  (``pt_inception-2015-12-05``), OpenAI CLIP ViT-B/32 (a state dict ``clip.model.build_model`` accepts) and
  torchvision's VGG16 (the LPIPS term).

So every shape, dtype, file format and memory cost of the paper path is exercised at the paper's sizes, and no
number a dry run prints means anything: the FID extractor, the reranker and the perceptual loss are untrained.
Nothing is downloaded. Each file is written to a temporary name and renamed, so an interrupted run leaves no half
file; a later run writes what is missing.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from lverse_core.config import STAND_IN_PATHS, Config, derive

SEED = 0  # the random weights do not depend on the profile's seed: one file per architecture


def ensure_stand_ins(cfg: Config) -> dict[str, Path]:
    """Write whatever stand-in of ``cfg`` is missing (``assets.stand_ins`` must be on); {asset: path}."""
    if not cfg.assets.stand_ins:
        raise ValueError(f"profile {cfg.profile!r} reads its real assets (assets.stand_ins is off): nothing to write")
    ensure_stand_in_data(cfg)
    paths = {}
    for name, rel in STAND_IN_PATHS.items():
        paths[name] = path = cfg.data_root / rel
        if name in WRITERS and not path.exists():
            with torch.random.fork_rng(devices=[]):  # seeded weights, the caller's random stream untouched
                torch.default_generator.manual_seed(SEED)  # the CPU generator only (fork_rng restores it)
                state = WRITERS[name]()
            _save_atomic(state, path)
    return paths


def stand_in_data_config(cfg: Config) -> Config:
    """The embedded data set's configuration that writes the stand-in data of ``cfg`` (its sizes, its seed)."""
    return derive(cfg, **{"data.source": "shapes", "data.root": str(cfg.data_root / "stand_in_data"),
                          "assets.stand_ins": False})


def ensure_stand_in_data(cfg: Config) -> Path:
    """The stand-in data set in every real format, including its img2dataset tar shards (``wds/``)."""
    from lverse_core.data.shapes_dataset import ensure_shards

    return ensure_shards(stand_in_data_config(cfg)).parent


def _save_atomic(state: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# The writers draw from torch's global generator; ensure_stand_ins seeds it with SEED inside fork_rng.

def random_inception_state() -> dict[str, torch.Tensor]:
    """torch-fidelity's FID Inception-v3 with its default initialisation instead of the released weights."""
    import torch_fidelity.feature_extractor_inceptionv3 as fi

    def no_download(*args, **kwargs):  # the constructor fetches the released weights unless a path is given
        return None

    cls = fi.FeatureExtractorInceptionV3
    original_fetch, original_load = fi.load_state_dict_from_url, cls.load_state_dict
    fi.load_state_dict_from_url, cls.load_state_dict = no_download, lambda self, state, *a, **k: None
    try:
        model = cls("inception-v3-compat", ["2048"])
    finally:
        fi.load_state_dict_from_url, cls.load_state_dict = original_fetch, original_load
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def random_clip_vit_b32_state() -> dict[str, torch.Tensor]:
    """OpenAI CLIP ViT-B/32's architecture (embed 512, 224 px, 12 x 768 vision, patch 32, 77 text positions,
    49408 BPE tokens, 12 x 512 text) with CLIP's own initialisation."""
    from clip.model import CLIP

    model = CLIP(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                 context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                 transformer_layers=12)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def random_vgg16_state() -> dict[str, torch.Tensor]:
    from torchvision.models import vgg16

    return {k: v.detach().clone() for k, v in vgg16().state_dict().items()}


WRITERS = {"inception_fid": random_inception_state, "clip_vit_b32": random_clip_vit_b32_state,
           "vgg16_lpips": random_vgg16_state}
