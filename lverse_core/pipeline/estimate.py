"""How long a run of a profile will take on this machine: a few timed training steps of each stage, times its steps.

The trainings (AugVAE-ML, AugVAE-SL with its unquantized start, the plain VQ-VAE control where a profile trains it,
BiART) are most of a CPU run: each is timed here for ``steps`` steps at the profile's sizes, in the precision and
memory format the run will use (lverse_core/hardware.py), on random inputs. Everything else a run does (data, the
CLIP reranker, the judge, sampling, the tables) is added as a share of the training time measured on a full run of
the profile (``REST_SHARE``). ``doctor`` prints the estimate; the runner prints it when a run starts.

The same model projects a profile from step times measured elsewhere (``project``), e.g. read from the training
logs of a short run on the target machine (``measured_step_times``: every training log has ``elapsed_s``), which
also covers the CLIP reranker and the judge:

    python -m lverse_core.pipeline.estimate --profile gpu --logs runs/gpu+TAG/logs

``claims_estimate`` does the same for the trainings a claims run (notebook 07) still has to do.

``dry_run_overrides`` gives the OVERRIDES of a short run of a profile's shapes (2-5 steps per stage) that
catches config and shape errors, and measures step times, before any long run.
"""
from __future__ import annotations

import csv
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lverse_core.config import Config, data_source
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
    step_s = _time_stages(cfg, [name for name, n in planned.items() if n > 0], steps, plan)
    if step_s is None:
        return None
    stages = [Stage(name, n, step_s[name]) for name, n in planned.items() if n > 0]
    return Estimate(stages, REST_SHARE.get(cfg.profile, DEFAULT_REST_SHARE), plan)


def _time_stages(cfg: Config, names, steps: int, plan: dict) -> dict[str, float] | None:
    """Seconds per step of each training stage in ``names`` ("AugVAE-ML", "AugVAE-SL", "VQ-VAE control",
    "BiART") at ``cfg``'s sizes, timed here for ``steps`` steps in the run's precision and memory format; None
    where the run's device or precision cannot run here."""
    if "GPU" in plan["augvae"] + plan["biart"] or (plan["device"] == "cuda" and not torch.cuda.is_available()):
        return None
    builders = {"AugVAE-ML": lambda: augvae_step(cfg, "ml", plan), "AugVAE-SL": lambda: augvae_step(cfg, "sl", plan),
                "VQ-VAE control": lambda: augvae_step(cfg, "baseline", plan), "BiART": lambda: biart_step(cfg, plan)}
    torch_state = torch.get_rng_state()
    try:
        return {name: _timed(builders[name](), steps, plan["device"]) for name in dict.fromkeys(names)}
    finally:
        torch.set_rng_state(torch_state)  # timing must not move the run's random numbers


CLAIMS_TIMED = ("AugVAE-ML", "AugVAE-SL", "VQ-VAE control", "BiART")  # the claims' stages timed here


@dataclass
class ClaimsEstimate:
    """What ``make claims`` will train (``claims_experiment.training_plan``) and, timed here, how long."""
    plan: list
    step_s: dict[str, float]  # seconds per step of each stage to train that could be timed here

    @property
    def to_train(self) -> list:
        from lverse_core.evaluation.claims_experiment import TO_TRAIN

        return [p for p in self.plan if p.state == TO_TRAIN]

    @property
    def training_s(self) -> float:
        return sum(p.steps * self.step_s[p.stage] for p in self.to_train if p.stage in self.step_s)

    def lines(self) -> list[str]:
        """One line for the plan, one per seed with trainings, one for the time."""
        todo = self.to_train
        reused: dict[str, int] = {}
        for p in self.plan:
            if p not in todo:
                reused[p.state] = reused.get(p.state, 0) + 1
        out = [f"claims plan: {len(todo)} training{'s' if len(todo) != 1 else ''} to run"
               + (f"; reused: {', '.join(f'{n} {state}' for state, n in reused.items())}" if reused else "")]
        for seed in dict.fromkeys(p.seed for p in todo):
            out.append(f"  seed {seed} (steps): " + ", ".join(
                f"{p.name} {p.steps:,}" + (f" (resumes at step {p.done:,})" if p.done else "")
                for p in todo if p.seed == seed))
        if todo:
            timed = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in self.step_s.items())
            untimed = sorted({p.stage for p in todo if p.stage not in self.step_s})
            out.append(f"  about {self.training_s / 60:.0f} min of training on this machine"
                       + (f" (a step: {timed}, timed here)" if timed else "")
                       + (f", and {', '.join(untimed)} not timed" if untimed else "")
                       + "; each arm's sampling and measures, and each later seed's data set, come on top")
        return out


def claims_estimate(cfg: Config, steps: int = 3) -> ClaimsEstimate:
    """The claims run's plan, with the stages it still has to train timed here for ``steps`` steps each at the
    first seed's settings: the per-level AugVAEs and the ablated BiARTs are timed as the paper's models (on smoke
    the per-level SL's steps took between 8% less and 15% more time than the shared one's, within the spread of
    step times between runs).
    Nothing is timed where the run's device or precision cannot run here, or when fewer than ``MIN_STEPS`` steps
    of these stages are to train in all (ci)."""
    from lverse_core.evaluation.claims_experiment import seed_config, training_plan

    est = ClaimsEstimate(training_plan(cfg), {})
    todo = [p for p in est.to_train if p.stage in CLAIMS_TIMED]
    if sum(p.steps for p in todo) >= MIN_STEPS:
        timed = _time_stages(seed_config(cfg, cfg.claims.seeds[0]), [p.stage for p in todo], steps,
                             precision_plan(cfg))
        est.step_s.update(timed or {})
    return est


# stage -> its training log in runs/<profile>/logs/
STAGE_LOGS = {"AugVAE-ML": "augvae_ml.csv", "AugVAE-SL": "augvae_sl.csv", "VQ-VAE control": "augvae_baseline.csv",
              "BiART": "biart.csv", "CLIP reranker": "clip_reranker.csv", "judge": "judge.csv"}


def planned_steps(cfg: Config) -> dict[str, int]:
    """Every trained stage's planned steps: the trainings of ``planned_training_steps``, the CLIP reranker (0 on
    the paper profile, which reads OpenAI's) and the attribute judge (embedded profiles only)."""
    return {**planned_training_steps(cfg), "CLIP reranker": cfg.clip.train_steps,
            "judge": cfg.eval.judge_steps if data_source(cfg).ground_truth else 0}


def step_seconds(log: str | Path) -> float | None:
    """Seconds per step of the training that wrote ``log``: the median over its rows of the step time between
    consecutive rows (elapsed_s difference over step difference), within the last run that wrote it (a resumed
    run's elapsed_s starts again from 0) and after its first row, which holds the first steps' warm-up. None when
    the log has fewer than two timed rows of one run."""
    try:
        with open(log, newline="") as f:
            rows = [(int(r["step"]), float(r["elapsed_s"])) for r in csv.DictReader(f)
                    if r.get("elapsed_s") not in (None, "")]
    except (OSError, KeyError, ValueError):
        return None
    run: list[tuple[int, float]] = []
    for step, t in rows:
        if run and (t < run[-1][1] or step <= run[-1][0]):  # a resumed run starts its own clock
            run = []
        run.append((step, t))
    rates = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(run, run[1:])]
    rates = [r for r in rates if math.isfinite(r) and r >= 0]
    return statistics.median(rates) if rates else None


def measured_step_times(logs_dir: str | Path) -> dict[str, float]:
    """Seconds per step of every stage whose log in ``logs_dir`` has timed rows (``step_seconds``)."""
    out = {}
    for name, file in STAGE_LOGS.items():
        value = step_seconds(Path(logs_dir) / file)
        if value is not None:
            out[name] = value
    return out


def project(cfg: Config, step_s: dict[str, float], rest_share: float | None = None) -> Estimate:
    """The run of ``cfg`` projected from measured seconds per step (``step_s``, by stage name as in
    ``planned_steps``) times the profile's planned steps, plus ``rest_share`` (default: the profile's
    ``REST_SHARE``) for what is not a training step. A stage the profile trains and ``step_s`` lacks is a
    ValueError naming it."""
    planned = {k: v for k, v in planned_steps(cfg).items() if v > 0}
    missing = [k for k in planned if k not in step_s]
    if missing:
        raise ValueError(f"no measured step time for {', '.join(missing)} (profile {cfg.profile} trains "
                         f"{', '.join(f'{k} {v} steps' for k, v in planned.items())}); measure them first, e.g. with "
                         f"a short run of the profile's shapes (dry_run_overrides)")
    share = REST_SHARE.get(cfg.profile, DEFAULT_REST_SHARE) if rest_share is None else rest_share
    return Estimate([Stage(k, n, step_s[k]) for k, n in planned.items()], share, precision_plan(cfg))


def dry_run_overrides(cfg: Config, steps: int = 3, n_train: int = 64, device: str | None = None) -> dict:
    """OVERRIDES that run ``cfg``'s shapes (models, batch sizes, image size, precision) for ``steps`` steps per
    stage on a small data set: a check of a profile's config and shapes before any long run, and the short run
    whose logs ``measured_step_times`` reads. ``device`` (e.g. "cpu") moves the run; keep it None to time the
    profile's own device.

        python -m lverse_core run --profile gpu -p OVERRIDES "$(python -m lverse_core.pipeline.estimate \
            --profile gpu --dry-run-overrides --device cpu)"
    """
    if not 2 <= steps <= 1000:
        raise ValueError(f"dry_run_overrides: steps must be in 2..1000, got {steps}")
    t = cfg.augvae_train
    warm = min(t.unquantized_steps, steps - 1) if t.unquantized_steps else 0
    out = {
        "data.n_train": n_train, "data.n_val": max(8, n_train // 8), "data.n_test": max(8, n_train // 8),
        "augvae_train.ml_steps": steps, "augvae_train.sl_steps": steps,
        "augvae_train.baseline_steps": 2 * steps if t.baseline_steps else 0,
        "augvae_train.unquantized_steps": warm, "augvae_train.kmeans_batches": max(1, min(t.kmeans_batches, warm)),
        "augvae_train.log_every": 1, "augvae_train.ckpt_every": steps,
        "biart_train.steps": steps, "biart_train.warmup_steps": 1, "biart_train.log_every": 1,
        "biart_train.ckpt_every": steps,
        "clip.train_steps": steps if cfg.clip.train_steps else 0,
        "eval.judge_steps": steps, "eval.t2i_prompts": 4, "eval.human_eval_pool": 4,
    }
    if device is not None:
        out["device"] = device
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    from lverse_core.config import load_profile

    ap = argparse.ArgumentParser(description="project a profile's run time from measured step times")
    ap.add_argument("--profile", default="gpu")
    ap.add_argument("--logs", help="training logs (runs/<profile>[+tag]/logs) of a run on the target machine")
    ap.add_argument("--dry-run-overrides", action="store_true",
                    help="print the OVERRIDES of a short run of the profile's shapes (JSON) and exit")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    cfg = load_profile(args.profile)
    if args.dry_run_overrides:
        print(json.dumps(dry_run_overrides(cfg, args.steps, device=args.device)))
        return 0
    if not args.logs:
        ap.error("--logs or --dry-run-overrides is needed")
    measured = measured_step_times(args.logs)
    try:
        est = project(cfg, measured)
    except ValueError as e:
        print(f"error: {e}")
        return 1
    print(f"profile {cfg.profile}, step times from {args.logs}: {est.describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["ClaimsEstimate", "claims_estimate", "Estimate", "MIN_STEPS", "REST_SHARE", "STAGE_LOGS", "Stage",
           "dry_run_overrides", "estimate_run", "measured_step_times", "planned_steps", "planned_training_steps",
           "project", "step_seconds"]
