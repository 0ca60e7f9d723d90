"""How long a run of a profile will take on this machine: a few timed training steps of each stage, times its steps.

The trainings (AugVAE-ML, AugVAE-SL with its unquantized start, the plain VQ-VAE control where a profile trains it,
BiART) are most of a CPU run: each is timed here for ``steps`` steps at the profile's sizes, in the precision and
memory format the run will use (lverse_core/hardware.py), on random inputs. Everything else a run does (data, the
CLIP reranker, the judge, sampling, the tables) is added as a share of the training time measured on a full run of
the profile (``REST_SHARE``). ``doctor`` prints the estimate; the runner prints it when a run starts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from lverse_core.config import Config
from lverse_core.hardware import precision_plan
from lverse_core.models.augvae import AugVAE
from lverse_core.models.biart import I2T, T2I, BiART
from lverse_core.training.loop import autocast

# The rest of a run (data, CLIP, judge, sampling, tables) as a share of its training time, from full smoke runs on
# 2-core AMD EPYC VMs: 0.14 in fp32 on an AVX2-only one (3,116 s, trainings ~2,740 s by their step times), 0.40 in
# bf16 on a Zen 4 one (1,114 s, trainings 794 s); the sampling and scoring gain less from bf16 than the trainings
REST_SHARE = {"smoke": 0.25}
DEFAULT_REST_SHARE = 0.25
# below this many planned training steps the trainings are not what takes the time: no estimate (ci, paper-dry)
MIN_STEPS = 100
COMPACT_TEXT_VOCAB = 128  # about the BPE ids the embedded captions use (compact_vocab maps them to a small range)


@dataclass
class Stage:
    name: str
    steps: int
    step_s: float

    @property
    def seconds(self) -> float:
        return self.steps * self.step_s


@dataclass
class Estimate:
    stages: list[Stage]
    rest_share: float
    plan: dict

    @property
    def training_s(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def total_s(self) -> float:
        return self.training_s * (1 + self.rest_share)

    def describe(self) -> str:
        parts = ", ".join(f"{s.name} {s.steps} x {s.step_s * 1e3:.0f} ms" for s in self.stages)
        return (f"about {self.total_s / 60:.0f} min ({parts}; trainings {self.training_s / 60:.1f} min + "
                f"{100 * self.rest_share:.0f}% for data, reranker, judge, sampling and tables)")


def _timed(step, steps: int, device: str = "cpu") -> float:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)  # GPU steps run asynchronously
    step()  # warm-up: first-call allocations, the quantizer's data-based init
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t0) / steps


def augvae_step(cfg: Config, variant: str, plan: dict):
    t = cfg.augvae_train
    device = torch.device(plan["device"])
    fmt = torch.channels_last if plan["augvae_memory_format"] == "NHWC" else torch.contiguous_format
    model = AugVAE.from_config(cfg, "sl" if variant == "baseline" else variant).to(device, memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    s = cfg.data.image_size
    x = (torch.rand(t.batch_size, 3, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1
         ).to(device).contiguous(memory_format=fmt)

    def step():
        with autocast(plan["augvae"], device):
            _, out = model(x)
        out["loss"].float().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def biart_step(cfg: Config, plan: dict):
    device = torch.device(plan["device"])
    vocab = COMPACT_TEXT_VOCAB if cfg.biart.compact_vocab else 49408
    model = BiART(BiART.args_from_config(cfg, vocab, 0)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(0)
    b = cfg.biart_train.batch_size
    text = torch.randint(1, vocab, (b, model.args.text_len), generator=g).to(device)
    image = torch.randint(0, model.args.image_vocab, (b, model.args.image_tokens), generator=g).to(device)
    state = {"i": 0}

    def step():
        with autocast(plan["biart"], device):
            parts = model(text, image, T2I if state["i"] % 2 == 0 else I2T)
        state["i"] += 1
        (parts["ref"] + parts["gen"]).float().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def planned_training_steps(cfg: Config) -> dict[str, int]:
    t = cfg.augvae_train
    return {"AugVAE-ML": t.ml_steps, "AugVAE-SL": t.sl_steps, "VQ-VAE control": t.baseline_steps,
            "BiART": cfg.biart_train.steps}


def estimate_run(cfg: Config, steps: int = 3) -> Estimate | None:
    """Time ``steps`` steps of each training stage of ``cfg`` here; None where the profile trains too little for
    its trainings to matter (fewer than ``MIN_STEPS`` in all) or a stage cannot run on this machine."""
    planned = planned_training_steps(cfg)
    if sum(planned.values()) < MIN_STEPS:
        return None
    plan = precision_plan(cfg)
    if "GPU" in plan["augvae"] + plan["biart"] or (plan["device"] == "cuda" and not torch.cuda.is_available()):
        return None
    builders = {"AugVAE-ML": lambda: augvae_step(cfg, "ml", plan), "AugVAE-SL": lambda: augvae_step(cfg, "sl", plan),
                "VQ-VAE control": lambda: augvae_step(cfg, "baseline", plan), "BiART": lambda: biart_step(cfg, plan)}
    torch_state = torch.get_rng_state()
    try:
        stages = [Stage(name, n, _timed(builders[name](), steps, plan["device"])) for name, n in planned.items()
                  if n > 0]
    finally:
        torch.set_rng_state(torch_state)  # timing must not move the run's random numbers
    return Estimate(stages, REST_SHARE.get(cfg.profile, DEFAULT_REST_SHARE), plan)


__all__ = ["Estimate", "MIN_STEPS", "REST_SHARE", "Stage", "estimate_run", "planned_training_steps"]
