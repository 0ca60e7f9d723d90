"""Typed run profiles (``configs/<name>.yaml``) for the L-Verse kit.

One profile describes one scale of the same pipeline: ``ci`` (tiniest, 2 CPU cores), ``smoke`` (the default,
small but honest), ``gpu`` (one GPU) and ``paper`` (the paper's sizes, §3.5). A profile is a YAML file whose
sections map one-to-one onto the dataclasses below; anything the YAML leaves out keeps the dataclass default.

    cfg = load_profile("smoke", **{"augvae.ml_steps": 10, "seed": 3})

Validation is strict on purpose: an unknown section or key, or a value of the wrong type, is a ``ConfigError``
that names the offending key and lists the valid ones, so a typo never silently falls back to a default.
Paths to real assets (data roots, weight files) can also come from environment variables, named in
``ASSET_ENV``; ``require_asset`` turns a missing one into an error saying where the file comes from.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"


class ConfigError(ValueError):
    """A profile, key or value that the kit does not accept; the message says what is valid."""


@dataclass
class DataConfig:
    # shapes (embedded, generated) | coco (Karpathy JSON + images) | cc3m (TSV) | wds (img2dataset tar shards)
    source: str = "shapes"
    # where the training captions and images come from, when not ``source`` (which then only gives val/test):
    # "cc3m" / "wds" train on the whole CC3M TSV / set of tar shards and evaluate zero-shot on ``source`` (the
    # paper's L-Verse-CC, Table 3); "" = source
    train_source: str = ""
    root: str = "data/{profile}"  # where the embedded data set is written; {profile} is substituted
    image_size: int = 64  # pixels, square; the paper uses 256
    n_train: int = 2000  # embedded data set: images per split
    n_val: int = 200
    n_test: int = 200
    n_restval: int = 0  # Karpathy's extra training split
    captions_per_image: int = 5
    max_objects: int = 3  # objects per scene, 1..max_objects
    ood_images: int = 8  # out-of-domain real photographs (skimage / sklearn) for Figure 5
    bad_input: str = "error"  # error | skip: what loaders do with an unreadable image or an empty caption
    min_image_side: int = 16  # pixels; smaller images count as bad input
    num_workers: int = 0  # DataLoader workers
    gen_workers: int = 0  # processes that draw the embedded data set; 0 = one per usable CPU core (at most 16)


@dataclass
class AugVAEConfig:
    hidden: int = 128  # channels of the first encoder stage (official code: 128)
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 4])  # E(4, z) stages; len-1 stride-2 downsamples
    z_channels: int = 256  # latent and codebook vector size (official code: 256)
    codebook_size: int = 8192  # d_Z, number of codes shared by all levels
    n_levels: int = 4  # AugVAE-ML latent levels (64/32/16/8 for 256 px)
    sl_level: int = 1  # index of the level AugVAE-SL keeps for its codes (1 = the H/8 map)
    enc_res_blocks: int = 2
    dec_res_blocks: int = 3
    mid_res_blocks: int = 2  # res blocks at the deepest width of every encoder/decoder (Taming "mid", no attention)
    norm_groups: int = 32  # GroupNorm groups (official: 32); must divide every channel count
    decay: float = 0.99  # EMA decay of the codebook
    eps: float = 1e-5  # Laplace smoothing of the EMA cluster sizes
    beta: float = 0.25  # commitment weight, scales ||z - sg(z_q)||^2 (the encoder side)
    ema_update: str = "per_level"  # per_level (official code) | pooled (one update per step over all levels)
    dead_code_threshold: float = 0.0  # restart codes whose EMA count falls below this; 0 = off (official)
    data_init: bool = False  # initialise the codebook from encoder outputs on the first batch (official: randn)
    sl_quantize_fine: bool = False  # SL also quantizes the H/4 map (loss + EMA, codes unused); official code: true
    codebook: str = "shared"  # shared (paper) | per_level: each level its own 1/n_levels of the codes (ablation)
    # parity with the official code (models/augvae.py; all three "official" in paper, so official checkpoints load;
    # the embedded profiles keep the kit's variant, which their results were measured with):
    encoder_stem: str = "kit"  # kit: E(2) convolves z -> 2h first | official: z -> h, then a widening res block
    downsample_pad: str = "symmetric"  # symmetric: stride-2 conv, padding 1 | official: pad (0,1,0,1), conv unpadded
    quant_bias: str = "shared"  # shared: one bias per pre/post-quant 1x1 conv | per_level: one per level (official)


@dataclass
class AugVAETrainConfig:
    batch_size: int = 32  # images per process
    ml_steps: int = 1000  # optimizer steps for AugVAE-ML
    sl_steps: int = 500  # optimizer steps for the AugVAE-SL finetune
    # plain single-level VQ-VAE control (our addition to Table 1); a fair control gets ml_steps + sl_steps.
    # 0 = off: no control is trained (the paper has none; the claims scorecard trains it over seeds)
    baseline_steps: int = 1500
    lr: float = 4.5e-6  # base rate; effective lr = lr * world_size * batch_size when lr_scaling is on
    lr_scaling: bool = True  # the official rule: lr * world * batch
    weight_decay: float = 1e-5
    # ReduceLROnPlateau on the mean training loss, as the official code: checked once per epoch (plateau_every 0)
    # or every plateau_every optimizer steps; never tied to log_every, so logging does not change training
    plateau_every: int = 0
    plateau_factor: float = 0.5
    plateau_patience: int = 10  # in checks (epochs in the official code)
    plateau_cooldown: int = 10  # checks to wait after a reduction (official: 10)
    plateau_min_lr: float = 1e-6  # floor (official: 1e-6)
    # not in the official code: the last lr_decay_fraction of every AugVAE training's steps take the rate linearly
    # down to ~0 (a multiplier on the plateau's rate). Short runs whose noisy loss makes the plateau check fire early
    # or never end either at a tiny rate long before the last step or at the full rate on a noisy step; 0 = off
    lr_decay_fraction: float = 0.0
    lpips_weight: float = 0.0  # 0.1 in the official code; needs assets.vgg16_lpips
    # the perceptual term lpips_weight scales (models/perceptual.py): lpips (the official: LPIPS with its learned
    # linear layers, from the lpips package) | unweighted (VGG16 features, every channel weighted 1)
    perceptual: str = "unweighted"
    # weight of an image-gradient (edge) L1 term, models/perceptual.edge_loss: not in the official code; a weight-free
    # stand-in for LPIPS that keeps small shapes' corners (MSE alone blurs them). The smoke profile sets 1.0 with
    # unquantized_steps: alone it helped one seed and lost colours on two (bench/README.md)
    edge_weight: float = 0.0
    edge_in_ml: bool = True  # false: the edge term in the single-level trainings (SL, control) only
    # single-level trainings (the SL finetune and the plain VQ-VAE control) start as plain autoencoders for this many
    # steps (the continuous latent decoded as it is), then the codebook is set by k-means on the encoder vectors of
    # the last kmeans_batches of those steps and quantization begins. Not in the official code; 0 = off. Our fix for
    # short runs whose ML leaves the H/8 level empty (bench/README.md, "An unquantized start for AugVAE-SL")
    unquantized_steps: int = 0
    kmeans_batches: int = 40
    # once: decode the training split to one uint8 tensor and crop batches on the device (lverse_core/data/
    # decoded.py; for data sets that fit in memory); per_step: decode each image when a batch needs it (ImageNet)
    decode: str = "per_step"
    # NHWC convolutions: auto = on, except bf16 on a CPU (NCHW measured faster there; lverse_core/hardware.py);
    # true | false pin it
    channels_last: str = "auto"
    # auto: bf16 on a GPU or a CPU with native bf16 (AMX / AVX512-BF16), fp32 elsewhere (lverse_core/hardware.py) |
    # fp32 (the paper, §3.5) | bf16: convolutions under bf16 autocast, the quantizer and the loss stay FP32
    precision: str = "auto"
    log_every: int = 20
    ckpt_every: int = 200
    timeout_s: float = 0.0  # wall-clock safety net only; runs are fixed by step counts. 0 = none


@dataclass
class BiARTConfig:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.1  # minGPT default
    text_len: int = 64  # BPE text positions (paper: 64)
    compact_vocab: bool = True  # map the BPE ids the captions use to a compact range (CPU speed-up)
    segment_embedding: bool = True  # [REF]/[GEN] segment embedding (paper §3.4); false: ablation (notebook 07)
    positions: str = "per_modality"  # per_modality (text + image tables) | shared (one table over the sequence)


@dataclass
class BiARTTrainConfig:
    batch_size: int = 32  # sequences per process; the global batch is batch_size x world size (as AugVAE's)
    steps: int = 1000
    lr: float = 3e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    ref_loss_weight: float = 1.0  # NLL weight on the [REF] (condition) part, paper §3.4
    gen_loss_weight: float = 1.0  # NLL weight on the [GEN] (target) part
    direction: str = "alternate"  # alternate (paper: t2i / i2t per iteration) | mixed (both in every batch) | t2i | i2t
    # auto: bf16 on a GPU or a CPU with native bf16 (AMX / AVX512-BF16), fp32 elsewhere | fp32 | bf16 | fp16 (GPU)
    precision: str = "auto"
    log_every: int = 20
    ckpt_every: int = 200
    timeout_s: float = 0.0


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    n_candidates: int = 8  # candidates per prompt for CLIP reranking (paper: 64)
    n_repeats: int = 1  # k: rerank rounds with different seeds (paper §3.6)
    caption_tokens: int = 32  # tokens sampled per caption before truncation at the first full stop
    # image->text only: candidates per image (0 = n_candidates; the paper draws 64 for both directions), and the
    # weight of BiART's own log-likelihood of each truncated candidate in its reranking score: 0 = the clip-score
    # alone (paper §3.6); w > 0 ranks by z(clip-score) + w * z(log p(caption | image)), z-scored over each image's
    # candidates (our addition: candidates.rerank_scores)
    caption_candidates: int = 0
    caption_likelihood_weight: float = 0.0
    # text->image: the same score with log p(prompt | candidate image codes), BiART's image->text direction reading
    # each drawn image (our addition); 0 = the clip-score alone (paper §3.6)
    image_likelihood_weight: float = 0.0
    batch_size: int = 64


@dataclass
class CLIPConfig:
    train_steps: int = 300  # embedded profiles train a small CLIP reranker; paper uses OpenAI ViT-B/32
    batch_size: int = 64
    lr: float = 5e-4
    embed_dim: int = 128
    vision_width: int = 128
    vision_layers: int = 4
    vision_patch_size: int = 8
    transformer_width: int = 128  # multiple of 64 (clip.load infers heads = width // 64)
    transformer_heads: int = 2  # must equal transformer_width // 64 (see lverse_core/sampling/clip_reranker.py)
    transformer_layers: int = 2
    context_length: int = 32  # text positions of the small CLIP (OpenAI CLIP: 77); captions are truncated to it


@dataclass
class EvalConfig:
    fid_extractor: str = "kit"  # kit (the kit's own registered extractor) | inception (needs assets.inception_fid)
    # Table 2's scoring pipeline (lverse_core/evaluation/metrics.py): coco-caption (PTB tokenizer, every reference)
    # or nlg-eval (the paper's tool: raw stripped text, the first caption_refs references of every image)
    caption_metrics: str = "coco-caption"
    caption_refs: int = 5  # references per image under nlg-eval (it needs the same number for every image)
    # METEOR runs a Java program; false leaves it out (None in Table 2, with the reason), which with
    # caption_metrics: nlg-eval (no PTB tokenizer, also Java) makes caption scoring Java-free (the gpu profile)
    meteor: bool = True
    t2i_prompts: int = 200  # captions for Table 3 (paper: 30000)
    # split(s) the Table 3 prompts and FID's real images come from: train | restval | val | test, or several joined
    # with "+" (paper: "val+test", 10,000 Karpathy images, 3 captions each; Karpathy restval is training data here)
    t2i_split: str = "test"
    blur_radii: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 8])
    human_eval_pool: int = 100  # sets in the human-evaluation pool (paper: 500)
    human_eval_form_size: int = 50  # sets per rater (paper: 50)
    human_eval_raters: int = 10  # simulated raters on embedded profiles (paper: 150 people)
    bootstrap: int = 1000  # bootstrap resamples for confidence intervals
    # The attribute judge (lverse_core/evaluation/judge.py): a small CNN trained on real embedded images. It decides whether
    # a generated image shows what its caption says (Table 3 on embedded profiles) and its penultimate layer is
    # the kit's FID feature space (eval.fid_extractor = kit).
    judge_steps: int = 600  # optimizer steps (batch judge_batch_size)
    judge_batch_size: int = 64  # images per step
    judge_lr: float = 2e-3  # AdamW learning rate (cosine decay to 5%)
    judge_width: int = 32  # channels of the first conv; later stride-2 stages 2x, the two dilated convs 4x
    judge_feature_dim: int = 128  # channels of the penultimate layer = size of the kit's FID features
    judge_image_size: int = 32  # px the judge looks at (inputs resized to it): 16, 32, 64, ... ; 0 = data.image_size
    judge_noise: float = 0.05  # std of Gaussian pixel noise added in training (in [-1, 1] units); 0 = off


@dataclass
class AssetsConfig:
    """Local paths to real data and weights. Nothing is downloaded; each can be set by an env variable."""

    imagenet_root: str = ""  # ImageFolder root with train/ and val/
    coco_root: str = ""  # MS-COCO 2014 image root (holds train2014/, val2014/)
    coco_karpathy_json: str = ""  # Karpathy's dataset_coco.json
    cc3m_tsv: str = ""  # Conceptual Captions TSV (caption \t image path)
    wds_shards: str = ""  # directory of webdataset .tar shards written by img2dataset ({key}.jpg + {key}.txt)
    inception_fid: str = ""  # pt_inception-2015-12-05 weights for torch-fidelity
    clip_vit_b32: str = ""  # OpenAI CLIP ViT-B/32 .pt file for clip.load
    vgg16_lpips: str = ""  # VGG16 weights for LPIPS (optional)
    corenlp_dir: str = ""  # Stanford CoreNLP 3.6.0 jars for SPICE (optional)
    # true: every asset above except corenlp_dir is a stand-in the kit writes under data/<profile>/ (a small
    # embedded data set at data.image_size in the real formats, random-weight files of the real architectures):
    # a dry run of the paper path whose numbers mean nothing (profile paper-dry; lverse_core/data/stand_ins.py)
    stand_ins: bool = False


@dataclass
class ClaimsConfig:
    """Budgets of the claims notebook (07): every method and control trains under the same budget, per seed."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # each seed: its own data draw, init and order
    ml_steps: int = 0  # AugVAE-ML steps per arm; 0 = augvae_train.ml_steps
    sl_steps: int = 0  # AugVAE-SL finetune steps; 0 = augvae_train.sl_steps (SL from scratch gets ML + SL)
    biart_steps: int = 0  # BiART steps per arm; 0 = biart_train.steps (one-direction controls get half)
    eval_images: int = 100  # test images captioned, and test prompts drawn, per arm
    n_candidates: int = 0  # candidates CLIP reranks per prompt; 0 = sampling.n_candidates
    level: float = 0.95  # confidence level of the intervals


@dataclass
class Config:
    profile: str = "smoke"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    reports_dir: str = "reports/{profile}"
    runs_dir: str = "runs/{profile}"  # checkpoints and code files
    data: DataConfig = field(default_factory=DataConfig)
    augvae: AugVAEConfig = field(default_factory=AugVAEConfig)
    augvae_train: AugVAETrainConfig = field(default_factory=AugVAETrainConfig)
    biart: BiARTConfig = field(default_factory=BiARTConfig)
    biart_train: BiARTTrainConfig = field(default_factory=BiARTTrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    clip: CLIPConfig = field(default_factory=CLIPConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    claims: ClaimsConfig = field(default_factory=ClaimsConfig)
    assets: AssetsConfig = field(default_factory=AssetsConfig)

    # -- derived values (never stored in YAML) ---------------------------------------------------------------
    def path(self, template: str) -> Path:
        """A config path template with ``{profile}`` filled in, relative paths taken against ``workdir()``.

        Only the literal text ``{profile}`` is replaced: a folder is never run through ``str.format``, so other
        braces stay as they are instead of raising or looking up attributes."""
        p = Path(template.replace("{profile}", self.profile))
        return p if p.is_absolute() else workdir() / p

    @property
    def data_root(self) -> Path:
        return self.path(self.data.root)

    @property
    def reports_root(self) -> Path:
        return self.path(self.reports_dir)

    @property
    def runs_root(self) -> Path:
        return self.path(self.runs_dir)

    @property
    def image_grid(self) -> int:
        """Side of the AugVAE-SL code map: the image is downsampled 8x (256 px -> 32x32 = 1024 codes)."""
        return self.data.image_size // 8

    @property
    def image_tokens(self) -> int:
        return self.image_grid**2

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def workdir() -> Path:
    """Where relative outputs (data, runs, reports) go: ``LVERSE_WORKDIR`` (e.g. a test's tmp dir) or the repo root.

    A relative ``LVERSE_WORKDIR`` is taken against the current directory and written back to the environment as an
    absolute path, so the notebook kernels and subprocesses started later (with another cwd: the runner starts
    kernels in the repo root) use the same folder instead of splitting the run in two.
    """
    value = os.environ.get("LVERSE_WORKDIR")
    if not value:
        return REPO_ROOT
    p = Path(value).expanduser()
    if not p.is_absolute():
        p = p.absolute()
        os.environ["LVERSE_WORKDIR"] = str(p)
    return p


# Environment variables that override asset paths (they win over the YAML).
ASSET_ENV = {
    "imagenet_root": "LVERSE_IMAGENET_ROOT",
    "coco_root": "LVERSE_COCO_ROOT",
    "coco_karpathy_json": "LVERSE_COCO_KARPATHY_JSON",
    "cc3m_tsv": "LVERSE_CC3M_TSV",
    "wds_shards": "LVERSE_WDS_SHARDS",
    "inception_fid": "LVERSE_INCEPTION_WEIGHTS",
    "clip_vit_b32": "LVERSE_CLIP_WEIGHTS",
    "vgg16_lpips": "LVERSE_VGG16_WEIGHTS",
    "corenlp_dir": "LVERSE_CORENLP_DIR",
}

# Where each asset comes from, quoted in the error when it is missing.
ASSET_HELP = {
    "imagenet_root": "ImageNet1K (ILSVRC2012) from image-net.org, unpacked as an ImageFolder tree (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG)",
    "coco_root": "MS-COCO 2014 train2014/ and val2014/ images from cocodataset.org",
    "coco_karpathy_json": "dataset_coco.json from Karpathy's caption splits (cs.stanford.edu/people/karpathy/deepimagesent, caption_datasets.zip)",
    "cc3m_tsv": "the Conceptual Captions TSV (ai.google.com/research/ConceptualCaptions), with images downloaded beside it",
    "wds_shards": "a directory of webdataset .tar shards (00000.tar, ...) that img2dataset wrote with output_format webdataset, e.g. from the Conceptual Captions TSV or a LAION parquet",
    "inception_fid": "torch-fidelity's pt_inception-2015-12-05-6726825d.pth (a release asset of toshas/torch-fidelity on GitHub)",
    "clip_vit_b32": "OpenAI CLIP ViT-B-32.pt (the URL is in clip/clip.py of the clip-anytorch package, _MODELS['ViT-B/32'])",
    "vgg16_lpips": "torchvision's vgg16-397923af.pth (download.pytorch.org/models) for the LPIPS loss",
    "corenlp_dir": "Stanford CoreNLP 3.6.0 (stanford-corenlp-3.6.0.jar and -models.jar), as pycocoevalcap's SPICE expects in spice/lib",
}


class MissingAssetError(FileNotFoundError):
    """A real data set or weight file the run needs is not on this machine."""


# With ``assets.stand_ins`` (profile paper-dry) these assets are stand-ins that lverse_core.data.stand_ins writes
# under data/<profile>/: the embedded data set in the real formats and random-weight files of the real architectures
STAND_IN_PATHS = {
    "coco_karpathy_json": "stand_in_data/dataset_coco.json",
    "coco_root": "stand_in_data/images",
    "imagenet_root": "stand_in_data/imagefolder",
    "cc3m_tsv": "stand_in_data/cc3m_train.tsv",
    "wds_shards": "stand_in_data/wds",
    "inception_fid": "stand_in_weights/pt_inception-2015-12-05-random.pth",
    "clip_vit_b32": "stand_in_weights/ViT-B-32-random.pt",
    "vgg16_lpips": "stand_in_weights/vgg16-random.pth",
}


def require_asset(cfg: Config, name: str) -> Path:
    """The local path of asset ``name``, or a MissingAssetError naming it, its env variable and its source."""
    if name not in ASSET_HELP:
        raise ConfigError(f"unknown asset {name!r}; valid: {', '.join(ASSET_HELP)}")
    if cfg.assets.stand_ins and name in STAND_IN_PATHS:
        p = cfg.data_root / STAND_IN_PATHS[name]
        if not p.exists():
            raise MissingAssetError(
                f"stand-in asset '{name}' ({p}) is not written yet (assets.stand_ins is on in profile "
                f"{cfg.profile!r}). Notebook 00 writes the stand-ins: python -m lverse_core run --profile "
                f"{cfg.profile} --only 00 (or lverse_core.data.stand_ins.ensure_stand_ins(cfg)).")
        return p
    value = getattr(cfg.assets, name)
    env = ASSET_ENV[name]
    if not value:
        raise MissingAssetError(
            f"asset '{name}' is not configured. Set assets.{name} in configs/{cfg.profile}.yaml or the environment "
            f"variable {env}. It comes from: {ASSET_HELP[name]}. The kit never downloads it."
        )
    p = Path(os.path.expanduser(value))
    if not p.exists():
        raise MissingAssetError(
            f"asset '{name}' points to {p}, which does not exist. Fix assets.{name} or {env}. "
            f"It comes from: {ASSET_HELP[name]}."
        )
    return p


# -- loading and validation --------------------------------------------------------------------------------------

# A profile name is a plain file stem: it becomes part of paths (configs/<name>.yaml, data/<name>, runs/<name>,
# reports/<name>), so separators or '..' would read a YAML outside configs/ and write outside the work directory.
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def available_profiles() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if PROFILE_NAME.fullmatch(p.stem))


def _check_profile_name(name: Any) -> None:
    if not isinstance(name, str) or not PROFILE_NAME.fullmatch(name):
        raise ConfigError(f"profile name {name!r} is not a plain name (letters, digits, '_' and '-' only; it names "
                          f"configs/<name>.yaml); valid profiles: {', '.join(available_profiles())}")


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _check_value(where: str, value: Any, typ: Any) -> Any:
    """Return ``value`` coerced to ``typ`` (int -> float allowed), or raise ConfigError naming ``where``."""
    origin = typing.get_origin(typ)
    if origin is list:
        (item,) = typing.get_args(typ)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list of {item.__name__}, got {_short(value)}")
        return [_check_value(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_short(value)} ({type(value).__name__})")
        try:
            return float(value)  # NaN and +-inf pass here; the declared ranges refuse them, naming the key
        except OverflowError:  # an integer beyond the largest float
            raise ConfigError(f"{where}: {_short(value)} is out of range; expected a finite number") from None
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_short(value)} ({type(value).__name__})")
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_short(value)}")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_short(value)} ({type(value).__name__})")
        return value
    raise ConfigError(f"{where}: unsupported type {typ}")  # pragma: no cover - schema bug


def _build(cls, values: dict[str, Any], where: str):
    types = _field_types(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in types:
            raise ConfigError(
                f"unknown key '{where}{key}'; valid keys in {where.rstrip('.') or 'the top level'}: "
                f"{', '.join(types)}"
            )
        typ = types[key]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key}: expected a mapping of {', '.join(_field_types(typ))}")
            kwargs[key] = _build(typ, value, f"{where}{key}.")
        else:
            if f"{where}{key}" in TOGGLES and isinstance(value, bool):
                value = "true" if value else "false"  # YAML's true/false beside the word auto
            kwargs[key] = _check_value(f"{where}{key}", value, typ)
    return cls(**kwargs)


# String options that also take YAML's true / false (stored as "true" / "false"), beside "auto".
TOGGLES = ("augvae_train.channels_last",)

# Allowed values of the string options; checked after loading.
CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "data.source": ("shapes", "coco", "cc3m", "wds"),
    "data.train_source": ("", "cc3m", "wds"),
    "data.bad_input": ("error", "skip"),
    "augvae.ema_update": ("per_level", "pooled"),
    "augvae.codebook": ("shared", "per_level"),
    "augvae.encoder_stem": ("kit", "official"),
    "augvae.downsample_pad": ("symmetric", "official"),
    "augvae.quant_bias": ("shared", "per_level"),
    "augvae_train.decode": ("per_step", "once"),
    "augvae_train.perceptual": ("lpips", "unweighted"),
    "augvae_train.precision": ("auto", "fp32", "bf16"),
    "augvae_train.channels_last": ("auto", "true", "false"),
    "biart_train.direction": ("alternate", "mixed", "t2i", "i2t"),
    "biart.positions": ("per_modality", "shared"),
    "biart_train.precision": ("auto", "fp32", "bf16", "fp16"),
    "eval.fid_extractor": ("kit", "inception"),
    "eval.caption_metrics": ("coco-caption", "nlg-eval"),
}


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Range:
    """Allowed values of one number (or of every item of a list of numbers); ``None`` = unbounded."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself excluded
    hi_open: bool = False

    def __contains__(self, v: float) -> bool:
        # NaN compares false with every bound and inf passes an open upper end; an int is always finite (and
        # math.isfinite would overflow on a huge one)
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else _number(self.lo)
        hi = "inf" if self.hi is None else _number(self.hi)
        return f"{'(' if self.lo_open or self.lo is None else '['}{lo}, {hi}{')' if self.hi_open or self.hi is None else ']'}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


AT_LEAST_0, AT_LEAST_1, POSITIVE = Range(0), Range(1), Range(0, lo_open=True)
# Every integer of a profile is below 2**31: sizes, counts and seeds reach torch and numpy as C integers, where a
# larger value fails far from the profile (an overflow, or a tensor that cannot be allocated) after earlier notebooks
# have written their outputs. Seeds are added to (seed + rank, seed + epoch), so they have the same bound.
INT_MAX = 2**31 - 1
SEED = Range(0, INT_MAX)
FRACTION, OPEN_FRACTION = Range(0, 1), Range(0, 1, hi_open=True)

# The declared range of every number in a profile (tests/test_config.py checks that none is missing). Counts of
# optimizer steps are at least 1: a non-positive count would write an untrained checkpoint marked finished.
RANGES: dict[str, Range] = {
    "seed": SEED,
    "data.image_size": Range(16, 4096),  # the paper: 256
    "data.n_train": AT_LEAST_0, "data.n_val": AT_LEAST_0, "data.n_test": AT_LEAST_0,
    "data.n_restval": AT_LEAST_0, "data.captions_per_image": AT_LEAST_1, "data.max_objects": AT_LEAST_1,
    "data.ood_images": AT_LEAST_0, "data.min_image_side": AT_LEAST_1, "data.num_workers": AT_LEAST_0,
    "data.gen_workers": AT_LEAST_0,
    "augvae.hidden": AT_LEAST_1, "augvae.ch_mult": AT_LEAST_1, "augvae.z_channels": AT_LEAST_1,
    "augvae.codebook_size": Range(2), "augvae.n_levels": AT_LEAST_1, "augvae.sl_level": AT_LEAST_0,
    "augvae.enc_res_blocks": AT_LEAST_0, "augvae.dec_res_blocks": AT_LEAST_0, "augvae.mid_res_blocks": AT_LEAST_0,
    "augvae.norm_groups": AT_LEAST_1, "augvae.decay": OPEN_FRACTION, "augvae.eps": POSITIVE,
    "augvae.beta": AT_LEAST_0, "augvae.dead_code_threshold": AT_LEAST_0,
    "augvae_train.batch_size": AT_LEAST_1, "augvae_train.ml_steps": AT_LEAST_1, "augvae_train.sl_steps": AT_LEAST_1,
    "augvae_train.baseline_steps": AT_LEAST_0,  # 0 = off (no control)
    "augvae_train.lr": POSITIVE, "augvae_train.weight_decay": AT_LEAST_0,
    "augvae_train.plateau_factor": Range(0, 1, lo_open=True, hi_open=True), "augvae_train.plateau_patience": AT_LEAST_0,
    "augvae_train.plateau_every": AT_LEAST_0,  # 0 = once per epoch
    "augvae_train.plateau_cooldown": AT_LEAST_0, "augvae_train.plateau_min_lr": AT_LEAST_0,
    "augvae_train.lr_decay_fraction": OPEN_FRACTION,
    "augvae_train.lpips_weight": AT_LEAST_0, "augvae_train.edge_weight": AT_LEAST_0,
    "augvae_train.unquantized_steps": AT_LEAST_0, "augvae_train.kmeans_batches": AT_LEAST_1,
    "augvae_train.log_every": AT_LEAST_1, "augvae_train.ckpt_every": AT_LEAST_1,
    "augvae_train.timeout_s": AT_LEAST_0,
    "biart.n_layer": AT_LEAST_1, "biart.n_head": AT_LEAST_1, "biart.n_embd": AT_LEAST_1, "biart.dropout": OPEN_FRACTION,
    "biart.text_len": Range(2),  # at least [SOT] and one token
    "biart_train.batch_size": AT_LEAST_1, "biart_train.steps": AT_LEAST_1, "biart_train.lr": POSITIVE,
    "biart_train.warmup_steps": AT_LEAST_0, "biart_train.min_lr_ratio": FRACTION, "biart_train.betas": OPEN_FRACTION,
    "biart_train.weight_decay": AT_LEAST_0, "biart_train.grad_clip": AT_LEAST_0,  # 0 = no clipping
    "biart_train.ref_loss_weight": AT_LEAST_0, "biart_train.gen_loss_weight": AT_LEAST_0,
    "biart_train.log_every": AT_LEAST_1, "biart_train.ckpt_every": AT_LEAST_1, "biart_train.timeout_s": AT_LEAST_0,
    "sampling.temperature": AT_LEAST_0,  # 0 = greedy
    "sampling.top_k": AT_LEAST_0, "sampling.top_p": Range(0, 1, lo_open=True), "sampling.n_candidates": AT_LEAST_1,
    "sampling.n_repeats": AT_LEAST_1, "sampling.caption_tokens": AT_LEAST_1,
    "sampling.caption_candidates": AT_LEAST_0, "sampling.caption_likelihood_weight": AT_LEAST_0,
    "sampling.image_likelihood_weight": AT_LEAST_0,
    "sampling.batch_size": AT_LEAST_1,
    "clip.train_steps": AT_LEAST_0,  # 0 = OpenAI ViT-B/32 from assets.clip_vit_b32
    "clip.batch_size": AT_LEAST_1, "clip.lr": POSITIVE, "clip.embed_dim": AT_LEAST_1, "clip.vision_width": Range(64),
    "clip.vision_layers": AT_LEAST_1, "clip.vision_patch_size": AT_LEAST_1, "clip.transformer_width": Range(64),
    "clip.transformer_heads": AT_LEAST_1, "clip.transformer_layers": AT_LEAST_1, "clip.context_length": Range(2),
    "eval.t2i_prompts": AT_LEAST_1, "eval.blur_radii": AT_LEAST_0, "eval.human_eval_pool": AT_LEAST_1,
    "eval.human_eval_form_size": AT_LEAST_1, "eval.human_eval_raters": AT_LEAST_1, "eval.bootstrap": AT_LEAST_1,
    "eval.judge_steps": AT_LEAST_1, "eval.judge_batch_size": AT_LEAST_1, "eval.judge_lr": POSITIVE,
    "eval.judge_width": AT_LEAST_1, "eval.judge_feature_dim": AT_LEAST_1,
    "claims.seeds": SEED, "claims.ml_steps": AT_LEAST_0, "claims.sl_steps": AT_LEAST_0,
    "claims.biart_steps": AT_LEAST_0,
    "claims.eval_images": Range(2), "claims.n_candidates": AT_LEAST_0, "claims.level": Range(0.5, 0.999),
    "eval.judge_image_size": AT_LEAST_0,  # 0 = data.image_size
    "eval.judge_noise": AT_LEAST_0, "eval.caption_refs": AT_LEAST_1,
}


# (fewest, most) items of the list-valued keys; None = no bound
LENGTHS: dict[str, tuple[int, int | None]] = {
    "augvae.ch_mult": (1, None),  # one entry per encoder stage
    "biart_train.betas": (2, 2),  # Adam's (beta1, beta2)
    "eval.blur_radii": (1, None),  # Table 3 has one FID-k column per radius
}


def _check_ranges(cfg: Config) -> None:
    for key, (fewest, most) in LENGTHS.items():
        value = _get(cfg, key)
        if len(value) < fewest or (most is not None and len(value) > most):
            want = f"exactly {fewest}" if fewest == most else f"at least {fewest}" if most is None else \
                f"{fewest} to {most}"
            raise ConfigError(f"{key}: {_short(value)} has {len(value)} item(s); give {want}")
    for key, allowed in RANGES.items():
        value = _get(cfg, key)
        for v in value if isinstance(value, list) else [value]:
            if v not in allowed:  # Range refuses NaN and +-inf
                raise ConfigError(f"{key}: {_short(value)} is out of range; allowed: {allowed}"
                                  + (" for every item" if isinstance(value, list) else "")
                                  + (", a finite number" if isinstance(v, float) and not math.isfinite(v) else ""))
            if isinstance(v, int) and v > INT_MAX:
                raise ConfigError(f"{key}: {_short(value)} is out of range; integers in a profile are at most "
                                  f"{INT_MAX} (2**31 - 1)" + (" for every item" if isinstance(value, list) else ""))


def validate(cfg: Config) -> Config:
    _check_profile_name(cfg.profile)
    for key, allowed in CHOICES.items():
        if _get(cfg, key) not in allowed:
            raise ConfigError(f"{key}: {_get(cfg, key)!r} is not one of {', '.join(allowed)}")
    _check_ranges(cfg)  # first: the checks below divide by some of these numbers
    if cfg.data.image_size % 8:
        raise ConfigError(f"data.image_size: {cfg.data.image_size} must be a multiple of 8 and at least 16")
    a = cfg.augvae
    # 2 ** halvings > image_size, compared by bit length: 2 ** n_levels itself would not finish for a huge n_levels
    halvings = len(a.ch_mult) - 1 + a.n_levels - 1
    if halvings >= cfg.data.image_size.bit_length():
        raise ConfigError(
            f"augvae: {a.n_levels} levels with ch_mult {a.ch_mult} downsample a {cfg.data.image_size}-px image "
            f"below 1x1; use fewer levels or a larger data.image_size"
        )
    if not 0 <= a.sl_level < a.n_levels:
        raise ConfigError(f"augvae.sl_level: {a.sl_level} must be in 0..{a.n_levels - 1}")
    for ch in [a.hidden * m for m in a.ch_mult] + [a.z_channels]:
        if ch % a.norm_groups:
            raise ConfigError(f"augvae.norm_groups: {a.norm_groups} does not divide channel count {ch}")
    if cfg.biart.n_embd % cfg.biart.n_head:
        raise ConfigError(f"biart.n_embd ({cfg.biart.n_embd}) must be divisible by biart.n_head ({cfg.biart.n_head})")
    if len(cfg.claims.seeds) != len(set(cfg.claims.seeds)) or not cfg.claims.seeds:
        raise ConfigError(f"claims.seeds: {cfg.claims.seeds}; give distinct seeds (at least 3 for an interval that "
                          f"can decide a claim)")
    if cfg.data.source == "shapes" and cfg.data.n_train <= 0:
        raise ConfigError(f"data.n_train: the embedded data set needs a positive size, got {cfg.data.n_train}")
    for part in cfg.eval.t2i_split.split("+"):
        if part not in ("train", "restval", "val", "test"):
            raise ConfigError(f"eval.t2i_split: {cfg.eval.t2i_split!r}; use train, restval, val or test, or several "
                              f"joined with '+' (e.g. 'val+test')")
    return cfg


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: '{part}' is not a section")
    node[parts[-1]] = value


def load_profile(name: str = "smoke", **overrides: Any) -> Config:
    """Load ``configs/<name>.yaml`` into a validated :class:`Config`.

    Overrides use dotted keys (``load_profile("ci", **{"augvae.ml_steps": 5})``) or whole sections
    (``augvae_train={"ml_steps": 5}``). Asset paths set in the environment (``ASSET_ENV``) win over the YAML.
    """
    _check_profile_name(name)
    workdir()  # pin a relative LVERSE_WORKDIR now, before any kernel or worker inherits the environment
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown profile {name!r}; valid profiles: {', '.join(available_profiles())}")
    tree = _read_tree(path)
    if tree.get("profile", name) != name:
        raise ConfigError(f"{path} says profile {tree['profile']!r} but was loaded as {name!r}")
    tree = _extended(tree, path, [name])
    _check_profile_folders(tree, path)
    tree["profile"] = name
    if "profile" in overrides:
        raise ConfigError(f"override 'profile': the profile is chosen by name (load_profile({name!r}, ...)), "
                          f"never overridden")
    for key, value in overrides.items():
        if isinstance(value, dict) and "." not in key:
            for sub, v in value.items():
                _set_dotted(tree, f"{key}.{sub}", v)
        else:
            _set_dotted(tree, key, value)
    assets = tree.setdefault("assets", {})
    for key, env in ASSET_ENV.items():
        if os.environ.get(env):
            assets[key] = os.environ[env]
    return validate(_build(Config, tree, ""))


def _check_profile_folders(tree: dict[str, Any], path: Path) -> None:
    """The output folders a profile YAML sets are relative and stay inside the work directory: ``LVERSE_WORKDIR``
    is the one setting that moves every output (README.md), and no profile of the kit sets an absolute folder."""
    for key in OUTPUT_FOLDER_KEYS:
        node: Any = tree
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, str):
            continue  # not set here, or of the wrong type (validation names it)
        rel = Path(node.replace("{profile}", "x"))
        if rel.is_absolute() or os.path.normpath(rel).split(os.sep)[0] == "..":
            raise ConfigError(f"{path}: {key} = {node!r} leaves the work directory; a profile's folders are relative "
                              f"to it (e.g. '{key.split('.')[-1] if key != 'data.root' else 'data'}/{{profile}}'). "
                              f"To write elsewhere, set LVERSE_WORKDIR")


def _read_tree(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(tree).__name__}")
    return tree


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``top`` laid over it section by section (a key in ``top`` wins; lists are replaced)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _extended(tree: dict[str, Any], path: Path, chain: list[str]) -> dict[str, Any]:
    """A profile's tree with ``extends: <base profile>`` resolved: the base's YAML, then this one's keys over it."""
    base = tree.pop("extends", None)
    if base is None:
        return tree
    _check_profile_name(base)
    base_path = CONFIG_DIR / f"{base}.yaml"
    if base in chain:
        raise ConfigError(f"{path}: 'extends: {base}' makes a cycle ({' -> '.join([*chain, base])})")
    if not base_path.is_file():
        raise ConfigError(f"{path}: 'extends: {base}' names no profile; valid profiles: "
                          f"{', '.join(available_profiles())}")
    base_tree = _extended(_read_tree(base_path), base_path, [*chain, base])
    base_tree.pop("profile", None)
    return _merged(base_tree, tree)


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a Config saved with ``to_dict`` (e.g. from a checkpoint), validated."""
    return validate(_build(Config, dict(tree), ""))


def derive(cfg: Config, **dotted: Any) -> Config:
    """``cfg`` with dotted overrides (``derive(cfg, **{"biart.n_layer": 2})``) applied, validated; ``cfg`` is
    unchanged. Unlike ``load_profile(name, ...)`` it keeps whatever ``cfg`` already overrides."""
    import copy

    tree = copy.deepcopy(cfg.to_dict())
    for key, value in dotted.items():
        _set_dotted(tree, key, value)
    return config_from_dict(tree)



# Keys that name the profile or a folder: a run's OVERRIDES may not set them. The run's own folders follow from the
# profile and the overrides' tag (load_run_config); a user-chosen one could point at another run's folders (a ci-sized
# data set written over smoke's) or outside the work directory. The kit's own code sets them through load_profile's
# and derive's keyword overrides (the claims' per-seed folders, the tests' tmp dirs), which are not user input.
OUTPUT_FOLDER_KEYS = ("runs_dir", "reports_dir", "data.root")
RESERVED_OVERRIDES = ("profile", *OUTPUT_FOLDER_KEYS, *(f"assets.{k}" for k in ASSET_ENV))
OVERRIDES_MAX_DEPTH = 8  # {"section": {"key": [[...]]}}: a profile is never deeper than a few levels


def _nesting_depth(value: Any, limit: int) -> int:
    """How many levels of dicts and lists ``value`` has, counted level by level without recursion and only up to
    ``limit + 1`` (a value nested thousands of levels deep would otherwise end in a RecursionError)."""
    depth, level = 0, [value]
    while depth <= limit:
        level = [x for x in level if isinstance(x, (dict, list, tuple))]
        if not level:
            break
        depth += 1
        level = [v for x in level for v in (x.values() if isinstance(x, dict) else x)]
    return depth


def _reserved_key_error(key: str) -> ConfigError:
    if key == "profile":
        return ConfigError("OVERRIDES: 'profile' cannot be overridden; choose the profile with PROFILE (the runner's "
                           "--profile), and set values with dotted keys in OVERRIDES")
    if key.startswith("assets."):
        name = key.split(".", 1)[1]
        return ConfigError(f"OVERRIDES: '{key}' names a folder or file and cannot be overridden; set it in "
                           f"configs/<profile>.yaml or with the environment variable {ASSET_ENV[name]}")
    return ConfigError(f"OVERRIDES: '{key}' names a folder and cannot be overridden; a run with OVERRIDES gets its "
                       f"own runs/, reports/ (and data/) folders named after its tag. To move every output, set "
                       f"LVERSE_WORKDIR")


def overrides_tag(overrides: dict[str, Any]) -> str:
    """A stable name for a set of overrides: 16 hex digits (64 bits) of their canonical JSON's SHA-256, so two
    different sets practically never share folders; ``load_run_config`` also checks ``overrides.json`` in the run
    folder against the overrides it stands for."""
    import hashlib

    return hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flat_overrides(overrides: Any) -> dict[str, Any]:
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise ConfigError(f"OVERRIDES must be a dict of dotted config keys to values, e.g. "
                          f"{{\"augvae_train.sl_steps\": 2600}}; got {_short(overrides)}")
    if _nesting_depth(overrides, OVERRIDES_MAX_DEPTH) > OVERRIDES_MAX_DEPTH:
        raise ConfigError(f"OVERRIDES is nested more than {OVERRIDES_MAX_DEPTH} levels deep; a profile's values are "
                          f"numbers, strings and flat lists under dotted keys, e.g. "
                          f"{{\"biart_train.betas\": [0.9, 0.95]}}")
    flat = {}
    for key, value in overrides.items():
        if isinstance(value, dict) and "." not in key:
            if not all(isinstance(k, str) for k in value):
                raise ConfigError(f"OVERRIDES: section {key!r} must map key names to values; got {_short(value)}")
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    for key in flat:
        for reserved in RESERVED_OVERRIDES:
            if key == reserved or key.startswith(reserved + "."):
                raise _reserved_key_error(reserved)
    return flat


def _short(value: Any, limit: int = 200) -> str:
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # nested too deeply, or an integer of more than 4300 digits
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[:limit] + "..."


def load_run_config(name: str, overrides: dict[str, Any] | None = None) -> Config:
    """The configuration a notebook runs with: profile ``name`` plus the notebook parameter ``OVERRIDES``.

    ``OVERRIDES`` maps dotted keys to values (``{"augvae_train.sl_steps": 2600}``). A run with overrides never
    reuses or overwrites the default run's checkpoints and reports: it gets its own ``runs/<profile>+<tag>/`` and
    ``reports/<profile>+<tag>/`` (``tag`` = ``overrides_tag`` of the validated values), and its own
    ``data/<profile>+<tag>/`` when it changes ``seed`` or a ``data.`` key; ``overrides.json`` in the run folder says
    what the tag stands for, and a run whose overrides differ from it is refused. Keys naming the profile or a
    folder (``RESERVED_OVERRIDES``) are refused: the run's folders are the kit's to choose.
    """
    if overrides is None or overrides == {}:
        return load_profile(name)
    flat = _flat_overrides(overrides)
    if not flat:  # e.g. {"augvae": {}}: nothing overridden
        return load_profile(name)
    # the tag stands for the validated values (1 and 1.0 for a float are the same run), in their JSON form
    resolved = load_profile(name, **flat)
    values = json.loads(json.dumps({k: _get(resolved, k) for k in flat}, sort_keys=True))
    tag = overrides_tag(values)
    folders = {"runs_dir": f"runs/{{profile}}+{tag}", "reports_dir": f"reports/{{profile}}+{tag}"}
    if any(k == "seed" or k.startswith("data.") for k in flat):
        folders["data.root"] = f"data/{{profile}}+{tag}"
    cfg = load_profile(name, **{**flat, **folders})
    _check_run_record(cfg.runs_root, {"profile": name, "overrides": values, "tag": tag})
    return cfg


def _check_run_record(runs: Path, record: dict[str, Any]) -> None:
    """Write ``overrides.json`` into a new run folder; in an existing one, refuse a record of other overrides."""
    path = runs / "overrides.json"
    if path.exists():
        try:
            held = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path} cannot be read ({type(e).__name__}: {e}), so what {runs} holds is unknown; "
                              f"move that folder away and run again") from None
        if not isinstance(held, dict) or {k: held.get(k) for k in record} != record:
            said = {k: held.get(k) for k in record} if isinstance(held, dict) else held
            raise ConfigError(f"{path} records another run ({_short(said)}) than these overrides "
                              f"({_short(record)}); the folder is not reused. Move {runs} away (or compare the two) "
                              f"and run again")
        return
    runs.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(path)
