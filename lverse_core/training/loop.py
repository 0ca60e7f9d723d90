"""Training infrastructure shared by AugVAE and BiART: processes, data order, checkpoints, logs, the step loop.

Design choices, each so that a killed run resumes exactly where it stopped:
- Runs are fixed by step counts; a wall-clock ``timeout_s`` is only a safety net (wall-clock budgets proved unreliable: a
  prototype run lost 100 s to a stall).
- The data order is a pure function of (seed, step): ``StepSampler`` draws epoch permutations from a seeded
  generator, so a resumed run sees exactly the batches the uninterrupted run would have seen, and each of the
  ``world_size`` processes takes its own slice of the same global batch (DDP with torchrun).
- A checkpoint is a plain dict (``kind``, ``model_args``, ``config``, ``step``, ``model``, ``optimizer``,
  ``scheduler``, ``rng``, ...) written atomically (temp file, fsync, rename) and read with ``weights_only=True``.
"""
from __future__ import annotations

import contextlib
import csv
import glob
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist

from lverse_core.report import atomic_write, remove_stale_temps


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, foreign or from an incompatible config."""


class TrainingDivergedError(RuntimeError):
    """A training whose loss became NaN or infinite: it stops, and no checkpoint of it is marked finished."""

    def __init__(self, desc: str, step: int, last_finite: float | None, last_finite_step: int | None, total: int):
        self.step, self.last_finite, self.last_finite_step = step, last_finite, last_finite_step
        before = (f"the last finite loss was {last_finite:.6g} at step {last_finite_step}" if last_finite is not None
                  else "no step of this run had a finite loss")
        super().__init__(
            f"{desc} diverged: the loss of step {step} (of {total}) is not finite; {before}. Training stopped; "
            f"the checkpoint keeps the last state written before the divergence, unfinished. Lower the learning "
            f"rate (or other settings that make the loss explode) in the profile and re-run the training")


class DivergenceGuard:
    """Watches a training's loss without reading it back on each step: device-side, the first step (1-based, as
    in the logs) whose loss is not finite and the last finite loss before it; ``check()`` reads them (one host
    read) and raises ``TrainingDivergedError``. Python floats are watched the same way."""

    def __init__(self, desc: str, total: int):
        self.desc, self.total = desc, total
        self.first_bad: Any = None  # 0-dim long tensor (-1: none yet) or int
        self.last: Any = None  # 0-dim float64 tensor or float: the last finite loss before the first bad one
        self.last_step: Any = None

    def observe(self, step: int, loss: Any) -> None:
        """Record the loss of 1-based ``step``."""
        if torch.is_tensor(loss):
            loss = loss.detach().reshape(()).double()
            if self.first_bad is None or not torch.is_tensor(self.first_bad):
                self.first_bad = torch.tensor(-1 if self.first_bad is None else self.first_bad,
                                              dtype=torch.long, device=loss.device)
                self.last = torch.tensor(float("nan") if self.last is None else self.last, dtype=torch.float64,
                                         device=loss.device)
                self.last_step = torch.tensor(-1 if self.last_step is None else self.last_step,
                                              dtype=torch.long, device=loss.device)
            ok = torch.isfinite(loss) & (self.first_bad < 0)
            self.first_bad = torch.where(~torch.isfinite(loss) & (self.first_bad < 0), step, self.first_bad)
            self.last = torch.where(ok, loss, self.last)
            self.last_step = torch.where(ok, step, self.last_step)
            return
        if self.first_bad is None:
            self.first_bad, self.last, self.last_step = -1, float("nan"), -1
        if torch.is_tensor(self.first_bad):  # a float after tensors: keep tensors
            self.observe(step, torch.tensor(float(loss), device=self.first_bad.device))
            return
        if self.first_bad < 0:
            if math.isfinite(float(loss)):
                self.last, self.last_step = float(loss), step
            else:
                self.first_bad = step

    def check(self) -> None:
        """Raise ``TrainingDivergedError`` if a non-finite loss was observed (a host read when on a device)."""
        if self.first_bad is None:
            return
        if torch.is_tensor(self.first_bad):
            first, last, last_step = torch.stack([self.first_bad.double(), self.last,
                                                  self.last_step.double()]).tolist()
        else:
            first, last, last_step = self.first_bad, self.last, self.last_step
        if first >= 0:
            raise TrainingDivergedError(self.desc, int(first), last if last_step >= 0 else None,
                                        int(last_step) if last_step >= 0 else None, self.total)


# -- processes -----------------------------------------------------------------------------------------------------

@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def autocast(precision: str, device: torch.device):
    """The autocast region of a training step: none for fp32, bf16 or fp16 otherwise."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if launched by torchrun (NCCL on GPUs, gloo on CPU), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but torch sees no GPU; use --device cpu or profile ci/smoke")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# -- randomness ----------------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """All generator states as tensors and plain Python values, so they load with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_rng_states(info: "DistInfo") -> list[dict[str, Any]]:
    """Every process's generator states, indexed by rank (a collective under DDP: call it on every rank)."""
    state = rng_state()
    if not info.distributed:
        return [state]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, state)
    return gathered


def restore_rng_states(path: str | os.PathLike, saved: Any, info: "DistInfo") -> None:
    """Give this process its own saved generator states; refuse a checkpoint written by another number of processes.

    ``saved`` is what ``all_rng_states`` returned (a list by rank) or, in older checkpoints, one state. Resuming on
    another world size would change every process's data order and random stream, so it is refused, naming both.
    """
    states = saved if isinstance(saved, list) else [saved]
    if len(states) != info.world_size:
        raise CheckpointError(
            f"checkpoint {path} was written by {len(states)} process(es) and this run has {info.world_size}: "
            f"resuming on another number of processes would change the data order and the random streams. "
            f"Resume with the same number (--nnodes x --nproc_per_node = {len(states)}, e.g. torchrun "
            f"--nproc_per_node={len(states)} on one node), or move the checkpoint away to start a fresh run")
    set_rng_state(states[info.rank])


# -- data order ----------------------------------------------------------------------------------------------------

class StepSampler:
    """Indices of the global batch at optimizer step ``step``, sliced for one process.

    Epoch ``e`` is a permutation of ``range(n)`` from ``torch.Generator().manual_seed(seed + e)``; the global
    batch of step ``s`` is positions ``[s*B, (s+1)*B)`` of the concatenated epochs. Process ``rank`` of
    ``world_size`` takes every ``world_size``-th element, so 1 process with batch B and 2 processes with B/2
    each see the same samples.
    """

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world_size: int = 1):
        if n <= 0:
            raise ValueError("StepSampler needs a non-empty data set")
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by world size {world_size}")
        self.n, self.batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world_size
        self._cache: dict[int, torch.Tensor] = {}

    def _epoch(self, e: int) -> torch.Tensor:
        if e not in self._cache:
            self._cache = {e: torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + e))}
        return self._cache[e]

    def global_indices(self, step: int) -> list[int]:
        start = step * self.batch
        out = []
        while len(out) < self.batch:
            e, off = divmod(start + len(out), self.n)
            perm = self._epoch(e)
            out.extend(perm[off: off + self.batch - len(out)].tolist())
        return out

    def indices(self, step: int) -> list[int]:
        return self.global_indices(step)[self.rank:: self.world]


# -- checkpoints ---------------------------------------------------------------------------------------------------

def _tmp_pid(rest: str) -> int | None:
    """The pid in the "<pid>.<random>.tmp" tail of a checkpoint temp name; None for earlier kits' names."""
    head = rest.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # temp names carry the writer's pid ("<name>.<pid>.<random>.tmp"), so a SIGKILLed writer's leftover can be
    # told from a write in progress and removed here, the next time this checkpoint is written
    remove_stale_temps(path.parent.glob(glob.escape(path.name) + ".*.tmp"),
                       lambda p: _tmp_pid(p.name[len(path.name) + 1:]))
    return atomic_write(path, lambda f: torch.save(state, f), binary=True)


def load_checkpoint(path: str | os.PathLike, kind: str | None = None, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a kit checkpoint with ``weights_only=True``; ``kind`` (e.g. "augvae-sl") must match if given."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; train it first (see notebooks/) or fix the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle of foreign objects, random bytes ...
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e)[:200]}); it is truncated, corrupt or "
            f"not a torch.save file. Delete it and re-run the training notebook to rebuild it."
        ) from e
    if not isinstance(state, dict) or "kind" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not an L-Verse kit checkpoint (no 'kind'/'model' entries)")
    if kind is not None and state["kind"] != kind:
        raise CheckpointError(f"{path} holds a '{state['kind']}' checkpoint, but a '{kind}' checkpoint was expected")
    if not isinstance(state.get("model_args"), dict) or not isinstance(state["model"], dict):
        raise CheckpointError(f"{path} has no 'model_args' mapping (the architecture it was trained with) or no "
                              f"'model' tensors; it was not written by this kit's trainer. Delete it and re-run the "
                              f"training notebook")
    return state


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step a kit checkpoint was saved at (the training resumes there), read without loading its tensors
    (memory-mapped); None when there is no such file or it cannot be read as one. Never raises."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None
    step = state.get("step") if isinstance(state, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def load_model_state(path: str | os.PathLike, model: torch.nn.Module, tensors: dict[str, Any]) -> None:
    """``model.load_state_dict(tensors)``, or a CheckpointError naming the file and every tensor that is missing,
    extra, not a tensor or of another shape (torch's own error says none of it about the file)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    shaped = sorted(k for k in set(own) & set(tensors)
                    if not torch.is_tensor(tensors[k]) or tensors[k].shape != own[k].shape)
    if missing or extra or shaped:
        parts = [f"{what} tensor(s) {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                 for what, names in (("missing", missing), ("unexpected", extra), ("misshaped", shaped)) if names]
        raise CheckpointError(f"checkpoint {path} does not fit the model its model_args describe: {'; '.join(parts)}"
                              f". It was edited or written by other code: delete it and re-run the training notebook")
    model.load_state_dict(tensors)


def check_model_args(path: str | os.PathLike, saved: dict[str, Any], expected: dict[str, Any]) -> None:
    """Raise CheckpointError listing every architecture argument where the checkpoint and the config differ."""
    diff = {k: (saved.get(k), expected.get(k)) for k in set(saved) | set(expected) if saved.get(k) != expected.get(k)}
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in sorted(diff.items()))
        raise CheckpointError(f"checkpoint {path} was trained with a different architecture ({lines}); "
                              f"use the profile it was trained with, or retrain")


# -- logs ----------------------------------------------------------------------------------------------------------

class CSVLog:
    """An append-only CSV of training metrics. On resume, rows after the resumed step are dropped first.

    Every log has an ``elapsed_s`` column, last: wall seconds since the training call that wrote the row started
    (a resumed run counts from its own start; rows of earlier logs without it keep it empty)."""

    def __init__(self, path: str | os.PathLike, fields: list[str], resume_step: int | None = None):
        fields = [f for f in fields if f != "elapsed_s"]
        self.path, self.fields = Path(path), ["step", *fields, "elapsed_s"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None or not self.path.exists():
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.fields)
        else:
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, self.fields)
                w.writeheader()
                w.writerows(rows)

    def write(self, step: int, **values: float) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow({"step": step, **values})


# -- the step loop ---------------------------------------------------------------------------------------------------

def progress_enabled() -> bool:
    """Whether training loops draw a progress bar: ``LVERSE_PROGRESS=1``/``0`` decides when set; otherwise on,
    except inside a Jupyter kernel, where the bar's redraws would become hundreds of lines in the executed notebook
    (papermill, the runner and nbconvert pages alike); the CSV log is written either way."""
    value = os.environ.get("LVERSE_PROGRESS", "").strip()
    if value in ("0", "1"):
        return value == "1"
    return "ipykernel" not in sys.modules


TRACE_ENV = "LVERSE_TRACE_DIR"  # set to a folder: each training loop traces TRACE_STEPS steps with torch.profiler
TRACE_SKIP, TRACE_STEPS = 5, 10  # the trace starts after TRACE_SKIP steps (warm-up, first allocations)


class _StepTrace:
    """A torch.profiler trace of steps ``[start + TRACE_SKIP, start + TRACE_SKIP + TRACE_STEPS)`` of one training
    loop when ``LVERSE_TRACE_DIR`` is set: ``<dir>/<desc>.trace.json`` (chrome://tracing, Perfetto) and
    ``<dir>/<desc>.ops.txt`` (the ops by time spent). Off (no cost) otherwise."""

    def __init__(self, desc: str, start: int, enabled: bool = True):
        folder = os.environ.get(TRACE_ENV, "").strip()
        self.dir = Path(folder) if folder and enabled else None
        self.name = "".join(c if c.isalnum() else "_" for c in desc).strip("_") or "train"
        self.first, self.prof = start + TRACE_SKIP, None

    def before(self, step: int) -> None:
        if self.dir is not None and step == self.first and self.prof is None:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self.prof = profile(activities=acts)
            self.prof.__enter__()

    def after(self, step: int) -> None:
        """``step``: the number of steps done."""
        if self.prof is not None and step >= self.first + TRACE_STEPS:
            self.close()

    def close(self) -> None:
        if self.prof is None:
            return
        prof, self.prof = self.prof, None
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        prof.__exit__(None, None, None)
        self.dir.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.dir / f"{self.name}.trace.json"))
        key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        (self.dir / f"{self.name}.ops.txt").write_text(prof.key_averages().table(sort_by=key, row_limit=40))
        self.dir = None  # one trace per loop


def _read_means(acc: dict[str, Any], cnt: dict[str, int]) -> dict[str, float]:
    """The interval means of the accumulated metrics: device tensors are read in one host transfer per device."""
    out = {k: v / cnt[k] for k, v in acc.items() if not torch.is_tensor(v)}
    by_device: dict[Any, list[str]] = {}
    for k, v in acc.items():
        if torch.is_tensor(v):
            by_device.setdefault(v.device, []).append(k)
    for keys in by_device.values():
        for k, v in zip(keys, torch.stack([acc[k] for k in keys]).tolist()):
            out[k] = v / cnt[k]
    return {k: out[k] for k in acc}


def run_steps(
    step_fn: Callable[[int], dict[str, Any]],
    *,
    start: int,
    total: int,
    save_fn: Callable[[int], None],
    ckpt_every: int,
    log: CSVLog | None = None,
    log_every: int = 1,
    timeout_s: float = 0.0,
    desc: str = "train",
    is_main: bool = True,
    stop_after: int | None = None,
    progress: bool = True,
) -> int:
    """Call ``step_fn(step)`` for ``step`` in ``[start, total)``; log, checkpoint, and return the next step.

    ``step_fn`` returns its metrics as floats or 0-dim device tensors; tensors are summed on the device (float64)
    and read back once per log line, so a step that does not log never waits for the device. Its ``loss`` is
    watched for NaN/inf the same way (``DivergenceGuard``), checked at every log line, before every checkpoint
    write and at the end: a diverged training raises ``TrainingDivergedError`` and writes no checkpoint after the
    divergence (so none is marked finished).
    ``save_fn(next_step)`` is called every ``ckpt_every`` steps and at the end (also when the timeout fires).
    ``stop_after`` ends the loop after that many steps of this call (tests use it to simulate a kill).
    ``progress=False`` hides the progress bar (the log is still written). Log rows get ``elapsed_s``.
    With ``LVERSE_TRACE_DIR`` set, steps 5-14 of the loop are traced with torch.profiler (``_StepTrace``).
    """
    from tqdm import tqdm  # not tqdm.auto: without ipywidgets it only warns, with a local path, in notebooks

    t0 = time.monotonic()
    bar = tqdm(total=total, initial=start, desc=desc, disable=not (is_main and progress and progress_enabled()),
               mininterval=2.0)
    step = start
    guard = DivergenceGuard(desc, total)
    trace = _StepTrace(desc, start, enabled=is_main)
    acc: dict[str, Any] = {}
    cnt: dict[str, int] = {}  # per key: a metric logged on alternate steps only (BiART directions) is averaged
                              # over the steps that reported it
    try:
        while step < total:
            trace.before(step)
            metrics = step_fn(step)
            for k, v in metrics.items():
                if torch.is_tensor(v):
                    v = v.detach().reshape(()).to(torch.float64)  # the float64 sum a Python float would give
                else:
                    v = float(v)
                acc[k] = (0.0 + v) if k not in acc else acc[k] + v
                cnt[k] = cnt.get(k, 0) + 1
            step += 1
            if "loss" in metrics:
                guard.observe(step, metrics["loss"])
            trace.after(step)
            bar.update(1)
            if step % log_every == 0 or step == total:
                guard.check()
            if log is not None and (step % log_every == 0 or step == total):
                means = _read_means(acc, cnt)
                if is_main:
                    log.write(step, **means, elapsed_s=round(time.monotonic() - t0, 3))
                bar.set_postfix({k: f"{v:.4g}" for k, v in list(means.items())[:3]})
                acc, cnt = {}, {}
            if step % ckpt_every == 0 and step < total:
                guard.check()
                save_fn(step)
            if stop_after is not None and step - start >= stop_after:
                return step
            if timeout_s and time.monotonic() - t0 > timeout_s:
                bar.write(f"{desc}: timeout of {timeout_s:.0f}s reached at step {step}/{total}; checkpoint saved, "
                          f"re-run to resume")
                break
    finally:
        bar.close()
        trace.close()  # a loop shorter than the trace writes what it saw
    guard.check()
    save_fn(step)
    return step


def batched(items: Iterable[Any], n: int) -> Iterable[list[Any]]:
    buf: list[Any] = []
    for x in items:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf
