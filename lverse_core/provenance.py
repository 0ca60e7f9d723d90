"""What every artefact was made from, and the one decision whether it may be reused.

Every artefact a run writes (decoded images, tokenizer, AugVAE checkpoints, code files, BiART, the CLIP reranker, the
judge) gets a record beside it, ``<file>.made-from.json``, written atomically after the file itself::

    {"format": "lverse-made-from", "version": 1, "artefact": "AugVAE-SL checkpoint", "made_by": "training",
     "config": {"seed": 0, "augvae_train.sl_steps": 8, "augvae_train.precision": "fp32", ...},
     "inputs": {"data set": "shapes:1f0c...", "AugVAE-ML checkpoint": "sha256:9ab3..."},
     "content": {"size": 123456, "mtime_ns": 1733480000000000000, "sha256": "..."}}

- ``config`` holds the *resolved* values of the keys that shape the artefact (``SHAPED_BY``): ``precision: auto``
  is stored as what it resolved to on this machine; cadence keys (logging, checkpoint interval, timeouts, worker
  counts) and the kit's own version are left out, since they do not change the result.
- ``inputs`` holds the ids of what it was made from. An id is cheap to check: a file's is the SHA-256 of its content
  (``file_id``), cached in the file's own record under its size and mtime, so a GB checkpoint is hashed once, and
  re-hashed whenever its size or mtime differ from the cached ones; a data set's is its generation parameters
  (embedded) or its listing (real data, ``lverse_core.data.identity``).
- ``content`` is the file the record describes: a file changed after its record was written (copied over,
  edited) has no valid record any more.

``decide(path, expected)`` is the one decision every stage, ``doctor`` and the report index use: ``ok`` (reuse),
``stale`` (what changed: config keys old -> new, or which input), ``unknown`` (no record: made before records
existed, a damaged record, or a file changed since) or ``missing``. A trainer retrains unless it is ``ok``
(``retrain_reason`` prints one line saying why); a reader refuses (``require``) with a message naming the artefact,
what changed and the notebook to re-run.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from lverse_core.report import atomic_write

FORMAT, VERSION = "lverse-made-from", 1
SUFFIX = ".made-from.json"
# keys that never change a result: how often to log and checkpoint, wall-clock limits, worker processes, where
# outputs go and on which device type the run was placed (precision, which depends on it, is recorded resolved)
NOT_SHAPING = ("*.log_every", "*.ckpt_every", "*.timeout_s", "data.num_workers", "data.gen_workers", "data.root",
               "profile", "reports_dir", "runs_dir", "device", "assets.*", "augvae_train.channels_last")
# the config keys (dotted, fnmatch patterns; a section name covers its keys) that shape each kind of artefact, and
# the keys of those that do not shape it. Inputs (data set, checkpoints) are recorded by id, not here.
_IMAGES = ("data.image_size", "data.bad_input", "data.min_image_side")
_AUGVAE = ("seed", *_IMAGES, "augvae", "augvae_train")
SHAPED_BY: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tokenizer": (("biart.text_len", "biart.compact_vocab"), ()),
    "augvae-ml": (_AUGVAE, ("augvae_train.sl_steps", "augvae_train.baseline_steps", "augvae_train.unquantized_steps",
                            "augvae_train.kmeans_batches")),
    "augvae-sl": (_AUGVAE, ("augvae_train.ml_steps", "augvae_train.baseline_steps", "augvae_train.edge_in_ml")),
    "vqvae-baseline": (_AUGVAE, ("augvae_train.ml_steps", "augvae_train.sl_steps", "augvae_train.edge_in_ml")),
    "codes": (_IMAGES, ()),
    "decoded": (_IMAGES, ()),
    "biart": (("seed", "data.image_size", "augvae.codebook_size", "biart", "biart_train"), ()),
    "clip-reranker": (("seed", *_IMAGES, "clip"), ()),
    "judge": (("seed", "data.image_size", "eval.judge_*"), ()),
    "captions": (("seed", "sampling"), ()),
}
# which key holds a precision to record resolved (``auto`` -> what this machine computes in)
_PRECISION_KEYS = ("augvae_train.precision", "biart_train.precision")
# the notebook that (re)makes each kind of artefact: what a refusal tells the user to re-run
NOTEBOOK = {"data set": "00_data_prep", "decoded": "00_data_prep", "tokenizer": "02_train_biart",
            "augvae-ml": "01_train_augvae", "augvae-sl": "01_train_augvae", "vqvae-baseline": "03_table1_reconstruction",
            "codes": "01_train_augvae",
            "biart": "02_train_biart", "clip-reranker": "02_train_biart", "judge": "03_table1_reconstruction",
            "captions": "04_table2_image_to_text"}


class StaleArtefactError(RuntimeError):
    """An artefact that is stale or of unknown origin, read where only a current one may be used."""


# -- what shapes an artefact -------------------------------------------------------------------------------------

def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) or key.startswith(p + ".") for p in patterns)


def plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so a fresh value and a recorded one compare."""
    return json.loads(json.dumps(value, default=str))


def config_values(cfg, kind: str, device: str | None = None) -> dict[str, Any]:
    """The resolved configuration values that shape an artefact of ``kind`` (``SHAPED_BY``), flat dotted keys."""
    from lverse_core.hardware import resolve_precision

    include, exclude = SHAPED_BY[kind]
    flat = _flat(cfg.to_dict())
    out = {k: v for k, v in flat.items()
           if _matches(k, include) and not _matches(k, exclude) and not _matches(k, NOT_SHAPING)}
    for key in _PRECISION_KEYS:
        if key in out:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the trainers warn when they run; a record only reports
                try:
                    out[key] = resolve_precision(out[key], device or cfg.resolved_device(), what=key)
                except ValueError:
                    pass  # fp16 on a CPU: the trainer itself refuses it with its message
    return plain(out)


@dataclass
class MadeFrom:
    """What an artefact of ``kind`` is (or would be) made from: config values and input ids."""

    kind: str
    config: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)
    artefact: str = ""  # a human name, e.g. "AugVAE-SL checkpoint"; default: the kind
    # config keys that decide whether a converted (not trained) artefact fits: its architecture
    architecture: tuple[str, ...] = ()
    rebuild: str = ""  # what to re-run, when more than the notebook (default: "<notebook> to rebuild it, ...")

    @property
    def name(self) -> str:
        return self.artefact or self.kind

    @property
    def notebook(self) -> str:
        return f"notebooks/{NOTEBOOK[self.kind]}.ipynb" if self.kind in NOTEBOOK else "the notebook that made it"


def made_from(cfg, kind: str, inputs: dict[str, str] | None = None, artefact: str = "",
              architecture: Iterable[str] = (), rebuild: str = "") -> MadeFrom:
    return MadeFrom(kind, config_values(cfg, kind), plain(dict(inputs or {})), artefact, tuple(architecture),
                    rebuild)


# -- ids -------------------------------------------------------------------------------------------------------------

def sidecar(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:  # streamed; not hashlib.file_digest: the GPU image's Python may predate 3.11
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _short(digest: str) -> str:
    return "sha256:" + digest[:24]


def content_digest(path: str | os.PathLike) -> str:
    """The full SHA-256 of ``path``: from its record's cache when the file's size and mtime are the cached ones,
    else hashed (and the cache refreshed when the content is still the recorded one)."""
    path = Path(path)
    st = path.stat()
    rec = _read_record(path)
    content = rec.get("content") if isinstance(rec, dict) else None
    if isinstance(content, dict) and content.get("size") == st.st_size and content.get("mtime_ns") == st.st_mtime_ns \
            and isinstance(content.get("sha256"), str):
        return content["sha256"]
    digest = _sha256(path)
    if isinstance(content, dict) and content.get("sha256") == digest:  # touched or copied, same bytes: re-key
        try:
            _write_record(path, {**rec, "content": {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}})
        except OSError:
            pass  # a read-only folder: the file is hashed again next time
    return digest


def file_id(path: str | os.PathLike) -> str:
    """The id of a file as an input of other artefacts: a hash of its whole content (``sha256:`` + 24 hex), so a
    retrained checkpoint (same size, same step count) has another id and a copied or touched one keeps its id."""
    return _short(content_digest(path))


def input_id(path: str | os.PathLike) -> str:
    """``file_id`` of an input file, or ``"missing"`` when it does not exist (an artefact made from it is stale)."""
    return file_id(path) if Path(path).is_file() else "missing"


def listing_id(paths: Iterable[str | os.PathLike], recursive: bool = False) -> str:
    """A cheap id of files and folders read in place (real data sets, asset files): their paths, sizes and mtimes
    (a folder: its entries', one level deep unless ``recursive``, then every file and folder below it); never their
    content. A recursive listing is hashed as it is walked: a folder of a million images costs one ``stat`` each."""
    rows, digest = [], hashlib.sha256()
    for p in paths:
        p = Path(p)
        if p.is_dir() and recursive:
            for entry_path, st in _walk(p, set()):
                digest.update(json.dumps([entry_path, *st]).encode() + b"\n")
        elif p.is_dir():
            rows += [[str(e), *_stat(e)] for e in sorted(p.iterdir())]
        rows.append([str(p), *_stat(p)])
    if recursive:
        digest.update(json.dumps(rows).encode())
        return "listing:r:" + digest.hexdigest()[:24]
    return "listing:" + hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:24]


def _walk(root: Path, seen: set[tuple[int, int]]) -> Iterable[tuple[str, list[int]]]:
    """Every entry below ``root`` in a stable order (sorted by name at each level) with its size and mtime. A folder
    that cannot be read counts as one entry of size -1 (a permission change is a change); a folder reached again
    through a symbolic link is listed but not entered twice."""
    try:
        st = root.stat()
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        yield str(root) + os.sep, [-1, -1]
        return
    for e in entries:
        try:
            is_dir = e.is_dir(follow_symlinks=True)
            st = e.stat(follow_symlinks=True)
        except OSError:
            yield e.path, [-1, -1]
            continue
        yield e.path, [0 if is_dir else st.st_size, st.st_mtime_ns]
        if is_dir:
            yield from _walk(Path(e.path), seen)


def _stat(p: Path) -> list[int]:
    try:
        st = p.stat()
    except OSError:
        return [-1, -1]
    return [st.st_size if p.is_file() else 0, st.st_mtime_ns]


def params_id(prefix: str, params: dict[str, Any]) -> str:
    """The id of something fixed by parameters alone (the embedded data set): a hash of their canonical JSON."""
    return f"{prefix}:" + hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:24]


# -- records ---------------------------------------------------------------------------------------------------------

def _write_record(path: Path, rec: dict[str, Any]) -> Path:
    """Write ``path``'s record atomically (unique temp name in the same folder, fsync, rename)."""
    target = sidecar(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # a hidden temp name: never one of the "<checkpoint>.<pid>.<random>.tmp" names save_checkpoint clears
    atomic_write(target, lambda f: f.write(json.dumps(rec, indent=1, sort_keys=True) + "\n"),
                 prefix=f".{target.name}.{os.getpid()}.")
    return target


class _Damaged(dict):
    """A record that could not be read; ``why`` says how."""

    def __init__(self, why: str):
        super().__init__()
        self.why = why


def _read_record(path: Path) -> dict[str, Any] | None:
    side = sidecar(path)
    try:
        rec = json.loads(side.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return _Damaged(f"its record {side} cannot be read ({type(e).__name__}: {str(e)[:120]})")
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        return _Damaged(f"its record {side} is not a {FORMAT} file")
    if rec.get("version") != VERSION:
        return _Damaged(f"its record {side} has format version {rec.get('version')!r}; this kit reads {VERSION}")
    return rec


def record(path: str | os.PathLike, made: MadeFrom, made_by: str = "training", **extra: Any) -> Path:
    """Write ``path``'s record: what it was made from, and its content (hashed now). Call it after every write of
    ``path``; a writer killed between the two leaves a record of other content, which reads as ``unknown``.
    ``made_by``: training (the default; every setting and input compared) | conversion (weights converted from
    elsewhere: only ``made.architecture`` compared) | shared (an instrument copied from another run on purpose,
    ``extra`` saying from where); ``extra`` is stored as it is, for people to read."""
    path = Path(path)
    st = path.stat()
    digest = _sha256(path)
    return _write_record(path, {**plain(extra), "format": FORMAT, "version": VERSION, "artefact": made.name,
                                "kind": made.kind, "made_by": made_by, "config": made.config, "inputs": made.inputs,
                                "content": {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}})


def read(path: str | os.PathLike) -> dict[str, Any] | None:
    """``path``'s record as written, or None when there is none or it is damaged."""
    rec = _read_record(Path(path))
    return None if rec is None or isinstance(rec, _Damaged) else rec


# -- the decision ----------------------------------------------------------------------------------------------------

def _short_value(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class Decision:
    """Whether the artefact at ``path`` may be reused for ``expected``: ``state`` is ok | stale | unknown | missing;
    ``changes`` says what changed (stale), ``reason`` why the origin is unknown."""

    state: str
    path: Path
    expected: MadeFrom
    changes: list[str] = field(default_factory=list)
    reason: str = ""
    changed_inputs: list[str] = field(default_factory=list)  # names of the inputs whose ids differ or are missing

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def summary(self) -> str:
        """One line: ``ok``, ``stale: seed 0 -> 1; input data set changed (...)``, ``unknown, may be stale: ...`` or
        ``missing``."""
        if self.state == "stale":
            return "stale: " + "; ".join(self.changes)
        if self.state == "unknown":
            return "unknown, may be stale: " + self.reason
        return self.state

    def message(self) -> str:
        """Why a reader refuses it, and what to do."""
        e = self.expected
        how = e.rebuild or f"{e.notebook} to rebuild it, then the notebooks after it"
        if self.state == "missing":
            return f"{e.name} {self.path} does not exist; run {e.notebook} to make it"
        if self.state == "stale":
            return (f"{e.name} {self.path} is stale: it was made from other settings or inputs than this run's ("
                    f"{'; '.join(self.changes)}). Re-run {how}")
        return f"{e.name} {self.path} may be stale: {self.reason}, so what it was made from is unknown. Re-run {how}"


def compare(recorded: dict[str, Any] | None, expected: MadeFrom, path: str | os.PathLike = "") -> Decision:
    """The decision for an artefact whose record is ``recorded`` (None: none), content checks aside."""
    path = Path(path)
    if recorded is None:
        return Decision("unknown", path, expected, reason="it has no record of what it was made from (made before "
                                                          "the kit kept records, or by hand)")
    if isinstance(recorded, _Damaged):
        return Decision("unknown", path, expected, reason=recorded.why)
    config, inputs = recorded.get("config"), recorded.get("inputs")
    if not isinstance(config, dict) or not isinstance(inputs, dict):
        return Decision("unknown", path, expected, reason=f"its record {sidecar(path)} lacks 'config' or 'inputs'")
    # a converted artefact (official weights) was not trained here: only its architecture has to fit
    conversion = recorded.get("made_by") == "conversion"
    want = {k: v for k, v in expected.config.items() if not conversion or _matches(k, expected.architecture)}
    have = {k: v for k, v in config.items() if not conversion or k in want}
    changes = [f"{k} {_short_value(have.get(k, '(not set)'))} -> {_short_value(want.get(k, '(not set)'))}"
               for k in sorted(set(want) | set(have)) if have.get(k, "(not set)") != want.get(k, "(not set)")]
    changed_inputs = []
    for k in sorted(set(inputs) | set(expected.inputs)) if not conversion else ():
        old, new = inputs.get(k), expected.inputs.get(k)
        if old != new or new == "missing":
            changed_inputs.append(k)
        if new == "missing":
            changes.append(f"input {k} is missing")
        elif old is None:
            changes.append(f"input {k} was not used when it was made")
        elif new is None:
            changes.append(f"input {k} is no longer used")
        elif old != new:
            changes.append(f"input {k} changed ({_short_value(old)} -> {_short_value(new)})")
    return Decision("stale" if changes else "ok", path, expected, changes=changes, changed_inputs=changed_inputs)


def decide(path: str | os.PathLike, expected: MadeFrom) -> Decision:
    """The decision for the artefact at ``path``: missing, unknown (no or damaged record, or the file changed since
    its record was written), stale (what changed) or ok."""
    path = Path(path)
    if not path.exists():
        return Decision("missing", path, expected)
    rec = _read_record(path)
    d = compare(rec, expected, path)
    if d.state == "unknown" or not path.is_file():
        return d
    content = rec.get("content") if isinstance(rec.get("content"), dict) else {}
    if content.get("sha256") != content_digest(path):
        return Decision("unknown", path, expected, reason=f"the file changed after its record {sidecar(path).name} "
                                                          f"was written{_how_it_changed(path, content)}")
    return d


def _how_it_changed(path: Path, content: dict[str, Any]) -> str:
    """What a cheap look tells of a file that changed after its record: a size that shrank (cut short: a copy or
    download that stopped, a full disk), and for a torch checkpoint (a zip archive) whether it still opens."""
    import zipfile

    size, was = path.stat().st_size, content.get("size")
    notes = []
    if isinstance(was, int) and size != was:
        notes.append(f"{size:,} bytes, was {was:,}" + ("; cut short?" if size < was else ""))
    if path.suffix == ".pt":
        try:
            with zipfile.ZipFile(path):  # reads the central directory at the end only
                pass
        except (zipfile.BadZipFile, OSError):
            notes.append("it does not open as a torch checkpoint: damaged")
    return f" ({'; '.join(notes)})" if notes else ""


def require(path: str | os.PathLike, expected: MadeFrom,
            error: Callable[[str], Exception] = StaleArtefactError) -> None:
    """A reader's check: raise ``error`` (the reader's own exception type) unless the artefact is ``ok``."""
    d = decide(path, expected)
    if not d.ok:
        raise error(d.message())


def retrain_reason(path: str | os.PathLike, expected: MadeFrom, log: Callable[[str], None] | None = print
                   ) -> str | None:
    """A trainer's check: None when the artefact at ``path`` may be reused (or resumed); else why it is rebuilt,
    printed as one line with ``log`` when the file exists (a missing one is simply made)."""
    d = decide(path, expected)
    if d.ok:
        return None
    if d.state != "missing" and log is not None:
        log(f"{expected.name} {path}: rebuilding it, {d.summary()}")
    return d.summary()


__all__ = ["Decision", "MadeFrom", "NOTEBOOK", "SHAPED_BY", "StaleArtefactError", "compare", "config_values",
           "content_digest", "decide", "file_id", "input_id", "listing_id", "made_from", "params_id", "plain",
           "read", "record", "require", "retrain_reason", "sidecar"]
