"""The profile schema: one dataclass per YAML section, each field described once.

Every field is declared with :func:`setting`, which carries everything the kit knows about it: the default, a help
text, and what values are valid (``range`` for numbers, ``choices`` for string options, ``length`` for lists, a
``check`` for anything else about the one value). ``validate.validate`` walks these declarations; nothing else lists
the keys. Adding a number to a profile is one line here:

    lr: float = setting(3e-4, help="peak learning rate", range=POSITIVE)

Checks that tie two fields together (``sl_level < n_levels``) are not any one field's, and live in ``validate``.
An asset (a real data set or weight file) is a field of :class:`AssetsConfig` declared with :func:`asset`, which
also names its environment variable, where it comes from and its stand-in file.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lverse_core.config.folders import workdir
from lverse_core.config.sources import SOURCES


# -- what a field may hold --------------------------------------------------------------------------------------

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
        left = "(" if self.lo_open or self.lo is None else "["
        right = ")" if self.hi_open or self.hi is None else "]"
        return f"{left}{lo}, {hi}{right}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


# Every integer of a profile is below 2**31: sizes, counts and seeds reach torch and numpy as C integers, where a
# larger value fails far from the profile (an overflow, or a tensor that cannot be allocated) after earlier notebooks
# have written their outputs. Seeds are added to (seed + rank, seed + epoch), so they have the same bound.
INT_MAX = 2**31 - 1
ANY = Range()  # any finite number (integers still at most INT_MAX): the explicit "no bound" of a number
AT_LEAST_0, AT_LEAST_1, POSITIVE = Range(0), Range(1), Range(0, lo_open=True)
SEED = Range(0, INT_MAX)
FRACTION, OPEN_FRACTION = Range(0, 1), Range(0, 1, hi_open=True)
# Counts of optimizer steps are at least 1: a non-positive count would write an untrained checkpoint marked finished.
STEPS = AT_LEAST_1


@dataclass(frozen=True)
class Asset:
    """A real data set or weight file: the environment variable that sets its path (it wins over the YAML), where it
    comes from (quoted when it is missing; the kit never downloads it) and, for ``assets.stand_ins``, the stand-in
    that lverse_core.data.stand_ins writes under data/<profile>/ ("" = none)."""

    env: str
    source: str
    stand_in: str = ""


@dataclass(frozen=True)
class Spec:
    """Everything declared about one field (``dataclasses.Field.metadata["spec"]``)."""

    help: str
    range: Range | None = None  # numbers, or every item of a list of numbers
    choices: tuple[str, ...] | None = None  # string options
    length: tuple[int, int | None] | None = None  # (fewest, most) items of a list; None = no bound
    check: Callable[[Any], str | None] | None = None  # the value -> None if fine, else what is wrong and what to do
    toggle: bool = False  # a string option that also takes YAML's true / false (stored as "true" / "false")
    asset: Asset | None = None


def setting(default: Any, *, help: str, range: Range | None = None, choices: tuple[str, ...] | None = None,
            length: tuple[int, int | None] | None = None, check: Callable[[Any], str | None] | None = None,
            toggle: bool = False, asset: Asset | None = None) -> Any:
    """A dataclass field with its default and everything validation needs (see :class:`Spec`). A list default is
    copied for every instance."""
    if not help.strip():
        raise TypeError("every setting needs a help text")
    if choices is not None and default not in choices:
        raise TypeError(f"default {default!r} is not one of its choices {choices}")
    spec = Spec(help=help, range=range, choices=choices, length=length, check=check, toggle=toggle, asset=asset)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"spec": spec})
    return field(default=default, metadata={"spec": spec})


def section(cls: type, *, help: str) -> Any:
    """A field holding a whole section (a YAML mapping) of type ``cls``."""
    return field(default_factory=cls, metadata={"spec": Spec(help=help)})


def asset(*, help: str, env: str, source: str, stand_in: str = "") -> Any:
    """A path to a real data set or weight file (empty = not configured); see :class:`Asset`."""
    return setting("", help=help, asset=Asset(env=env, source=source, stand_in=stand_in))


def _image_size(v: int) -> str | None:
    return None if v % 8 == 0 else f"{v} must be a multiple of 8 and at least 16"


def _t2i_split(v: str) -> str | None:
    if all(part in ("train", "restval", "val", "test") for part in v.split("+")):
        return None
    return f"{v!r}; use train, restval, val or test, or several joined with '+' (e.g. 'val+test')"


def _distinct_seeds(v: list[int]) -> str | None:
    if v and len(v) == len(set(v)):
        return None
    return f"{v}; give distinct seeds (at least 3 for an interval that can decide a claim)"


def _blur_count(v: int) -> str | None:
    if v != 1:
        return None
    return "1; KID compares at least 2 images per set: give 0 (= eval_images) or 2 or more"


def _distinct_claims(v: list[int]) -> str | None:
    if len(v) == len(set(v)):
        return None
    return f"{v}; name each claim once (numbers 1-6), or leave the list empty for all six"


# -- the sections --------------------------------------------------------------------------------------------------

@dataclass
class DataConfig:
    source: str = setting("shapes", choices=tuple(SOURCES), help=(
        "the data set: shapes (embedded, generated) | coco (Karpathy JSON + images) | cc3m (TSV) | wds "
        "(img2dataset tar shards)"))
    train_source: str = setting("", choices=("", "cc3m", "wds"), help=(
        "where the training captions and images come from, when not `source` (which then only gives val/test): "
        "cc3m / wds train on the whole CC3M TSV / set of tar shards and evaluate zero-shot on `source` (the paper's "
        "L-Verse-CC, Table 3); '' = source"))
    root: str = setting("data/{profile}", help="where the embedded data set is written; {profile} is substituted")
    image_size: int = setting(64, range=Range(16, 4096), check=_image_size,
                              help="pixels, square, a multiple of 8; the paper uses 256")
    n_train: int = setting(2000, range=AT_LEAST_0, help="embedded data set: images in the train split")
    n_val: int = setting(200, range=AT_LEAST_0, help="embedded data set: images in the val split")
    n_test: int = setting(200, range=AT_LEAST_0, help="embedded data set: images in the test split")
    n_restval: int = setting(0, range=AT_LEAST_0, help="embedded data set: images in Karpathy's extra training split")
    captions_per_image: int = setting(5, range=AT_LEAST_1, help="captions written for each embedded image")
    max_objects: int = setting(3, range=AT_LEAST_1, help="objects per embedded scene, 1..max_objects")
    ood_images: int = setting(8, range=AT_LEAST_0,
                              help="out-of-domain real photographs (skimage / sklearn) for Figure 5")
    bad_input: str = setting("error", choices=("error", "skip"),
                             help="what loaders do with an unreadable image or an empty caption")
    min_image_side: int = setting(16, range=AT_LEAST_1, help="pixels; smaller images count as bad input")
    num_workers: int = setting(0, range=AT_LEAST_0, help="DataLoader workers")
    gen_workers: int = setting(0, range=AT_LEAST_0, help=(
        "processes that draw the embedded data set; 0 = one per usable CPU core (at most 16)"))


@dataclass
class AugVAEConfig:
    hidden: int = setting(128, range=AT_LEAST_1, help="channels of the first encoder stage (official code: 128)")
    ch_mult: list[int] = setting([1, 2, 4], range=AT_LEAST_1, length=(1, None), help=(
        "channel multiplier of each encoder stage E(4, z); len - 1 stride-2 downsamples"))
    z_channels: int = setting(256, range=AT_LEAST_1,
                              help="latent and codebook vector size (official code: 256)")
    codebook_size: int = setting(8192, range=Range(2), help="d_Z, number of codes shared by all levels")
    n_levels: int = setting(4, range=AT_LEAST_1, help="AugVAE-ML latent levels (64/32/16/8 for 256 px)")
    sl_level: int = setting(1, range=AT_LEAST_0,
                            help="index of the level AugVAE-SL keeps for its codes (1 = the H/8 map)")
    enc_res_blocks: int = setting(2, range=AT_LEAST_0, help="res blocks per encoder stage")
    dec_res_blocks: int = setting(3, range=AT_LEAST_0, help="res blocks per decoder stage")
    mid_res_blocks: int = setting(2, range=AT_LEAST_0, help=(
        "res blocks at the deepest width of every encoder/decoder (Taming 'mid', no attention)"))
    norm_groups: int = setting(32, range=AT_LEAST_1,
                               help="GroupNorm groups (official: 32); must divide every channel count")
    decay: float = setting(0.99, range=OPEN_FRACTION, help="EMA decay of the codebook")
    eps: float = setting(1e-5, range=POSITIVE, help="Laplace smoothing of the EMA cluster sizes")
    beta: float = setting(0.25, range=AT_LEAST_0,
                          help="commitment weight, scales ||z - sg(z_q)||^2 (the encoder side)")
    ema_update: str = setting("per_level", choices=("per_level", "pooled"),
                              help="per_level (official code) | pooled (one update per step over all levels)")
    dead_code_threshold: float = setting(0.0, range=AT_LEAST_0,
                                         help="restart codes whose EMA count falls below this; 0 = off (official)")
    restart_patience: int = setting(10, range=AT_LEAST_0, help=(
        "training steps a code below dead_code_threshold must go without any encoder vector before it is "
        "restarted (one vector resets the wait); 0 = restart whenever below the threshold (the rule before)"))
    data_init: bool = setting(False, help=(
        "initialise the codebook from encoder outputs on the first batch (official: randn)"))
    sl_quantize_fine: bool = setting(False, help=(
        "SL also quantizes the H/4 map (loss + EMA, codes unused); official code: true"))
    codebook: str = setting("shared", choices=("shared", "per_level"), help=(
        "shared (paper) | per_level: each level its own 1/n_levels of the codes (ablation)"))
    # parity with the official code (models/augvae.py; all three "official" in paper, so official checkpoints load;
    # the embedded profiles keep the kit's variant, which their results were measured with):
    encoder_stem: str = setting("kit", choices=("kit", "official"), help=(
        "kit: E(2) convolves z -> 2h first | official: z -> h, then a widening res block"))
    downsample_pad: str = setting("symmetric", choices=("symmetric", "official"), help=(
        "symmetric: stride-2 conv, padding 1 | official: pad (0,1,0,1), conv unpadded"))
    quant_bias: str = setting("shared", choices=("shared", "per_level"), help=(
        "shared: one bias per pre/post-quant 1x1 conv | per_level: one per level (official)"))


@dataclass
class AugVAETrainConfig:
    batch_size: int = setting(32, range=AT_LEAST_1, help="images per process")
    ml_steps: int = setting(1000, range=STEPS, help="optimizer steps for AugVAE-ML")
    sl_steps: int = setting(500, range=STEPS, help="optimizer steps for the AugVAE-SL finetune")
    baseline_steps: int = setting(1500, range=AT_LEAST_0, help=(
        "steps of the plain single-level VQ-VAE control (our addition to Table 1); a fair control gets "
        "ml_steps + sl_steps. 0 = off: no control is trained (the paper has none; the claims scorecard trains it "
        "over seeds)"))
    lr: float = setting(4.5e-6, range=POSITIVE, help=(
        "base rate; effective lr = lr * world_size * batch_size when lr_scaling is on"))
    lr_scaling: bool = setting(True, help="the official rule: lr * world * batch")
    weight_decay: float = setting(1e-5, range=AT_LEAST_0, help="AdamW weight decay")
    plateau_every: int = setting(0, range=AT_LEAST_0, help=(
        "ReduceLROnPlateau on the mean training loss, as the official code: checked once per epoch (0) or every "
        "plateau_every optimizer steps; never tied to log_every, so logging does not change training"))
    plateau_factor: float = setting(0.5, range=Range(0, 1, lo_open=True, hi_open=True),
                                    help="the plateau check multiplies the rate by this")
    plateau_patience: int = setting(10, range=AT_LEAST_0, help="in checks (epochs in the official code)")
    plateau_cooldown: int = setting(10, range=AT_LEAST_0,
                                    help="checks to wait after a reduction (official: 10)")
    plateau_min_lr: float = setting(1e-6, range=AT_LEAST_0, help="floor (official: 1e-6)")
    lr_decay_fraction: float = setting(0.0, range=OPEN_FRACTION, help=(
        "not in the official code: the last lr_decay_fraction of every AugVAE training's steps take the rate "
        "linearly down to ~0 (a multiplier on the plateau's rate). Short runs whose noisy loss makes the plateau "
        "check fire early or never end either at a tiny rate long before the last step or at the full rate on a "
        "noisy step; 0 = off"))
    lpips_weight: float = setting(0.0, range=AT_LEAST_0, help="0.1 in the official code; needs assets.vgg16_lpips")
    perceptual: str = setting("unweighted", choices=("lpips", "unweighted"), help=(
        "the perceptual term lpips_weight scales (models/perceptual.py): lpips (the official: LPIPS with its "
        "learned linear layers, from the lpips package) | unweighted (VGG16 features, every channel weighted 1)"))
    edge_weight: float = setting(0.0, range=AT_LEAST_0, help=(
        "weight of an image-gradient (edge) L1 term, models/perceptual.edge_loss: not in the official code; a "
        "weight-free stand-in for LPIPS that keeps small shapes' corners (MSE alone blurs them). The smoke profile "
        "sets 1.0 with unquantized_steps: alone it helped one seed and lost colours on two (docs/design-notes.md)"))
    edge_in_ml: bool = setting(True, help="false: the edge term in the single-level trainings (SL, control) only")
    unquantized_steps: int = setting(0, range=AT_LEAST_0, help=(
        "single-level trainings (the SL finetune and the plain VQ-VAE control) start as plain autoencoders for "
        "this many steps (the continuous latent decoded as it is), then the codebook is set by k-means on the "
        "encoder vectors of the last kmeans_batches of those steps and quantization begins. Not in the official "
        "code; 0 = off. Our fix for short runs whose ML leaves the H/8 level empty (docs/design-notes.md, \"An "
        "unquantized start for AugVAE-SL\")"))
    kmeans_batches: int = setting(40, range=AT_LEAST_1,
                                  help="batches of encoder vectors the k-means of unquantized_steps reads")
    decode: str = setting("per_step", choices=("per_step", "once"), help=(
        "once: decode the training split to one uint8 tensor and crop batches on the device (lverse_core/data/"
        "decoded.py; for data sets that fit in memory; on the embedded set notebook 00 decodes every split once "
        "for the run's later stages, lverse_core/data/decoded_store.py); per_step: decode each image when a batch "
        "needs it (ImageNet)"))
    channels_last: str = setting("auto", choices=("auto", "true", "false"), toggle=True, help=(
        "NHWC convolutions: auto = on, except bf16 on a CPU (NCHW measured faster there; "
        "lverse_core/hardware.py); true | false pin it"))
    precision: str = setting("auto", choices=("auto", "fp32", "bf16"), help=(
        "auto: bf16 on a GPU or a CPU with native bf16 (AMX / AVX512-BF16), fp32 elsewhere "
        "(lverse_core/hardware.py) | fp32 (the paper, §3.5) | bf16: convolutions under bf16 autocast, the "
        "quantizer and the loss stay FP32"))
    log_every: int = setting(20, range=AT_LEAST_1, help="optimizer steps between log lines")
    ckpt_every: int = setting(200, range=AT_LEAST_1, help="optimizer steps between checkpoints")
    timeout_s: float = setting(0.0, range=AT_LEAST_0, help=(
        "wall-clock safety net only; runs are fixed by step counts. 0 = none"))


@dataclass
class BiARTConfig:
    n_layer: int = setting(4, range=AT_LEAST_1, help="transformer blocks")
    n_head: int = setting(4, range=AT_LEAST_1, help="attention heads; must divide n_embd")
    n_embd: int = setting(256, range=AT_LEAST_1, help="embedding width")
    dropout: float = setting(0.1, range=OPEN_FRACTION, help="minGPT default")
    text_len: int = setting(64, range=Range(2), help="BPE text positions (paper: 64); at least [SOT] and one token")
    compact_vocab: bool = setting(True, help=(
        "map the BPE ids the captions use to a compact range (CPU speed-up)"))
    segment_embedding: bool = setting(True, help=(
        "[REF]/[GEN] segment embedding (paper §3.4); false: ablation (notebook 07)"))
    positions: str = setting("per_modality", choices=("per_modality", "shared"), help=(
        "per_modality (text + image tables) | shared (one table over the sequence)"))


@dataclass
class BiARTTrainConfig:
    batch_size: int = setting(32, range=AT_LEAST_1, help=(
        "sequences per process; the global batch is batch_size x world size (as AugVAE's)"))
    steps: int = setting(1000, range=STEPS, help="optimizer steps")
    lr: float = setting(3e-4, range=POSITIVE, help="peak learning rate")
    warmup_steps: int = setting(100, range=AT_LEAST_0, help="linear warmup to lr")
    min_lr_ratio: float = setting(0.1, range=FRACTION, help="cosine decays to lr * min_lr_ratio")
    betas: list[float] = setting([0.9, 0.95], range=OPEN_FRACTION, length=(2, 2), help="Adam's (beta1, beta2)")
    weight_decay: float = setting(0.1, range=AT_LEAST_0, help="AdamW weight decay")
    grad_clip: float = setting(1.0, range=AT_LEAST_0, help="gradient norm clip; 0 = no clipping")
    ref_loss_weight: float = setting(1.0, range=AT_LEAST_0,
                                     help="NLL weight on the [REF] (condition) part, paper §3.4")
    gen_loss_weight: float = setting(1.0, range=AT_LEAST_0, help="NLL weight on the [GEN] (target) part")
    direction: str = setting("alternate", choices=("alternate", "mixed", "t2i", "i2t"), help=(
        "alternate (paper: t2i / i2t per iteration) | mixed (both in every batch) | t2i | i2t"))
    precision: str = setting("auto", choices=("auto", "fp32", "bf16", "fp16"), help=(
        "auto: bf16 on a GPU or a CPU with native bf16 (AMX / AVX512-BF16), fp32 elsewhere | fp32 | bf16 | "
        "fp16 (GPU)"))
    log_every: int = setting(20, range=AT_LEAST_1, help="optimizer steps between log lines")
    ckpt_every: int = setting(200, range=AT_LEAST_1, help="optimizer steps between checkpoints")
    timeout_s: float = setting(0.0, range=AT_LEAST_0, help=(
        "wall-clock safety net only; runs are fixed by step counts. 0 = none"))


@dataclass
class SamplingConfig:
    temperature: float = setting(1.0, range=AT_LEAST_0, help="softmax temperature; 0 = greedy")
    top_k: int = setting(0, range=AT_LEAST_0, help="keep the k most likely tokens; 0 = off")
    top_p: float = setting(1.0, range=Range(0, 1, lo_open=True), help="nucleus sampling mass; 1.0 = off")
    n_candidates: int = setting(8, range=AT_LEAST_1,
                                help="candidates per prompt for CLIP reranking (paper: 64)")
    n_repeats: int = setting(1, range=AT_LEAST_1, help="k: rerank rounds with different seeds (paper §3.6)")
    caption_tokens: int = setting(32, range=AT_LEAST_1,
                                  help="tokens sampled per caption before truncation at the first full stop")
    caption_candidates: int = setting(0, range=AT_LEAST_0, help=(
        "image->text only: candidates per image (0 = n_candidates; the paper draws 64 for both directions)"))
    caption_likelihood_weight: float = setting(0.0, range=AT_LEAST_0, help=(
        "image->text: the weight of BiART's own log-likelihood of each truncated candidate in its reranking "
        "score: 0 = the clip-score alone (paper §3.6); w > 0 ranks by z(clip-score) + w * z(log p(caption | "
        "image)), z-scored over each image's candidates (our addition: candidates.rerank_scores)"))
    image_likelihood_weight: float = setting(0.0, range=AT_LEAST_0, help=(
        "text->image: the same score with log p(prompt | candidate image codes), BiART's image->text direction "
        "reading each drawn image (our addition); 0 = the clip-score alone (paper §3.6)"))
    batch_size: int = setting(64, range=AT_LEAST_1, help="prompts sampled together")


@dataclass
class CLIPConfig:
    train_steps: int = setting(300, range=AT_LEAST_0, help=(
        "embedded profiles train a small CLIP reranker; 0 = OpenAI ViT-B/32 from assets.clip_vit_b32 (the paper)"))
    batch_size: int = setting(64, range=AT_LEAST_1, help="image-caption pairs per step")
    lr: float = setting(5e-4, range=POSITIVE, help="learning rate")
    embed_dim: int = setting(128, range=AT_LEAST_1, help="joint embedding size")
    vision_width: int = setting(128, range=Range(64), help="ViT width")
    vision_layers: int = setting(4, range=AT_LEAST_1, help="ViT blocks")
    vision_patch_size: int = setting(8, range=AT_LEAST_1, help="ViT patch side, pixels")
    transformer_width: int = setting(128, range=Range(64), help=(
        "text transformer width, a multiple of 64 (clip.load infers heads = width // 64)"))
    transformer_heads: int = setting(2, range=AT_LEAST_1, help=(
        "must equal transformer_width // 64 (see lverse_core/sampling/clip_reranker.py)"))
    transformer_layers: int = setting(2, range=AT_LEAST_1, help="text transformer blocks")
    context_length: int = setting(32, range=Range(2), help=(
        "text positions of the small CLIP (OpenAI CLIP: 77); captions are truncated to it"))


@dataclass
class EvalConfig:
    fid_extractor: str = setting("kit", choices=("kit", "inception"), help=(
        "kit (the kit's own registered extractor) | inception (needs assets.inception_fid)"))
    caption_metrics: str = setting("coco-caption", choices=("coco-caption", "nlg-eval"), help=(
        "Table 2's scoring pipeline (lverse_core/evaluation/metrics.py): coco-caption (PTB tokenizer, every "
        "reference) or nlg-eval (the paper's tool: raw stripped text, the first caption_refs references of every "
        "image)"))
    caption_refs: int = setting(5, range=AT_LEAST_1, help=(
        "references per image under nlg-eval (it needs the same number for every image)"))
    meteor: bool = setting(True, help=(
        "METEOR runs a Java program; false leaves it out (None in Table 2, with the reason), which with "
        "caption_metrics: nlg-eval (no PTB tokenizer, also Java) makes caption scoring Java-free (the gpu profile)"))
    t2i_prompts: int = setting(200, range=AT_LEAST_1, help="captions for Table 3 (paper: 30000)")
    t2i_split: str = setting("test", check=_t2i_split, help=(
        "split(s) the Table 3 prompts and FID's real images come from: train | restval | val | test, or several "
        "joined with '+' (paper: 'val+test', 10,000 Karpathy images, 3 captions each; Karpathy restval is "
        "training data here)"))
    blur_radii: list[int] = setting([0, 1, 2, 4, 8], range=AT_LEAST_0, length=(1, None),
                                    help="Gaussian blur radii; Table 3 has one FID-k column per radius")
    human_eval_pool: int = setting(100, range=AT_LEAST_1, help="sets in the human-evaluation pool (paper: 500)")
    human_eval_form_size: int = setting(50, range=AT_LEAST_1, help="sets per rater (paper: 50)")
    human_eval_raters: int = setting(10, range=AT_LEAST_1,
                                     help="simulated raters on embedded profiles (paper: 150 people)")
    bootstrap: int = setting(1000, range=AT_LEAST_1, help="bootstrap resamples for confidence intervals")
    # The attribute judge (lverse_core/evaluation/judge.py): a small CNN trained on real embedded images. It decides
    # whether a generated image shows what its caption says (Table 3 on embedded profiles) and its penultimate layer
    # is the kit's FID feature space (eval.fid_extractor = kit).
    judge_steps: int = setting(600, range=STEPS, help="attribute judge: optimizer steps (batch judge_batch_size)")
    judge_batch_size: int = setting(64, range=AT_LEAST_1, help="attribute judge: images per step")
    judge_lr: float = setting(2e-3, range=POSITIVE,
                              help="attribute judge: AdamW learning rate (cosine decay to 5%)")
    judge_width: int = setting(32, range=AT_LEAST_1, help=(
        "attribute judge: channels of the first conv; later stride-2 stages 2x, the two dilated convs 4x"))
    judge_feature_dim: int = setting(128, range=AT_LEAST_1, help=(
        "attribute judge: channels of the penultimate layer = size of the kit's FID features"))
    judge_image_size: int = setting(32, range=AT_LEAST_0, help=(
        "attribute judge: px it looks at (inputs resized to it): 16, 32, 64, ... ; 0 = data.image_size"))
    judge_noise: float = setting(0.05, range=AT_LEAST_0, help=(
        "attribute judge: std of Gaussian pixel noise added in training (in [-1, 1] units); 0 = off"))


@dataclass
class AssetsConfig:
    """Local paths to real data and weights. Nothing is downloaded; each can be set by an env variable."""

    imagenet_root: str = asset(
        help="ImageFolder root with train/ and val/", env="LVERSE_IMAGENET_ROOT",
        source="ImageNet1K (ILSVRC2012) from image-net.org, unpacked as an ImageFolder tree (train/<wnid>/*.JPEG, "
               "val/<wnid>/*.JPEG)",
        stand_in="stand_in_data/imagefolder")
    coco_root: str = asset(
        help="MS-COCO 2014 image root (holds train2014/, val2014/)", env="LVERSE_COCO_ROOT",
        source="MS-COCO 2014 train2014/ and val2014/ images from cocodataset.org",
        stand_in="stand_in_data/images")
    coco_karpathy_json: str = asset(
        help="Karpathy's dataset_coco.json", env="LVERSE_COCO_KARPATHY_JSON",
        source="dataset_coco.json from Karpathy's caption splits (cs.stanford.edu/people/karpathy/deepimagesent, "
               "caption_datasets.zip)",
        stand_in="stand_in_data/dataset_coco.json")
    cc3m_tsv: str = asset(
        help="Conceptual Captions TSV (caption \\t image path)", env="LVERSE_CC3M_TSV",
        source="the Conceptual Captions TSV (ai.google.com/research/ConceptualCaptions), with images downloaded "
               "beside it",
        stand_in="stand_in_data/cc3m_train.tsv")
    wds_shards: str = asset(
        help="directory of webdataset .tar shards written by img2dataset ({key}.jpg + {key}.txt)",
        env="LVERSE_WDS_SHARDS",
        source="a directory of webdataset .tar shards (00000.tar, ...) that img2dataset wrote with output_format "
               "webdataset, e.g. from the Conceptual Captions TSV or a LAION parquet",
        stand_in="stand_in_data/wds")
    inception_fid: str = asset(
        help="pt_inception-2015-12-05 weights for torch-fidelity", env="LVERSE_INCEPTION_WEIGHTS",
        source="torch-fidelity's pt_inception-2015-12-05-6726825d.pth (a release asset of toshas/torch-fidelity on "
               "GitHub)",
        stand_in="stand_in_weights/pt_inception-2015-12-05-random.pth")
    clip_vit_b32: str = asset(
        help="OpenAI CLIP ViT-B/32 .pt file for clip.load", env="LVERSE_CLIP_WEIGHTS",
        source="OpenAI CLIP ViT-B-32.pt (the URL is in clip/clip.py of the clip-anytorch package, "
               "_MODELS['ViT-B/32'])",
        stand_in="stand_in_weights/ViT-B-32-random.pt")
    vgg16_lpips: str = asset(
        help="VGG16 weights for LPIPS (optional)", env="LVERSE_VGG16_WEIGHTS",
        source="torchvision's vgg16-397923af.pth (download.pytorch.org/models) for the LPIPS loss",
        stand_in="stand_in_weights/vgg16-random.pth")
    corenlp_dir: str = asset(
        help="Stanford CoreNLP 3.6.0 jars for SPICE (optional)", env="LVERSE_CORENLP_DIR",
        source="Stanford CoreNLP 3.6.0 (stanford-corenlp-3.6.0.jar and -models.jar), as pycocoevalcap's SPICE "
               "expects in spice/lib")
    stand_ins: bool = setting(False, help=(
        "true: every asset above with a stand-in is one the kit writes under data/<profile>/ (a small embedded data "
        "set at data.image_size in the real formats, random-weight files of the real architectures): a dry run of "
        "the paper path whose numbers mean nothing (profile paper-dry; lverse_core/data/stand_ins.py)"))


def _identifier(v: str) -> str | None:
    if v and v.replace("_", "a").isalnum() and v.isascii() and not v.endswith(("_items", "_why")):
        return None
    return (f"{v!r}; give a measure key or arm name of the claims experiment (letters, digits and _, e.g. "
            f"psnr_db or sl_per_level; not a _items or _why key)")


def _reason(v: str) -> str | None:
    return None if v.strip() else "empty; say why the margin is what it is (a practical threshold, or a share of " \
                                  "the effect the paper reports), before the run that uses it"


@dataclass
class PrimaryMeasure:
    """The one measure that decides a claim (notebook 07): the scorecard row whose method is ``method``'s
    ``measure`` and whose control arm is ``control``, and the equivalence margin under which a difference counts as
    none. Declared before the run and never widened after seeing its results. A profile states all five fields
    of a claim it declares (``ClaimPrimaries`` holds each claim's own defaults; a partial one fails validation)."""

    measure: str = setting("", check=_identifier, help="the method arm's measure key (e.g. psnr_db)")
    method: str = setting("", check=_identifier, help="the arm of the paper's method")
    control: str = setting("", check=_identifier, help="the control arm")
    margin: float = setting(math.inf, range=POSITIVE, help=(
        "equivalence margin in the measure's units: an interval inside [-margin, margin] says no difference"))
    reason: str = setting("", check=_reason, help="why the margin is what it is")


def _primary(help: str, **values: Any) -> Any:
    return field(default_factory=lambda: PrimaryMeasure(**values), metadata={"spec": Spec(help=help)})


@dataclass
class ClaimPrimaries:
    """One primary measure per claim; every other scorecard row is secondary. Holm corrects the six for
    multiplicity."""

    claim_1: PrimaryMeasure = _primary(
        "claim 1, cross-level augmentation: the SL tokenizers' per-image PSNR", measure="psnr_db", method="sl",
        control="sl_per_level", margin=0.3, reason=(
            "practical threshold: 0.3 dB, a 7% change in mean squared error, the least the kit reads as a change"))
    claim_2: PrimaryMeasure = _primary(
        "claim 2, segment embedding: held-out NLL summed over both directions", measure="nll_both",
        method="bidirectional", control="no_segment", margin=0.02, reason=(
            "practical threshold: 0.02 nats per token over both directions, a 2% change in perplexity"))
    claim_3: PrimaryMeasure = _primary(
        "claim 3, bidirectional training: held-out NLL summed over both directions, each direction against its "
        "one-direction model", measure="nll_both", method="bidirectional", control="one_direction", margin=0.02,
        reason="practical threshold: 0.02 nats per token over both directions, a 2% change in perplexity")
    claim_4: PrimaryMeasure = _primary(
        "claim 4, caption truncation: per-caption BLEU-4, truncated vs full-length", measure="bleu4_truncated",
        method="bidirectional", control="bidirectional", margin=1.0, reason=(
            "practical threshold: 1 BLEU-4 point of 100; captioning tables read smaller differences as noise"))
    claim_5: PrimaryMeasure = _primary(
        "claim 5, CLIP reranking: images judged right, top-1 of N vs a single sample", measure="images_right",
        method="bidirectional", control="bidirectional", margin=0.02, reason=(
            "practical threshold: 2 images in 100 judged right; a reranker moving fewer is not worth N samples"))
    claim_6: PrimaryMeasure = _primary(
        "claim 6, blur: the KID fall of generated images minus that of SL reconstructions, smallest to largest "
        "radius, both as shares of the generated images' KID at the smallest (claims_measures.blur_falls)",
        measure="kid_fall_generated", method="bidirectional", control="bidirectional", margin=0.05, reason=(
            "practical threshold: 5 points of relative fall (the share of the generated images' KID at the "
            "smallest radius that blur removes)"))


@dataclass
class ClaimsConfig:
    """Budgets of the claims notebook (07): every method and control trains under the same budget, per seed."""

    seeds: list[int] = setting([0, 1, 2], range=SEED, check=_distinct_seeds,
                               help="each seed: its own data draw, init and order")
    ml_steps: int = setting(0, range=AT_LEAST_0, help="AugVAE-ML steps per arm; 0 = augvae_train.ml_steps")
    sl_steps: int = setting(0, range=AT_LEAST_0, help=(
        "AugVAE-SL finetune steps; 0 = augvae_train.sl_steps (SL from scratch gets ML + SL)"))
    biart_steps: int = setting(0, range=AT_LEAST_0, help=(
        "BiART steps per arm; 0 = biart_train.steps (one-direction controls get half)"))
    eval_images: int = setting(100, range=Range(2), help="test images captioned, and test prompts drawn, per arm")
    blur_images: int = setting(0, range=AT_LEAST_0, check=_blur_count, help=(
        "test images claim 6's KIDs compare under blur, with as many drawn from their first captions (the first N "
        "of the test split; the first eval_images are the images the other measures judge); 0 = eval_images"))
    n_candidates: int = setting(0, range=AT_LEAST_0,
                                help="candidates CLIP reranks per prompt; 0 = sampling.n_candidates")
    primaries: ClaimPrimaries = section(ClaimPrimaries, help="the measure that decides each claim, its margin")
    level: float = setting(0.95, range=Range(0.5, 0.999), help="confidence level of the intervals")
    only: list[int] = setting([], range=Range(1, 6), check=_distinct_claims, help=(
        "the claims whose arms to run (numbers 1-6, e.g. [1, 3]; make claims CLAIMS=\"1 3\"); empty = all six"))
    primaries_only: bool = setting(False, help=(
        "train only the arms the selected claims' primary measures compare (make claims PRIMARIES_ONLY=1); the "
        "secondary rows whose arms were not trained read 'not measured'"))


@dataclass
class Config:
    profile: str = setting("smoke", help="the profile's name, set by load_profile (never overridden)")
    seed: int = setting(0, range=SEED, help="seed of the data draw, initialisation and order")
    device: str = setting("auto", choices=("auto", "cpu", "cuda"), help="auto | cpu | cuda")
    reports_dir: str = setting("reports/{profile}", help="tables, figures and executed notebooks")
    runs_dir: str = setting("runs/{profile}", help="checkpoints and code files")
    data: DataConfig = section(DataConfig, help="the data set")
    augvae: AugVAEConfig = section(AugVAEConfig, help="the image tokenizer, AugVAE (paper §3.2-3.3)")
    augvae_train: AugVAETrainConfig = section(AugVAETrainConfig, help="training AugVAE-ML, -SL and the control")
    biart: BiARTConfig = section(BiARTConfig, help="the bidirectional transformer, BiART (paper §3.4)")
    biart_train: BiARTTrainConfig = section(BiARTTrainConfig, help="training BiART")
    sampling: SamplingConfig = section(SamplingConfig, help="drawing captions and images, and reranking them")
    clip: CLIPConfig = section(CLIPConfig, help="the CLIP reranker")
    eval: EvalConfig = section(EvalConfig, help="Tables 1-3, the human evaluation and the attribute judge")
    claims: ClaimsConfig = section(ClaimsConfig, help="the claims notebook's budgets")
    assets: AssetsConfig = section(AssetsConfig, help="real data sets and weight files on this machine")

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


# -- reading the declarations ----------------------------------------------------------------------------------------

def field_types(cls: type) -> dict[str, Any]:
    """Each field of a section and its type (annotations resolved)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def spec_of(f: dataclasses.Field) -> Spec:
    """A field's declaration; a field declared without :func:`setting` (or :func:`section`, :func:`asset`) is a
    schema bug, named here when the kit is imported."""
    if "spec" not in f.metadata:
        raise TypeError(f"config field {f.name!r} is declared without setting(...): give it a help text and its valid "
                        f"values in lverse_core/config/schema.py")
    return f.metadata["spec"]


def leaves(cls: type = Config, prefix: str = "") -> typing.Iterator[tuple[str, Any, Spec]]:
    """Every value a profile can set, in declaration order: (dotted key, type, spec), sections walked into."""
    types = field_types(cls)
    for f in dataclasses.fields(cls):
        typ = types[f.name]
        if dataclasses.is_dataclass(typ):
            yield from leaves(typ, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, typ, spec_of(f)


def get(cfg: Any, dotted: str) -> Any:
    """The value of a dotted key (``"augvae.n_levels"``) of a Config."""
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj
