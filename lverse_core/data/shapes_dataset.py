"""Writing the embedded data set (``lverse_core.data.shapes``) to disk in the real formats, safely.

``ensure_dataset`` generates into a temporary sibling directory under an exclusive lock and renames it into place,
with ``COMPLETE.json`` (the generation parameters) written last: a killed run never leaves a half data set that
looks complete, parallel runs wait for one generation instead of racing, and a set made with other parameters is
regenerated. A directory it did not make is never overwritten. ``data.gen_workers`` processes draw the images of
the larger profiles; the files do not depend on how many.

``ensure_shards`` also writes the set as webdataset tar shards in img2dataset's layout (``wds/00000.tar``, ...:
``{key}.jpg`` at JPEG quality 95, ``{key}.txt`` the first caption, ``{key}.json`` with all of them), on first use
of that view (``caption_records(cfg, split, source="wds")``), the same way (temp folder, lock, its own ``wds/COMPLETE.json``), so data sets made
before the view existed stay valid. The shards are byte-for-byte deterministic on one machine (fixed member times
and order; JPEG bytes follow the Pillow/libjpeg build).
"""
from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from lverse_core.config import Config
from lverse_core.config.sources import data_source
from lverse_core.report import pid_suffix, remove_stale_temps
from lverse_core.data.ood import write_ood_images
from lverse_core.data.shapes import (COLOURS, GENERATOR_VERSION, SHAPES, SIZES, caption_tokens, make_captions, render_scene,
                     sample_scene, split_ids)

PARALLEL_MIN_JOBS = 512  # below this, spawning worker processes costs more than it saves
SHARD_JPEG_QUALITY = 95  # img2dataset's default encode_quality
SHARD_MAX_SAMPLES = 10_000  # img2dataset's default number_sample_per_shard
EMBEDDED_SHARDS = 8  # the embedded set is cut into about this many shards: 2 ranks x 2 workers all get some
SHARDS_VERSION = 1  # bump when the shard layout changes: shards of another version are rewritten


def generation_params(cfg: Config) -> dict:
    """What determines the files; a data set whose COMPLETE.json differs in any of these is regenerated."""
    d = cfg.data
    return {"generator_version": GENERATOR_VERSION, "seed": cfg.seed, "image_size": d.image_size,
            "n_train": d.n_train, "n_restval": d.n_restval, "n_val": d.n_val, "n_test": d.n_test,
            "captions_per_image": d.captions_per_image, "max_objects": d.max_objects, "ood_images": d.ood_images}


def _check_params(cfg: Config) -> None:
    d = cfg.data
    for key in ("n_train", "n_val", "n_test", "n_restval"):
        if getattr(d, key) < 0:
            raise ValueError(f"data.{key} must be >= 0, got {getattr(d, key)}")
    if d.n_train < 1:
        raise ValueError("data.n_train must be >= 1 for the embedded data set")
    if not 1 <= d.max_objects <= 4:
        raise ValueError(f"data.max_objects must be in 1..4 (more do not fit without overlap), got {d.max_objects}")
    if d.gen_workers < 0:
        raise ValueError(f"data.gen_workers must be >= 0 (0 = one per CPU core), got {d.gen_workers}")
    if d.captions_per_image < 1:
        raise ValueError(f"data.captions_per_image must be >= 1, got {d.captions_per_image}")


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=None, separators=(",", ":"), sort_keys=False) + "\n")


def _make_image(job: tuple) -> tuple[list[dict], list[str]]:
    """One scene: draw it, write its PNG and ImageFolder link, return (objects, captions). Runs in workers."""
    seed, image_id, split, out, image_size, max_objects, n_captions = job
    rng = np.random.default_rng([seed, image_id])  # per image: the result does not depend on worker scheduling
    objects = sample_scene(rng, image_size, max_objects)
    filename = f"{image_id:06d}.png"
    path = out / "images" / split / filename
    render_scene(rng, objects, image_size).save(path, compress_level=6)
    captions = make_captions(objects, image_size, n_captions, rng)
    # ImageFolder view for the AugVAE loaders: class = the first object's shape; hard links, not copies
    cls_dir = out / "imagefolder" / split / objects[0]["shape"]
    cls_dir.mkdir(parents=True, exist_ok=True)
    try:
        os.link(path, cls_dir / filename)
    except OSError:  # a file system without hard links
        shutil.copyfile(path, cls_dir / filename)
    return objects, captions


def _map(fn, jobs: list, workers: int) -> list:
    """``map`` in ``workers`` spawned processes (the gpu profile writes 150k images), or inline for 0 or 1."""
    if workers <= 1 or len(jobs) < PARALLEL_MIN_JOBS:
        return [fn(j) for j in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, jobs, chunksize=max(1, min(256, len(jobs) // (4 * workers)))))


def generate(cfg: Config, out: Path) -> dict:
    """Write the whole embedded data set into the empty directory ``out``; returns the marker's content.

    ``data.gen_workers`` processes draw the images (0: one per usable core); the files do not depend on how many.
    """
    t0 = time.perf_counter()
    s, d = cfg.data.image_size, cfg.data
    jobs = []
    for split, ids in split_ids(cfg).items():
        if len(ids):
            (out / "images" / split).mkdir(parents=True)
        jobs += [(cfg.seed, i, split, out, s, d.max_objects, d.captions_per_image) for i in ids]
    results = _map(_make_image, jobs, d.gen_workers or min(16, len(os.sched_getaffinity(0))))
    images, attributes, tsv_rows = [], {}, []
    sentid = 0
    for (_, image_id, split, *_rest), (objects, captions) in zip(jobs, results):
        filename = f"{image_id:06d}.png"
        sentences = [{"tokens": caption_tokens(c), "raw": c, "imgid": image_id, "sentid": sentid + i}
                     for i, c in enumerate(captions)]
        images.append({"filepath": split, "sentids": [x["sentid"] for x in sentences], "filename": filename,
                       "imgid": image_id, "split": split, "sentences": sentences, "cocoid": image_id})
        sentid += len(captions)
        attributes[str(image_id)] = {"objects": objects}
        if split in ("train", "restval"):
            tsv_rows.append(f"{captions[0]}\timages/{split}/{filename}\n")
    _write_json(out / "dataset_coco.json", {"images": images, "dataset": "shapes"})
    _write_json(out / "attributes.json", {"shapes": list(SHAPES), "colours": list(COLOURS), "sizes": list(SIZES),
                                          "images": attributes})
    (out / "cc3m_train.tsv").write_text("".join(tsv_rows))
    write_ood_images(out / "ood", cfg.data.ood_images, s)
    marker = {"params": generation_params(cfg), "counts": {k: len(v) for k, v in split_ids(cfg).items()},
              "captions": sentid, "bytes": disk_usage(out), "generation_s": round(time.perf_counter() - t0, 3)}
    _write_json(out / "COMPLETE.json", marker)
    return marker


def disk_usage(root: Path) -> int:
    """Bytes of the files under root, each hard-linked file counted once."""
    seen, total = set(), 0
    for p in root.rglob("*"):
        if p.is_file():
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / "COMPLETE.json").read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def _lock(root: Path):
    """An exclusive lock beside the data root: parallel runs wait for one generation instead of racing."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_leftovers(root: Path) -> list[Path]:
    """The temp folders (``.<name>.tmp-<pid>``, ``.ood.tmp-<pid>``, ``.wds.tmp-<pid>``, ``.old-<pid>``) of
    generations that were killed: SIGKILL skips ensure_dataset's own cleanup. A folder whose process still runs is
    kept."""
    if not root.parent.is_dir():
        return []
    name = glob.escape(root.name)
    temps = [p for pat in (f".{name}.tmp-*", f".{name}.ood.tmp-*", f".{name}.wds.tmp-*", f".{name}.old-*")
             for p in root.parent.glob(pat)]
    return remove_stale_temps(temps, lambda p: pid_suffix(p.name, "-"))


def ensure_dataset(cfg: Config) -> Path:
    """Generate the embedded data set under ``cfg.data_root`` unless an identical one is there; return the root.

    For a real data source (``data.source`` coco / cc3m) only the out-of-domain photographs are written there; the
    data itself is read from ``assets.*`` by ``lverse_core.data``.
    """
    root = cfg.data_root
    _remove_leftovers(root)
    if not data_source(cfg).embedded:
        if len(list((root / "ood").glob("*.png"))) != cfg.data.ood_images:
            with _lock(root):
                tmp = root.parent / f".{root.name}.ood.tmp-{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                write_ood_images(tmp, cfg.data.ood_images, cfg.data.image_size)
                shutil.rmtree(root / "ood", ignore_errors=True)
                root.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, root / "ood")
        return root
    _check_params(cfg)
    params = generation_params(cfg)
    marker = read_marker(root)
    if marker and marker.get("params") == params:
        return root
    with _lock(root):
        marker = read_marker(root)  # another process may have finished it while we waited
        if marker and marker.get("params") == params:
            return root
        if root.exists() and marker is None and any(root.iterdir()):
            raise FileExistsError(
                f"{root} exists and is not empty but holds no COMPLETE.json, so it is not a data set this kit "
                f"generated; refusing to overwrite it. Remove it or point data.root elsewhere.")
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            generate(cfg, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = root.parent / f".{root.name}.old-{os.getpid()}"
        if root.exists():
            os.replace(root, old)  # a stale generated set (other parameters) or an empty directory
        os.replace(tmp, root)
        shutil.rmtree(old, ignore_errors=True)
    return root


class DataSetMissingError(FileNotFoundError):
    """A reader found no data set (or one made with other settings) where the profile puts it: notebook 00 (or a
    trainer's ``ensure_dataset``) makes it; readers never do."""


def require_dataset(cfg: Config) -> Path:
    """The data set's folder, for a reader: the embedded set generated with ``cfg``'s parameters (its
    ``COMPLETE.json``), or for real data the folder of its out-of-domain photographs. Never writes anything; a
    missing or differently made set is a ``DataSetMissingError`` naming the notebook that makes it."""
    root = cfg.data_root
    make = (f"notebook 00 makes it: python -m lverse_core run --profile {cfg.profile} --only 00 (or "
            f"lverse_core.data.shapes_dataset.ensure_dataset(cfg))")
    if not data_source(cfg).embedded:
        if len(list((root / "ood").glob("*.png"))) != cfg.data.ood_images:
            raise DataSetMissingError(f"{root / 'ood'} does not hold the profile's {cfg.data.ood_images} "
                                      f"out-of-domain photographs; {make}")
        return root
    marker = read_marker(root)
    if marker is None:
        raise DataSetMissingError(f"no embedded data set at {root} (no COMPLETE.json) for profile {cfg.profile}; "
                                  f"{make}")
    params = generation_params(cfg)
    if marker.get("params") != params:
        was = marker.get("params") if isinstance(marker.get("params"), dict) else {}
        changed = [f"{k} {was.get(k)!r} -> {v!r}" for k, v in params.items() if was.get(k) != v]
        raise DataSetMissingError(f"the embedded data set at {root} was made with other settings "
                                  f"({', '.join(changed)[:300]}); {make}")
    return root


# -- the webdataset view -------------------------------------------------------------------------------------------

def shard_params(cfg: Config) -> dict:
    """What determines the shards; shards whose ``wds/COMPLETE.json`` differs in any of these are rewritten."""
    return {**generation_params(cfg), "shards_version": SHARDS_VERSION, "jpeg_quality": SHARD_JPEG_QUALITY,
            "max_samples_per_shard": SHARD_MAX_SAMPLES, "shards": EMBEDDED_SHARDS}


def write_shards(root: Path, out: Path) -> dict:
    """The data set at ``root`` as img2dataset-layout shards in ``out``, samples in the order train (with
    restval, as the Karpathy train split), val, test, so that the last n_test are test and the n_val before them
    val, as the shard reader splits them. Keys are the image ids, zero-padded to 9 digits as img2dataset's."""
    import io

    import webdataset as wds
    from PIL import Image

    images = json.loads((root / "dataset_coco.json").read_text())["images"]
    order = {"train": 0, "restval": 0, "val": 1, "test": 2}
    images = sorted(images, key=lambda im: order[im["split"]])  # stable: id order inside a split
    per_shard = max(1, min(SHARD_MAX_SAMPLES, -(-len(images) // EMBEDDED_SHARDS)))
    out.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(out / "%05d.tar"), maxcount=per_shard, verbose=0, mtime=0.0) as sink:
        for im in images:
            key = f"{im['imgid']:09d}"
            with Image.open(root / "images" / im["filepath"] / im["filename"]) as png:
                rgb = png.convert("RGB")
            buf = io.BytesIO()
            rgb.save(buf, format="JPEG", quality=SHARD_JPEG_QUALITY)
            captions = [s["raw"] for s in im["sentences"]]
            meta = {"key": key, "caption": captions[0], "captions": captions, "status": "success",
                    "width": rgb.size[0], "height": rgb.size[1]}
            sink.write({"__key__": key, "jpg": buf.getvalue(), "txt": captions[0],
                        "json": json.dumps(meta).encode("utf-8")})
    return {"samples": len(images), "samples_per_shard": per_shard, "shards": len(list(out.glob("*.tar")))}


def ensure_shards(cfg: Config, make_dataset: bool = True) -> Path:
    """The embedded data set's shards (``<data root>/wds``), a view of the set written on first use; returns their
    folder. ``make_dataset=False`` (the shard reader) needs the set itself to be there already
    (``require_dataset``): a reader writes the view, never the data set."""
    root = ensure_dataset(cfg) if make_dataset else require_dataset(cfg)
    out, params = root / "wds", shard_params(cfg)
    if (read_marker(out) or {}).get("params") == params:
        return out
    with _lock(root):
        if (read_marker(out) or {}).get("params") == params:  # another process wrote them while we waited
            return out
        tmp = root.parent / f".{root.name}.wds.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            counts = write_shards(root, tmp)
            _write_json(tmp / "COMPLETE.json", {"params": params, **counts})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(out, ignore_errors=True)  # shards of other parameters
        os.replace(tmp, out)
    return out
