"""Generation for Tables 2 and 3 that scales: prompts sharded over torchrun ranks, results gathered in order.

Paper §3.6, §4.2-4.3: every prompt gets ``sampling.n_candidates`` samples and CLIP keeps the best one (top-1);
text->image repeats this ``sampling.n_repeats`` times with other seeds; captions are sampled for
``sampling.caption_tokens`` tokens and cut at the first full stop (the untruncated row is the same sample run to
the full text length, ``candidates.full_length_text``). The paper
does this for the 5,000 Karpathy test images (Table 2) and 30,000 captions (Table 3), 64 candidates each. Captions
may get their own count (``sampling.caption_candidates``); both directions may rerank by a score that adds BiART's own
likelihood of the caption given the image codes (``sampling.caption_likelihood_weight`` and
``sampling.image_likelihood_weight``, ``candidates.rerank_scores``; 0, the paper's rule, by default).

- Reproducible whatever the layout: every sampled row draws from its own random stream keyed by (cfg.seed, task,
  prompt id, repeat, candidate) (``row_sampler.RowSampler``), so a prompt's result does not depend on the batch
  size, on the prompts it shares a batch with, or on the number of ranks (bit for bit on the CPU, as the tests
  check; on GPUs, bf16 kernels picked per batch shape can move a logit slightly and so, rarely, a token:
  ``bench/gpu_check_generate.py`` measures how often).
- Sharded: rank r of W takes prompts r, r+W, r+2W, ...; the results are gathered (``all_gather_object``) and
  returned on every rank in the original prompt order. One process (``dist=None``) is the same code with W = 1.
- Resumable: with ``shard_dir`` every batch is also written as its own file (atomically); a rerun, with any
  number of ranks, skips the prompts already there, and the merge reads the files. ``meta.json`` records what was
  generated (prompts, seed, sampling settings, a model fingerprint); a directory from another run is an error.

Command line (one process, or K processes with torchrun; the output is written by rank 0)::

    python -m lverse_core.sampling.generate --profile smoke --task captions --out runs/smoke/gen/captions_test.json
    torchrun --nproc_per_node=K -m lverse_core.sampling.generate --profile paper --task captions --out captions.json
    torchrun --nproc_per_node=K -m lverse_core.sampling.generate --profile paper --task images --out images.npz \\
        --shard-dir runs/paper/gen/images_shards     # resumable: rerun the same command after a failure

``--task captions`` captions the ``--split`` (default test) images from their AugVAE-SL codes (notebook 01) and
writes a JSON {"records": [{image_id, caption, caption_untruncated, clip_score}, ...]}; ``--task images`` draws
images for the Table 3 prompts (``t2i_prompts``) and writes an .npz with ``codes`` (P, k, g, g) uint16,
``prompt_ids``, ``image_ids``, ``captions`` and ``clip_scores`` (P, k). Notebooks 04/05 read both
(``GENERATED_CAPTIONS`` / ``GENERATED_IMAGES`` parameters) instead of generating in their own process.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as tdist

from lverse_core.config import Config
from lverse_core.sampling.row_sampler import RowSampler, row_keys
from lverse_core.sampling.candidates import (caption_candidate_count, caption_log_likelihood, rerank_scores,
                                             caption_sample_length, full_length_text, rerank, truncate_at_full_stop)
from lverse_core.training.loop import CheckpointError, DistInfo, batched, save_checkpoint

Decoder = Callable[[torch.Tensor], torch.Tensor]  # codes (M, g, g) long -> images (M, 3, S, S) in [-1, 1]
ImageSource = torch.Tensor | Callable[[list[int]], torch.Tensor]  # images by prompt index


# -- bookkeeping: which prompts this rank does, resumable shard files, gathering -------------------------------------

def model_fingerprint(model: torch.nn.Module) -> list[float]:
    """Sum and sum of squares of all parameters: tells two checkpoints apart without hashing gigabytes."""
    total = sq = 0.0
    for p in model.parameters():
        d = p.detach().double()
        total += float(d.sum())
        sq += float((d * d).sum())
    return [total, sq]


def _same_meta(a: dict, b: dict) -> list[str]:
    """Keys whose values differ (the fingerprint within a relative 1e-6: float sums differ a little by device)."""
    diff = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if k == "model_fingerprint" and x and y:
            if not all(math.isclose(u, v, rel_tol=1e-6, abs_tol=1e-9) for u, v in zip(x, y)):
                diff.append(k)
        elif x != y:
            diff.append(k)
    return diff


class ShardStore:
    """Per-batch result files under ``root`` (any number of ranks, any order); ``meta.json`` guards against mixing."""

    def __init__(self, root: str | Path, meta: dict[str, Any], dist: DistInfo):
        self.root, self.dist = Path(root), dist
        self.root.mkdir(parents=True, exist_ok=True)
        meta_path = self.root / "meta.json"
        if not meta_path.exists():  # any rank may write it: ranks without a process group start in any order
            tmp = meta_path.with_name(f"meta.json.{dist.rank}.tmp")
            tmp.write_text(json.dumps(meta, indent=1) + "\n")
            os.replace(tmp, meta_path)
        _barrier(dist)
        saved = json.loads(meta_path.read_text())
        diff = _same_meta(saved, json.loads(json.dumps(meta)))
        if diff:
            raise ValueError(f"{self.root} holds generation results of another run (it differs in {', '.join(diff)}); "
                             f"delete that directory or choose another shard directory")

    def parts(self) -> list[Path]:
        return sorted(self.root.glob("part-*.pt"))

    @staticmethod
    def _read(path: Path) -> dict[int, Any]:
        """One part's results, or a CheckpointError naming the part and what to do."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # parts are written atomically: only outside damage truncates one
            raise CheckpointError(f"shard part {path} cannot be read ({type(e).__name__}: {str(e)[:160]}); it is "
                                  f"truncated or corrupt. Delete that file and rerun with the same shard "
                                  f"directory: its prompts are generated again") from e
        if not isinstance(state, dict) or not isinstance(state.get("results"), dict):
            raise CheckpointError(f"shard part {path} holds no 'results' mapping; delete it and rerun")
        return state["results"]

    def done(self) -> set[int]:
        return {i for p in self.parts() for i in self._read(p)}

    def write(self, results: dict[int, Any]) -> None:
        save_checkpoint(self.root / f"part-{min(results):09d}-r{self.dist.rank}.pt", {"results": results})

    def read_all(self) -> dict[int, Any]:
        out: dict[int, Any] = {}
        for p in self.parts():
            out.update(self._read(p))
        return out


def _barrier(dist: DistInfo) -> None:
    if dist.distributed and tdist.is_initialized():
        tdist.barrier()


def _collect(dist: DistInfo, local: dict[int, Any], n: int, store: ShardStore | None) -> list[Any]:
    """All results in prompt order, on every rank; a missing prompt is an error that says what to do."""
    if store is not None:
        _barrier(dist)
        merged = store.read_all()
    elif dist.distributed:
        if not tdist.is_initialized():
            raise RuntimeError(f"rank {dist.rank} of {dist.world_size} without a process group: launch with "
                               f"torchrun, or pass a shard directory and merge with one process afterwards")
        gathered: list[Any] = [None] * dist.world_size
        tdist.all_gather_object(gathered, local)
        merged = {k: v for part in gathered for k, v in part.items()}
    else:
        merged = local
    missing = [i for i in range(n) if i not in merged]
    if missing:
        raise RuntimeError(f"{len(missing)} of {n} prompts have no result yet (first: {missing[:5]}); run the other "
                           f"ranks, then rerun with the same shard directory to merge")
    return [merged[i] for i in range(n)]


def _todo(n: int, dist: DistInfo, store: ShardStore | None) -> list[int]:
    done = store.done() if store is not None else set()
    return [i for i in range(dist.rank, n, dist.world_size) if i not in done]


def _settings(cfg: Config, task: str, n_repeats: int) -> dict[str, Any]:
    s = cfg.sampling
    out = {"task": task, "seed": cfg.seed, "n_candidates": s.n_candidates, "temperature": s.temperature,
           "top_k": s.top_k, "top_p": s.top_p}
    if task == "captions":
        out["caption_tokens"] = s.caption_tokens
        if s.caption_candidates or s.caption_likelihood_weight:  # absent by default: older shards stay reusable
            out.update(caption_candidates=s.caption_candidates, caption_likelihood_weight=s.caption_likelihood_weight)
        out["untruncated"] = "full text_len sample"  # shards written before this rule are not reused
    else:
        out["n_repeats"] = n_repeats
        if s.image_likelihood_weight:  # absent by default: older shards stay reusable
            out["image_likelihood_weight"] = s.image_likelihood_weight
    return out


def _precision(model):
    from lverse_core.sampling.candidates import sampling_precision  # bf16 autocast on GPUs, FP32 on the CPU

    return sampling_precision(model)


# -- image -> text (Table 2) -----------------------------------------------------------------------------------------

@torch.no_grad()
def generate_captions(cfg: Config, model, tokenizer, codes, image_ids: Sequence[int], scorer=None,
                      dist: DistInfo | None = None, *, images: ImageSource | None = None,
                      shard_dir: str | Path | None = None, batch_size: int | None = None) -> list[dict[str, Any]]:
    """One CLIP-reranked caption per image: [{image_id, caption, caption_untruncated, clip_score}] in input order.

    ``codes``: (P, g, g) or (P, N) AugVAE-SL codes (numpy or tensor) of the images ``image_ids``. ``scorer``: a
    ``clip_reranker.CLIPScorer`` (or anything with ``score(images, texts) -> (M,)``); it scores the truncated
    candidates against ``images`` (a tensor (P, 3, S, S) in [-1, 1] aligned with ``codes``, or a function from a
    list of prompt indices to such a tensor). Without a scorer the first candidate is kept.
    """
    dist = dist or DistInfo()
    codes = torch.as_tensor(np.asarray(codes).astype(np.int64)).reshape(len(codes), -1)
    P, s, n = len(image_ids), cfg.sampling, caption_candidate_count(cfg.sampling)
    if codes.size(0) != P:
        raise ValueError(f"{codes.size(0)} code maps but {P} image ids")
    if scorer is not None and images is None:
        raise ValueError("generate_captions: a scorer needs images= (the images the captions are scored against)")
    device = next(model.parameters()).device
    store = None
    if shard_dir is not None:
        meta = {**_settings(cfg, "captions", 1), "n_prompts": P, "image_ids": [int(i) for i in image_ids],
                "codes_sum": int(codes.sum()), "model_fingerprint": model_fingerprint(model)}
        store = ShardStore(shard_dir, meta, dist)
    stop, full_stop = {tokenizer.eot_id, tokenizer.pad_id}, set(tokenizer.full_stop_ids)
    n_sample = caption_sample_length(model, s.caption_tokens)  # the untruncated row is the full-length sample
    rows_per_batch = batch_size or s.batch_size
    local: dict[int, Any] = {}
    for chunk in batched(_todo(P, dist, store), max(1, rows_per_batch // n)):
        keys = row_keys(cfg.seed, "captions", [int(image_ids[i]) for i in chunk], 1, n)
        rows = codes[chunk].to(device).repeat_interleave(n, dim=0)  # (c*n, N): a prompt's candidates adjacent
        ids = []
        with _precision(model):
            for a in range(0, len(rows), rows_per_batch):
                sampler = RowSampler(keys[a:a + rows_per_batch], s.temperature, s.top_k, s.top_p)
                ids.append(model.generate_text(rows[a:a + rows_per_batch], n_sample, sampler=sampler).cpu())
        ids = torch.cat(ids)
        cut = [_decode(tokenizer, c) for c in truncate_at_full_stop(ids[:, :s.caption_tokens], full_stop, stop)]
        full = [_decode(tokenizer, c) for c in full_length_text(ids, stop)]
        if scorer is not None:
            imgs = images[chunk] if torch.is_tensor(images) else images(list(chunk))
            scores = scorer.score(imgs.to(device).repeat_interleave(n, dim=0), cut).float().cpu().view(len(chunk), n)
        else:
            scores = torch.zeros(len(chunk), n)
        ll = None
        if s.caption_likelihood_weight > 0 and n > 1:
            ll = caption_log_likelihood(model, rows, tokenizer.encode(cut)).view(len(chunk), n)
        best = rerank(rerank_scores(scores, ll, s.caption_likelihood_weight))
        done = {}
        for j, i in enumerate(chunk):
            b = j * n + int(best[j])
            done[i] = {"image_id": int(image_ids[i]), "caption": cut[b], "caption_untruncated": full[b],
                       "clip_score": float(scores[j, best[j]])}
        local.update(done)
        if store is not None:
            store.write(done)
    return _collect(dist, local, P, store)


def caption_cache_dir(cfg: Config, split: str, model, scorer, codes, image_ids: Sequence[int]) -> Path:
    """The ``shard_dir`` under which notebooks 02 and 04 share one caption draw for ``split`` (the second finds the
    first's shards and samples nothing): ``runs/<profile>/generated/captions_<split>_<key>``, the key a digest of
    what decides the result (sampling settings, the images and their codes, BiART's and the reranker's weights), so
    a retrained model or another setting gets a directory of its own instead of a mismatch error."""
    codes = np.ascontiguousarray(np.asarray(codes).astype(np.int64))
    key = {**_settings(cfg, "captions", 1), "image_ids": [int(i) for i in image_ids],
           "codes": hashlib.sha256(codes.tobytes()).hexdigest(), "model": model_fingerprint(model),
           "scorer": model_fingerprint(scorer.model) if hasattr(scorer, "model") else type(scorer).__name__}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cfg.runs_root / "generated" / f"captions_{split}_{digest}"


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(torch.tensor([ids]))[0] if ids else ""


# -- text -> image (Table 3) -----------------------------------------------------------------------------------------

@torch.no_grad()
def generate_images(cfg: Config, model, tokenizer, captions: Sequence[str], prompt_ids: Sequence[int], scorer=None,
                    decode: Decoder | None = None, dist: DistInfo | None = None, *, n_repeats: int | None = None,
                    shard_dir: str | Path | None = None, batch_size: int | None = None
                    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """``n_repeats`` CLIP-reranked code maps per caption: (codes (P, k, g, g) long, [{prompt_id, caption,
    clip_scores}]) in input order. ``scorer`` scores ``decode(codes)`` (AugVAE-SL, FP32) against the caption;
    without a scorer (or decoder) the first candidate of each round is kept. With ``sampling.image_likelihood_weight``
    > 0 the kept one maximises ``candidates.rerank_scores`` (CLIP and BiART's log p(caption | candidate codes); the
    likelihood alone without a scorer).
    ``prompt_ids`` seed the prompts."""
    dist = dist or DistInfo()
    P, s, n = len(captions), cfg.sampling, cfg.sampling.n_candidates
    k = n_repeats or s.n_repeats
    if len(prompt_ids) != P:
        raise ValueError(f"{len(prompt_ids)} prompt ids but {P} captions")
    if len(set(int(p) for p in prompt_ids)) != P:
        raise ValueError("prompt ids must be unique: they seed each prompt's samples")
    if scorer is not None and decode is None:
        raise ValueError("generate_images: a scorer needs decode= (AugVAE-SL's decoder) to see the candidates")
    device, g = next(model.parameters()).device, cfg.image_grid
    store = None
    if shard_dir is not None:
        meta = {**_settings(cfg, "images", k), "n_prompts": P, "prompt_ids": [int(p) for p in prompt_ids],
                "captions": list(captions), "model_fingerprint": model_fingerprint(model)}
        store = ShardStore(shard_dir, meta, dist)
    rows_per_batch = batch_size or s.batch_size
    local: dict[int, Any] = {}
    for chunk in batched(_todo(P, dist, store), max(1, rows_per_batch // (n * k))):
        keys = row_keys(cfg.seed, "images", [int(prompt_ids[i]) for i in chunk], k, n)
        text = tokenizer.encode([captions[i] for i in chunk]).to(device).repeat_interleave(k * n, dim=0)
        row_caps = [captions[i] for i in chunk for _ in range(k * n)]
        codes, scores, ll = [], [], []
        for a in range(0, len(text), rows_per_batch):
            sampler = RowSampler(keys[a:a + rows_per_batch], s.temperature, s.top_k, s.top_p)
            with _precision(model):
                c = model.generate_image(text[a:a + rows_per_batch], sampler=sampler)  # (b, N)
            codes.append(c.cpu())
            if scorer is not None and decode is not None:
                imgs = decode(c.view(-1, g, g))
                scores.append(scorer.score(imgs, row_caps[a:a + rows_per_batch]).float().cpu())
            if s.image_likelihood_weight > 0 and n > 1:  # BiART reads back what it drew: log p(prompt | codes)
                ll.append(caption_log_likelihood(model, c, text[a:a + rows_per_batch]))
        codes = torch.cat(codes).view(len(chunk), k, n, g, g)
        scores = torch.cat(scores).view(len(chunk), k, n) if scores else torch.zeros(len(chunk), k, n)
        ll = torch.cat(ll).view(-1, n) if ll else None
        best = rerank(rerank_scores(scores.view(-1, n), ll, s.image_likelihood_weight)).view(len(chunk), k)
        done = {}
        for j, i in enumerate(chunk):
            pick = codes[j, torch.arange(k), best[j]].to(torch.int32)  # (k, g, g)
            done[i] = {"prompt_id": int(prompt_ids[i]), "caption": captions[i], "codes": pick,
                       "clip_scores": [float(scores[j, r, best[j, r]]) for r in range(k)]}
        local.update(done)
        if store is not None:
            store.write(done)
    results = _collect(dist, local, P, store)
    codes = torch.stack([r.pop("codes") for r in results]).long() if results else torch.zeros(0, k, g, g).long()
    return codes, results


# -- what the command line (and notebooks 04/05) load ----------------------------------------------------------------

def t2i_prompts(cfg: Config, n: int | None = None) -> dict[str, list]:
    """The Table 3 prompts: ``eval.t2i_prompts`` captions of the ``eval.t2i_split`` images ("val+test" joins
    splits), taken round-robin (every image's first caption, then every image's second, ...).

    Returns {"captions", "prompt_ids" (image_id * 100 + caption index: stable seeds), "image_ids",
    "real_ids" (the distinct images behind the prompts: FID's real set)}.
    """
    from lverse_core.data.loaders import caption_records

    n = n or cfg.eval.t2i_prompts
    records = [r for split in cfg.eval.t2i_split.split("+") for r in caption_records(cfg, split)]
    total = sum(min(len(r["captions"]), 100) for r in records)
    if n > total:
        raise ValueError(f"eval.t2i_prompts = {n} but split {cfg.eval.t2i_split!r} has only {total} captions; "
                         f"lower eval.t2i_prompts or join more splits (e.g. eval.t2i_split = 'val+test')")
    out: dict[str, list] = {"captions": [], "prompt_ids": [], "image_ids": []}
    for c in range(100):
        for r in records:
            if len(out["captions"]) < n and c < len(r["captions"]):
                out["captions"].append(r["captions"][c])
                out["prompt_ids"].append(int(r["image_id"]) * 100 + c)
                out["image_ids"].append(int(r["image_id"]))
    out["real_ids"] = list(dict.fromkeys(out["image_ids"]))
    return out


def real_images(cfg: Config, split: str, image_ids: Sequence[int]) -> Callable[[list[int]], torch.Tensor]:
    """A loader for the real images of ``image_ids`` (eval transform, [-1, 1]) by position in that list."""
    from lverse_core.data.loaders import CaptionImageDataset

    splits = split.split("+")
    datasets = [CaptionImageDataset(cfg, sp) for sp in splits]
    where = {int(r["image_id"]): (d, i) for d in datasets for i, r in enumerate(d.records)}
    missing = [i for i in image_ids if int(i) not in where]
    if missing:
        raise ValueError(f"{len(missing)} image ids are not in split {split!r} (first: {missing[:5]})")

    def load(indices: list[int]) -> torch.Tensor:
        return torch.stack([where[int(image_ids[i])][0][where[int(image_ids[i])][1]]["image"] for i in indices])

    return load


def load_models(cfg: Config, device) -> dict[str, Any]:
    """The run's tokenizer, BiART, CLIP reranker and AugVAE-SL decoder (written by notebooks 01-02)."""
    from lverse_core.sampling.candidates import load_augvae_decoder
    from lverse_core.training.biart_train import load_biart
    from lverse_core.sampling.clip_reranker import load_reranker
    from lverse_core.data.tokenizer import load_tokenizer, tokenizer_path

    path = tokenizer_path(cfg)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebooks/02_train_biart.ipynb for profile {cfg.profile}")
    tok = load_tokenizer(cfg)  # refused when stale (made from another data set or text settings)
    return {"tokenizer": tok, "model": load_biart(cfg, tokenizer=tok).to(device),
            "scorer": load_reranker(cfg, device), "decode": load_augvae_decoder(cfg, device)}


def _save_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def made_from(cfg: Config) -> dict[str, str]:
    """The ids (content hashes, ``provenance.file_id``) of the checkpoints a generation depends on: BiART, AugVAE-SL
    (its codes and decoder) and the CLIP reranker. A generation file records them; its loaders refuse it when they
    changed."""
    from lverse_core.sampling.clip_reranker import reranker_file
    from lverse_core.training.augvae_train import checkpoint_path
    from lverse_core.training.pretokenize import checkpoint_id

    files = {"biart": checkpoint_path(cfg, "biart"), "augvae_sl": checkpoint_path(cfg, "sl"),
             "clip_reranker": reranker_file(cfg)}
    missing = [f"{k} ({p})" for k, p in files.items() if not Path(p).exists()]
    if missing:
        raise CheckpointError(f"generation needs {', '.join(missing)}: run notebooks 01-02 for profile {cfg.profile}")
    return {k: checkpoint_id(Path(p)) for k, p in files.items()}


def check_made_from(path: str | Path, recorded: Any, cfg: Config) -> None:
    """Refuse a generation file made from other checkpoints than this profile's current ones (or not saying)."""
    if not isinstance(recorded, dict):
        raise CheckpointError(f"{path} does not record which checkpoints made it (written by an older kit); "
                              f"re-run python -m lverse_core.sampling.generate for profile {cfg.profile}")
    from lverse_core import provenance

    now = made_from(cfg)  # the same decision as every artefact's, on the checkpoint ids the file records
    decision = provenance.compare({"config": {}, "inputs": recorded}, provenance.MadeFrom("generation", {}, now),
                                  path)
    changed = [k for k in decision.changed_inputs if k in now]
    if changed:
        raise CheckpointError(f"{path} was generated with other {', '.join(changed)} checkpoint(s) than this run's "
                              f"(retrained since); re-run python -m lverse_core.sampling.generate for profile "
                              f"{cfg.profile}, or leave GENERATED_CAPTIONS / GENERATED_IMAGES empty to generate in the notebook")


def load_generated_images(path: str | Path, cfg: Config | None = None) -> dict[str, Any]:
    """What ``--task images`` wrote: codes (P, k, g, g) long tensor, prompt_ids, image_ids, captions, clip_scores.

    With ``cfg``, the file must have been made from this profile's current checkpoints (``check_made_from``)."""
    with np.load(path) as z:
        if cfg is not None:
            recorded = json.loads(str(z["made_from"])) if "made_from" in z.files else None
            check_made_from(path, recorded, cfg)
        return {"codes": torch.from_numpy(z["codes"].astype(np.int64)), "prompt_ids": z["prompt_ids"].tolist(),
                "image_ids": z["image_ids"].tolist(), "captions": [str(c) for c in z["captions"]],
                "clip_scores": torch.from_numpy(z["clip_scores"])}


def load_generated_captions(path: str | Path, cfg: Config | None = None) -> list[dict[str, Any]]:
    """What ``--task captions`` wrote: [{image_id, caption, caption_untruncated, clip_score}].

    With ``cfg``, the file must have been made from this profile's current checkpoints (``check_made_from``)."""
    try:
        tree = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:  # missing, cut short, not UTF-8, not JSON
        raise GeneratedFileError(f"captions file {path} cannot be read ({type(e).__name__}: {str(e)[:120]}); "
                                 f"{_REGENERATE}") from None
    if not isinstance(tree, dict):
        raise GeneratedFileError(f"captions file {path} holds a {type(tree).__name__}, not the mapping "
                                 f"{{profile, split, made_from, records}} that --task captions writes; {_REGENERATE}")
    if cfg is not None:
        check_made_from(path, tree.get("made_from"), cfg)
    return check_caption_records(path, tree.get("records"))


class GeneratedFileError(ValueError):
    """A generation file (``GENERATED_CAPTIONS`` / ``GENERATED_IMAGES``) of the wrong shape."""


_REGENERATE = "re-run python -m lverse_core.sampling.generate --task captions, or leave GENERATED_CAPTIONS empty"
CAPTION_RECORD = {"image_id": int, "caption": str, "caption_untruncated": str, "clip_score": (int, float)}


def check_caption_records(path: str | Path, records: Any) -> list[dict[str, Any]]:
    """``records`` if it is a list of {image_id, caption, caption_untruncated, clip_score} of the right types, else
    a GeneratedFileError naming the file, the record and the field."""
    if not isinstance(records, list):
        raise GeneratedFileError(f"captions file {path}: 'records' must be a list of {{{', '.join(CAPTION_RECORD)}}}, "
                                 f"got {type(records).__name__}; {_REGENERATE}")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise GeneratedFileError(f"captions file {path}: record {i} is a {type(r).__name__}, not a mapping; "
                                     f"{_REGENERATE}")
        for field, typ in CAPTION_RECORD.items():
            if not isinstance(r.get(field), typ) or isinstance(r.get(field), bool):
                raise GeneratedFileError(f"captions file {path}: record {i} has {field} = {r.get(field)!r:.60} "
                                         f"(expected {getattr(typ, '__name__', 'a number')}); {_REGENERATE}")
    return records


def main(argv: list[str] | None = None) -> None:
    from lverse_core.config import load_profile
    from lverse_core.training.pretokenize import load_codes
    from lverse_core.training.loop import cleanup_distributed, setup_distributed

    ap = argparse.ArgumentParser(prog="python -m lverse_core.sampling.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, help="ci | smoke | gpu | paper")
    ap.add_argument("--task", required=True, choices=["captions", "images"])
    ap.add_argument("--out", required=True, type=Path, help="captions: .json; images: .npz")
    ap.add_argument("--split", default="test", help="captions: the split to caption (default test)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N prompts (0 = all)")
    ap.add_argument("--shard-dir", type=Path, default=None, help="per-batch result files; a rerun resumes")
    args = ap.parse_args(argv)
    cfg = load_profile(args.profile)
    dist = setup_distributed(cfg.device)
    try:
        m = load_models(cfg, dist.device)
        if args.task == "captions":
            codes, ids = load_codes(cfg, args.split)
            if args.limit:
                codes, ids = codes[:args.limit], ids[:args.limit]
            records = generate_captions(cfg, m["model"], m["tokenizer"], codes, ids, m["scorer"], dist,
                                        images=real_images(cfg, args.split, ids), shard_dir=args.shard_dir)
            if dist.is_main:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                tmp = args.out.with_name(args.out.name + ".tmp")
                tmp.write_text(json.dumps({"profile": cfg.profile, "split": args.split, "made_from": made_from(cfg),
                                           "records": records}, indent=1))
                os.replace(tmp, args.out)
        else:
            pr = t2i_prompts(cfg, args.limit or None)
            codes, records = generate_images(cfg, m["model"], m["tokenizer"], pr["captions"], pr["prompt_ids"],
                                             m["scorer"], m["decode"], dist, shard_dir=args.shard_dir)
            if dist.is_main:
                _save_npz(args.out, codes=codes.numpy().astype(np.uint16), prompt_ids=np.array(pr["prompt_ids"]),
                          image_ids=np.array(pr["image_ids"]), captions=np.array(pr["captions"]),
                          clip_scores=np.array([r["clip_scores"] for r in records], dtype=np.float32),
                          made_from=np.array(json.dumps(made_from(cfg))))
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()
