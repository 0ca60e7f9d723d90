"""The CLIP model that reranks BiART samples (paper §3.6) and how the kit gets one without a download.

- paper profile: OpenAI CLIP ViT-B/32 from a local file (``assets.clip_vit_b32``; a missing file is a
  MissingAssetError naming it).
- embedded profiles: a small ``clip.model.CLIP`` trained here on the embedded training split (config section
  ``clip``) and saved as a plain state dict to ``runs/<profile>/clip_reranker.pt``. Both are opened the same way,
  ``open_clip(path, device)``, which rebuilds the model from the state-dict shapes with
  ``clip.model.build_model`` (what ``clip.load(path, jit=False)`` does).

``clip.load`` itself is not used: it reads a state dict with ``torch.load`` without ``weights_only``, so with
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in the environment a crafted file would run code. ``open_clip`` reads
OpenAI's TorchScript archives with ``torch.jit.load`` (TorchScript's own loader, no pickle of arbitrary objects)
and everything else with ``torch.load(weights_only=True)``, as the kit's ``load_checkpoint`` does.

Because ``clip.model.build_model`` infers the text heads as ``transformer_width // 64`` (and the vision tower uses
``vision_width // 64`` heads itself), both widths must be multiples of 64 and ``clip.transformer_heads`` must equal
``transformer_width // 64``; otherwise the loaded model would compute something else than the trained one.
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from lverse_core.config import Config, ConfigError, require_asset
from lverse_core.data.pixels import signed_from_uint8, uint8_from_signed
from lverse_core.training.loop import CheckpointError, CSVLog, StepSampler, run_steps, save_checkpoint

with warnings.catch_warnings():  # clip-anytorch imports pkg_resources, which warns about its own deprecation
    warnings.simplefilter("ignore")
    import clip
    from clip.model import CLIP, build_model

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's input normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BPE_VOCAB = 49408  # clip.tokenize's vocabulary


def reranker_path(cfg: Config) -> Path:
    return cfg.runs_root / "clip_reranker.pt"


def reranker_file(cfg: Config) -> Path:
    """The file the run's reranker is read from: OpenAI ViT-B/32 (``assets.clip_vit_b32``) when
    ``clip.train_steps`` is 0 (paper profile), else the small CLIP trained here (``reranker_path``)."""
    return require_asset(cfg, "clip_vit_b32") if cfg.clip.train_steps == 0 else reranker_path(cfg)


def reranker_made_from(cfg: Config):
    """What the small CLIP reranker of ``cfg`` is made from (``lverse_core.provenance``): the ``clip`` settings, the
    seed and the data set it is trained on."""
    from lverse_core import provenance
    from lverse_core.data.identity import dataset_id

    return provenance.made_from(cfg, "clip-reranker", {"data set": dataset_id(cfg)}, "CLIP reranker")


def check_clip_config(cfg: Config) -> None:
    c = cfg.clip
    for name in ("vision_width", "transformer_width"):
        if getattr(c, name) % 64:
            raise ConfigError(f"clip.{name}: {getattr(c, name)} must be a multiple of 64 (CLIP uses width // 64 heads)")
    if c.transformer_heads != c.transformer_width // 64:
        raise ConfigError(f"clip.transformer_heads: {c.transformer_heads} must be transformer_width // 64 = "
                          f"{c.transformer_width // 64}; clip.load infers it that way from the state dict")
    if cfg.data.image_size % c.vision_patch_size:
        raise ConfigError(f"clip.vision_patch_size: {c.vision_patch_size} must divide data.image_size "
                          f"{cfg.data.image_size}")


def build_small_clip(cfg: Config) -> CLIP:
    """An untrained ``clip.model.CLIP`` with the sizes of ``cfg.clip`` (ViT image tower, fp32)."""
    check_clip_config(cfg)
    c = cfg.clip
    return CLIP(embed_dim=c.embed_dim, image_resolution=cfg.data.image_size, vision_layers=c.vision_layers,
                vision_width=c.vision_width, vision_patch_size=c.vision_patch_size, context_length=c.context_length,
                vocab_size=BPE_VOCAB, transformer_width=c.transformer_width, transformer_heads=c.transformer_heads,
                transformer_layers=c.transformer_layers)


def clip_pixels(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Kit images (B, 3, S, S) in [-1, 1] -> CLIP input: resized to ``resolution`` (bicubic), CLIP-normalised."""
    x = (images.float().clamp(-1, 1) + 1) / 2
    if x.size(-1) != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def tokenize(texts: Sequence[str], context_length: int) -> torch.Tensor:
    return clip.tokenize(list(texts), context_length=context_length, truncate=True)


LOG_EVERY = 50  # steps between two rows of runs/<profile>/logs/clip_reranker.csv


def train_clip_reranker(cfg: Config, dataset, path: str | Path | None = None) -> Path:
    """Train the small CLIP contrastively (symmetric InfoNCE, as in CLIP) on ``dataset`` items
    {"image": (3,S,S) in [-1,1], "captions": [str, ...]} for ``clip.train_steps`` steps on the profile's device
    (``cfg.resolved_device()``); save the state dict (on the CPU: ``open_clip`` reads it anywhere).

    Each image is decoded once and kept (``KeptImages``), and AdamW runs fused where the build has it: together
    1.55x the steps per second in ``bench/bench_clip_train.py`` (2-core Xeon VM; 750 smoke steps took 142 s instead
    of 211 s), the same model for the same seed up to float rounding. The steps run in ``run_steps``: the loss is
    read back only for the log (``logs/clip_reranker.csv``, every ``LOG_EVERY`` steps, with ``elapsed_s``), and a
    loss that turns NaN/inf stops the training with ``TrainingDivergedError`` before anything is saved."""
    c = cfg.clip
    path = Path(path) if path is not None else reranker_path(cfg)
    device = torch.device(cfg.resolved_device())
    torch.manual_seed(cfg.seed)
    model = build_small_clip(cfg).train().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=0.1, betas=(0.9, 0.98), **fused_if_supported())
    sampler = StepSampler(len(dataset), min(c.batch_size, len(dataset)), cfg.seed)
    pick = torch.Generator().manual_seed(cfg.seed)
    from lverse_core.data.decoded_store import decoded_split

    kept = KeptImages(dataset, decoded_split(cfg, "train") if getattr(dataset, "eval_pixels", False) else None)

    def step_fn(step: int) -> dict:
        images, captions = kept.batch(sampler.indices(step), device)
        texts = [caps[int(torch.randint(len(caps), (1,), generator=pick))] for caps in captions]
        lr = c.lr * min(1.0, (step + 1) / max(1, c.train_steps // 10))
        for group in opt.param_groups:  # short linear warmup: contrastive training of a fresh ViT is fragile
            group["lr"] = lr
        logits_img, logits_txt = model(clip_pixels(images, cfg.data.image_size),
                                       tokenize(texts, c.context_length).to(device, non_blocking=True))
        # captions repeat across images (templates): treat every image whose caption is identical as a positive
        same = torch.tensor([[a == b for b in texts] for a in texts], dtype=torch.float32).to(device,
                                                                                               non_blocking=True)
        target = same / same.sum(1, keepdim=True)
        loss = (torch.sum(-target * logits_img.log_softmax(-1), -1).mean()
                + torch.sum(-target * logits_txt.log_softmax(-1), -1).mean()) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "lr": lr}

    from lverse_core import provenance

    def save_fn(step: int) -> None:
        if step >= c.train_steps:  # only the finished model is written (run_steps calls this at the end)
            save_checkpoint(path, {k: v.cpu() for k, v in model.state_dict().items()})
            provenance.record(path, reranker_made_from(cfg))

    log = CSVLog(cfg.runs_root / "logs" / "clip_reranker.csv", ["loss", "lr"])
    run_steps(step_fn, start=0, total=c.train_steps, save_fn=save_fn, ckpt_every=max(1, c.train_steps), log=log,
              log_every=LOG_EVERY, desc="CLIP reranker", progress=False)
    return path


class KeptImages:
    """``dataset`` items {"image", "captions"} read once each and kept as uint8 (exact for images read from 8-bit
    files through the deterministic eval transform; 3 x S x S bytes per distinct image read, 98 MB for the 8,000
    smoke images). ``kept[i]`` -> (image (3, S, S) in [-1, 1], captions).

    With ``store`` (the run's decoded split, ``lverse_core.data.decoded_store``) holding every record of ``dataset``
    (a ``CaptionImageDataset``), nothing is decoded: the images are the store's, in the dataset's order, and on a
    device they are copied there once (on CUDA when they take under a quarter of its free memory), so a batch is
    one index on the device."""

    def __init__(self, dataset, store=None):
        self.dataset = dataset
        self.kept: dict[int, tuple[torch.Tensor, list[str]]] = {}
        self.stored: torch.Tensor | None = None  # (N, 3, S, S) uint8 from the store, by dataset index
        self._on_device: dict[str, torch.Tensor] = {}
        records = getattr(dataset, "records", None)
        if store is not None and records is not None:
            ids = [int(r["image_id"]) for r in records]
            if store.has(ids):
                self.stored = store.rows(ids)
                self.captions = [list(r["captions"]) for r in records]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[str]]:
        if self.stored is not None:
            return signed_from_uint8(self.stored[i]), self.captions[i]
        if i not in self.kept:
            it = self.dataset[i]
            self.kept[i] = (uint8_from_signed(it["image"]), list(it["captions"]))
        image, captions = self.kept[i]
        return signed_from_uint8(image), captions

    def batch(self, indices: Sequence[int], device: torch.device | str) -> tuple[torch.Tensor, list[list[str]]]:
        """Images ``indices`` as (B, 3, S, S) float in [-1, 1] on ``device``, and their captions."""
        indices = list(indices)
        if self.stored is None:
            items = [self[i] for i in indices]
            return torch.stack([im for im, _ in items]).to(device, non_blocking=True), [c for _, c in items]
        source = self._source(torch.device(device))
        idx = torch.as_tensor(indices, dtype=torch.long)
        if source.device.type == "cuda":
            idx = idx.pin_memory()  # a copy from pageable memory would wait for the device's queue
        images = signed_from_uint8(source[idx.to(source.device, non_blocking=True)]).to(device, non_blocking=True)
        return images, [self.captions[i] for i in indices]

    def _source(self, device: torch.device) -> torch.Tensor:
        """The stored images on ``device`` (copied there once) where they fit, else on the CPU."""
        if device.type == "cpu":
            return self.stored
        key = str(device)
        if key not in self._on_device:
            fits = True
            if device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(device)
                fits = self.stored.numel() < free // 4
            self._on_device[key] = self.stored.to(device) if fits else self.stored
        return self._on_device[key]


def fused_if_supported() -> dict:
    """AdamW's fused kernel (one pass over all parameters, most of them the 49,408-token embedding) where this torch
    build has the argument; the default implementation otherwise."""
    return {"fused": True} if "fused" in inspect.signature(torch.optim.AdamW).parameters else {}


class CLIPScorer:
    """clip-score of (image, caption) pairs with a model opened by ``open_clip``."""

    def __init__(self, model, device):
        self.model, self.device = model.eval(), torch.device(device)
        self.resolution = model.visual.input_resolution
        self.context_length = model.context_length

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        x = clip_pixels(images.to(self.device), self.resolution).to(self.model.dtype)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(tokenize(texts, self.context_length).to(self.device)).float(), dim=-1)

    @torch.no_grad()
    def score(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """(M,) clip-scores, 100 * cosine(image_m, text_m), for M images (3,S,S) in [-1, 1] and M texts."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        return 100 * (self.embed_images(images) * self.embed_texts(texts)).sum(-1)


def read_clip_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a CLIP file without unpickling arbitrary objects (see the module docstring).

    A TorchScript archive (OpenAI's released ``ViT-B-32.pt``) is read with ``torch.jit.load``; any other file
    with ``torch.load(weights_only=True)``, which wins over ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` because it is
    passed explicitly. Anything unreadable is a CheckpointError naming the file.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch >= 2.10 deprecates jit.load; it is still OpenAI's file format
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=FutureWarning)
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except Exception:  # not a TorchScript archive: a plain state dict (or junk, reported below)
        pass
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle of foreign objects, random bytes ...
        raise CheckpointError(
            f"CLIP weights {path} cannot be read ({type(e).__name__}: {str(e)[:200]}); the file is truncated, "
            f"corrupt or not a CLIP state dict. Delete it and re-run notebooks/02_train_biart.ipynb (embedded "
            f"profiles), or fetch OpenAI's ViT-B-32.pt again (paper profile).") from e
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"CLIP weights {path} do not hold a state dict (name -> tensor); delete the file and "
                              f"re-run notebooks/02_train_biart.ipynb, or point assets.clip_vit_b32 at ViT-B-32.pt")
    return state


def _build(state: dict[str, torch.Tensor], path: Path, device) -> CLIP:
    try:
        model = build_model(dict(state))  # build_model deletes OpenAI's metadata entries from the dict it gets
    except (KeyError, IndexError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"CLIP weights {path} are not a CLIP model's state dict ({type(e).__name__}: "
                              f"{str(e)[:200]}); delete the file and re-run notebooks/02_train_biart.ipynb") from e
    model = model.to(device)
    if torch.device(device).type == "cpu":
        model.float()
    return model


def open_clip(path: str | Path, device: str | torch.device = "cpu") -> CLIP:
    """A CLIP model rebuilt from the weights in ``path`` (fp32 on the CPU, as ``clip.load`` leaves it)."""
    return _build(read_clip_state(path), Path(path), device)


# OpenAI's ViT-B/32: the shapes that tell it apart from the other released CLIPs (the paper profile's reranker)
VIT_B32_SHAPES = {"visual.conv1.weight": (768, 3, 32, 32), "text_projection": (512, 512),
                  "visual.positional_embedding": (50, 768)}
_OPENAI_METADATA = ("input_resolution", "context_length", "vocab_size")  # entries of the JIT archive, not weights


def check_reranker_architecture(cfg: Config, state: dict[str, torch.Tensor], path: Path) -> None:
    """CheckpointError unless ``state`` is the reranker this profile asks for: the small CLIP of ``cfg.clip``
    (every weight's name and shape) on embedded profiles, OpenAI ViT-B/32 on the paper profile."""
    if cfg.clip.train_steps == 0:
        wrong = {k: tuple(state[k].shape) if k in state else None for k, v in VIT_B32_SHAPES.items()
                 if k not in state or tuple(state[k].shape) != v}
        if wrong:
            raise CheckpointError(f"{path} is not OpenAI CLIP ViT-B/32 ({', '.join(f'{k}: {v}' for k, v in wrong.items())}"
                                  f"); point assets.clip_vit_b32 / LVERSE_CLIP_WEIGHTS at ViT-B-32.pt")
        return
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        expected = {k: tuple(v.shape) for k, v in build_small_clip(cfg).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items() if k not in _OPENAI_METADATA}
    diff = [f"{k}: file {found.get(k)} vs config {expected.get(k)}"
            for k in sorted(set(found) | set(expected)) if found.get(k) != expected.get(k)]
    if diff:
        raise CheckpointError(
            f"{path} holds a CLIP of another architecture than profile {cfg.profile!r} asks for (config section "
            f"clip, data.image_size; {len(diff)} weights differ, e.g. {'; '.join(diff[:3])}). It was trained for "
            f"another profile: delete it and re-run notebooks/02_train_biart.ipynb (or "
            f"lverse_core.sampling.clip_reranker.ensure_reranker) to train this profile's reranker.")


def load_reranker(cfg: Config, device: str | torch.device = "cpu") -> CLIPScorer:
    """The run's reranker: OpenAI ViT-B/32 for the paper profile, else runs/<profile>/clip_reranker.pt."""
    path = reranker_file(cfg)
    if cfg.clip.train_steps and not path.exists():
        raise FileNotFoundError(f"{path} does not exist: train the CLIP reranker first "
                                f"(notebooks/02_train_biart.ipynb or lverse_core.sampling.clip_reranker.ensure_reranker)")
    state = read_clip_state(path)
    check_reranker_architecture(cfg, state, path)
    if cfg.clip.train_steps:  # trained here: only when its record says from these settings and this data set
        from lverse_core import provenance

        provenance.require(path, reranker_made_from(cfg), CheckpointError)
    return CLIPScorer(_build(state, path, device), device)


def ensure_reranker(cfg: Config, dataset=None) -> Path:
    """Train the embedded-profile reranker unless runs/<profile>/clip_reranker.pt was made from this run's settings
    and data set (its provenance record); return its path. An existing file of another architecture (another
    profile's reranker) is a CheckpointError."""
    from lverse_core import provenance

    if cfg.clip.train_steps == 0:
        return require_asset(cfg, "clip_vit_b32")
    path = reranker_path(cfg)
    if path.exists():  # another profile's architecture is an error (it says what to do); else reused if current
        check_reranker_architecture(cfg, read_clip_state(path), path)
        if provenance.retrain_reason(path, reranker_made_from(cfg)) is None:
            return path
    if dataset is None:
        from lverse_core.data.loaders import CaptionImageDataset

        dataset = CaptionImageDataset(cfg, "train", train=False)
    return train_clip_reranker(cfg, dataset, path)
