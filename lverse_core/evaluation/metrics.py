"""Caption metrics for Table 2 (paper §4.2): BLEU-1..4, METEOR, ROUGE-L, CIDEr, optional SPICE; result files.

The scorers are pycocoevalcap's (the coco-caption code, which nlg-eval vendors), each called on its own. Two
pipelines feed them, chosen by ``eval.caption_metrics`` (``TOOLS``) and named in every Table 2 row:

- ``coco-caption``: PTB-tokenized text (lower-cased, punctuation removed) against every reference of an image,
  exactly as ``COCOEvalCap.evaluate()`` does;
- ``nlg-eval``: the paper's tool (Maluuba's ``compute_metrics``): raw text only stripped of surrounding white
  space, against the same number of references for every image (the first ``eval.caption_refs``; nlg-eval reads one
  reference file per reference). Punctuation stays glued to words ("circle." is not "circle"), so its scores differ.

With ``eval.meteor: false`` METEOR is left out (None, with "METEOR_reason"); with ``nlg-eval`` as well, no Java
runs at all (the gpu profile: GPU machines have no Java).

SPICE is never constructed unless Stanford CoreNLP 3.6.0 is on this machine: pycocoevalcap's ``Spice()`` would
download it, and the kit never reaches the network at run time.
Without it the SPICE value is None with a reason string "not computed: ...". The PTB tokenizer and METEOR run
Java (Java 17 is enough).

Files, so any standard evaluator can re-score our captions:
- caption results in the COCO results format: a JSON list of {"image_id", "caption"}, one file per variant;
- references in the COCO caption-annotation format ({"images", "annotations", "type": "captions", ...}).

For the embedded data set there is also the attribute accuracy of captions (``shapes.caption_correct``: the
caption names exactly the right objects) and two baselines: the most frequent training caption and a random
training caption (seeded).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from lverse_core.config import Config, EvalConfig
from lverse_core.report import write_json_atomic as _write_json

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")
TOOLS = ("coco-caption", "nlg-eval")
CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


class CaptionFileError(ValueError):
    """A caption-results or reference file that is not in the expected format; the message names the file."""


# -- scoring -------------------------------------------------------------------------------------------------------

def _check_inputs(preds: Mapping[Any, str], refs: Mapping[Any, Sequence[str]]) -> None:
    missing = sorted(set(refs) - set(preds), key=str)
    extra = sorted(set(preds) - set(refs), key=str)
    if missing or extra:
        raise ValueError(f"predictions and references must cover the same images: {len(missing)} image ids have no "
                         f"prediction (first: {missing[:5]}), {len(extra)} predictions have no references "
                         f"(first: {extra[:5]})")
    if not preds:
        raise ValueError("no captions to score")
    for k, v in preds.items():
        if not isinstance(v, str):
            raise ValueError(f"prediction for image {k!r} must be one string, got {type(v).__name__}")
    for k, v in refs.items():
        if isinstance(v, str) or not v or not all(isinstance(r, str) for r in v):
            raise ValueError(f"references for image {k!r} must be a non-empty list of strings, got {v!r}")


class JavaMissingError(RuntimeError):
    """No working ``java`` for the Java parts of the caption metrics (METEOR, the PTB tokenizer)."""


JAVA_FIX = "install a Java runtime (e.g. apt-get install openjdk-17-jre-headless) and make 'java' available"
JAVA_MISSING = "no working 'java' on PATH; METEOR in Table 2 runs a Java program"
_java_found = False


def java_version() -> str | None:
    """The first line of ``java -version``, or None when there is no working ``java`` on PATH."""
    import shutil

    java = shutil.which("java")
    if java is None:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stderr or out.stdout).strip().splitlines()[0] if out.returncode == 0 else None


def needs_java(cfg: Config | None = None, tool: str | None = None) -> bool:
    """Whether scoring captions under ``cfg`` runs Java: the coco-caption pipeline's PTB tokenizer, or METEOR
    (on unless ``eval.meteor`` is false). The nlg-eval pipeline without METEOR runs none (the gpu profile)."""
    tool = tool or (cfg.eval.caption_metrics if cfg is not None else "coco-caption")
    return tool != "nlg-eval" or cfg is None or bool(cfg.eval.meteor)


def require_java() -> None:
    """Raise JavaMissingError with ``doctor``'s diagnosis and fix when there is no working ``java``: without it
    pycocoevalcap fails with a bare ``FileNotFoundError: 'java'``. ``eval.meteor: false`` with
    ``eval.caption_metrics: nlg-eval`` scores without Java (``needs_java``)."""
    global _java_found
    if _java_found:  # found once in this process: not asked again for every scoring call
        return
    _java_found = java_version() is not None
    if not _java_found:
        raise JavaMissingError(f"{JAVA_MISSING} (and the coco-caption PTB tokenizer). To do: {JAVA_FIX}, or set "
                               f"eval.meteor: false with eval.caption_metrics: nlg-eval (no METEOR); python -m "
                               f"lverse_core doctor checks this before a run")


def ptb_tokenize(captions: Mapping[Any, Sequence[str]]) -> dict[Any, list[str]]:
    """pycocoevalcap's PTB tokenizer (Java): lower-cased, punctuation removed, one string per caption."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})


def spice_status(cfg: Config | None) -> tuple[Path | None, str | None]:
    """(CoreNLP directory, None) when SPICE can run, else (None, the reason it is not computed)."""
    if cfg is None or not cfg.assets.corenlp_dir:
        return None, ("not computed: Stanford CoreNLP 3.6.0 is not configured (set assets.corenlp_dir or "
                      "LVERSE_CORENLP_DIR to a folder holding " + " and ".join(CORENLP_JARS) + ")")
    d = Path(os.path.expanduser(cfg.assets.corenlp_dir))
    missing = [j for j in CORENLP_JARS if not (d / j).exists()]
    if missing:
        return None, f"not computed: {d} lacks {', '.join(missing)} (Stanford CoreNLP 3.6.0)"
    return d, None


def _spice(gts: dict, res: dict, corenlp: Path) -> float:
    """SPICE through pycocoevalcap's spice-1.0.jar with our local CoreNLP jars on the class path.

    We run the jar ourselves instead of ``pycocoevalcap.spice.Spice``, whose constructor downloads CoreNLP.
    """
    import pycocoevalcap.spice as spice_pkg

    spice_dir = Path(spice_pkg.__file__).parent
    cp = os.pathsep.join([str(spice_dir / "spice-1.0.jar"), str(spice_dir / "lib" / "*"),
                          *(str(corenlp / j) for j in CORENLP_JARS)])
    with tempfile.TemporaryDirectory(prefix="lverse-spice-") as tmp:
        inp, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        inp.write_text(json.dumps([{"image_id": k, "test": res[k][0], "refs": gts[k]} for k in sorted(gts, key=str)]))
        subprocess.run(["java", "-Xmx8G", "-cp", cp, "edu.anu.spice.SpiceScorer", str(inp), "-out", str(out),
                        "-subset", "-silent"], check=True, capture_output=True, timeout=3600)
        scores = [float(item["scores"]["All"]["f"]) for item in json.loads(out.read_text())]
    return sum(scores) / len(scores)


def score_captions(preds: Mapping[Any, str], refs: Mapping[Any, Sequence[str]], cfg: Config | None = None, *,
                   tool: str | None = None, n_refs: int | None = None) -> dict:
    """Corpus-level caption metrics, pycocoevalcap's scorers one by one (``tool``: see the module docstring).

    ``preds``: image id -> one generated caption; ``refs``: image id -> reference captions (same ids).
    Returns {"BLEU-1".."BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE", "SPICE_reason", "n_images", "tool",
    "references"}; values on pycocoevalcap's 0-1 scale (the paper prints x100). SPICE is None unless
    ``cfg.assets.corenlp_dir`` holds CoreNLP 3.6.0, and "SPICE_reason" then says why.
    """
    return score_caption_sets({"": preds}, refs, cfg, tool=tool, n_refs=n_refs)[""]


def resolve_tool(cfg: Config | None, tool: str | None = None, n_refs: int | None = None) -> tuple[str, int]:
    """(pipeline, references per image under nlg-eval): the arguments, else the profile's ``eval`` settings, else
    ``EvalConfig``'s defaults."""
    settings = cfg.eval if cfg is not None else EvalConfig()
    tool = tool or settings.caption_metrics
    if tool not in TOOLS:
        raise ValueError(f"caption metrics tool {tool!r} is not one of {', '.join(TOOLS)} (eval.caption_metrics)")
    n_refs = n_refs if n_refs is not None else settings.caption_refs
    if n_refs < 1:
        raise ValueError(f"references per image must be >= 1, got {n_refs} (eval.caption_refs)")
    return tool, n_refs


def tool_label(tool: str, n_refs: int) -> str:
    """How a Table 2 row was scored, in words."""
    if tool == "nlg-eval":
        return f"nlg-eval pipeline (raw stripped text, the first {n_refs} references per image)"
    return "coco-caption pipeline (PTB-tokenized, every reference)"


def nlg_eval_inputs(sets: Mapping[str, Mapping[Any, str]], refs: Mapping[Any, Sequence[str]], n_refs: int
                    ) -> tuple[dict, dict]:
    """(references, predictions keyed (set, image id)) as nlg-eval's ``compute_metrics`` builds them: each string
    only stripped, exactly ``n_refs`` references per image (nlg-eval reads one file per reference)."""
    short = sorted((k for k, v in refs.items() if len(v) < n_refs), key=str)
    if short:
        raise ValueError(f"nlg-eval scores every image against the same number of references, {n_refs} "
                         f"(eval.caption_refs), but {len(short)} images have fewer (first: {short[:5]}, "
                         f"{len(refs[short[0]])} references); lower eval.caption_refs or set eval.caption_metrics: "
                         f"coco-caption")
    gts = {k: [r.strip() for r in list(refs[k])[:n_refs]] for k in refs}
    return gts, {(name, k): [preds[k].strip()] for name, preds in sets.items() for k in refs}


def score_caption_sets(sets: Mapping[str, Mapping[Any, str]], refs: Mapping[Any, Sequence[str]],
                       cfg: Config | None = None, *, tool: str | None = None, n_refs: int | None = None
                       ) -> dict[str, dict]:
    """``score_captions`` for several prediction sets on the same references (e.g. the rows of Table 2).

    The Java parts run once for all sets: one PTB tokenizer call (coco-caption) and one METEOR process, so the
    result for a set is identical to scoring it alone (the scorers are per-image, then averaged) at a fraction of
    the time.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    tool, n_refs = resolve_tool(cfg, tool, n_refs)
    for preds in sets.values():
        _check_inputs(preds, refs)
    if needs_java(cfg, tool):
        require_java()
    if tool == "nlg-eval":
        gts, tokenized = nlg_eval_inputs(sets, refs, n_refs)
    else:
        gts = ptb_tokenize({k: list(refs[k]) for k in refs})
        tokenized = ptb_tokenize({(name, k): [preds[k]] for name, preds in sets.items() for k in refs})
    corenlp, reason = spice_status(cfg)
    results: dict[str, dict] = {}
    # a Java subprocess, ended by Meteor.__del__; none with eval.meteor false (Java-free scoring with nlg-eval)
    meteor = Meteor() if cfg is None or cfg.eval.meteor else None
    try:
        for name in sets:
            res = {k: tokenized[(name, k)] for k in refs}
            out: dict[str, Any] = {"n_images": len(res), "tool": tool,
                                   "references": n_refs if tool == "nlg-eval" else "all"}
            bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
            out.update({f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)})
            if meteor is not None:
                out["METEOR"] = float(meteor.compute_score(gts, res)[0])
            else:
                out["METEOR"], out["METEOR_reason"] = None, "not computed: eval.meteor is false (METEOR runs Java)"
            out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
            out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
            out["SPICE"], out["SPICE_reason"] = None, reason
            if corenlp is not None:
                try:
                    out["SPICE"] = _spice(gts, res, corenlp)
                except (subprocess.SubprocessError, OSError, ValueError, KeyError) as e:
                    detail = getattr(e, "stderr", b"") or b""
                    out["SPICE_reason"] = (f"not computed: SPICE failed ({type(e).__name__}: "
                                           f"{(detail.decode(errors='replace') or str(e))[-300:]})")
            results[name] = out
    finally:
        del meteor
    return results


# -- files ---------------------------------------------------------------------------------------------------------



def _read_json(path: Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise CaptionFileError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CaptionFileError(f"{path} is not valid JSON ({e})") from e


def write_caption_results(path: str | Path, preds: Mapping[int, str]) -> Path:
    """COCO caption-results format: a JSON list of {"image_id": int, "caption": str}, sorted by image id."""
    return _write_json(Path(path), [{"image_id": int(k), "caption": str(v)} for k, v in sorted(preds.items())])


def read_caption_results(path: str | Path) -> dict[int, str]:
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise CaptionFileError(f"{path}: caption results must be a JSON list of {{image_id, caption}} objects")
    out: dict[int, str] = {}
    for i, row in enumerate(data):
        if not isinstance(row, dict) or not isinstance(row.get("image_id"), int) \
                or not isinstance(row.get("caption"), str):
            raise CaptionFileError(f"{path}: entry {i} must be {{\"image_id\": int, \"caption\": str}}, got {row!r}")
        if row["image_id"] in out:
            raise CaptionFileError(f"{path}: image_id {row['image_id']} appears twice")
        out[row["image_id"]] = row["caption"]
    return out


def write_coco_references(path: str | Path, refs: Mapping[int, Sequence[str]], description: str = "") -> Path:
    """References in the COCO caption-annotation format (what ``pycocotools.coco.COCO`` loads)."""
    images = [{"id": int(k)} for k in sorted(refs)]
    anns, n = [], 0
    for k in sorted(refs):
        for c in refs[k]:
            n += 1
            anns.append({"image_id": int(k), "id": n, "caption": str(c)})
    return _write_json(Path(path), {"info": {"description": description or "L-Verse kit references"},
                                    "licenses": [], "type": "captions", "images": images, "annotations": anns})


def read_coco_references(path: str | Path) -> dict[int, list[str]]:
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise CaptionFileError(f"{path}: a COCO caption-annotation file needs an 'annotations' list")
    out: dict[int, list[str]] = {int(img["id"]): [] for img in data.get("images", [])}
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or not isinstance(a.get("image_id"), int) or not isinstance(a.get("caption"), str):
            raise CaptionFileError(f"{path}: annotation {i} must hold an int image_id and a str caption, got {a!r}")
        out.setdefault(a["image_id"], []).append(a["caption"])
    return out


# -- attribute accuracy and baselines (embedded data) ---------------------------------------------------------------

def caption_accuracy(preds: Mapping[int, str], objects: Mapping[int, Sequence[dict]]) -> float:
    """Fraction of captions that name exactly the right objects (``shapes.caption_correct``)."""
    from lverse_core.data.shapes import caption_correct

    missing = [k for k in preds if k not in objects]
    if missing:
        raise ValueError(f"{len(missing)} predicted image ids have no ground-truth objects (first: {missing[:5]})")
    if not preds:
        raise ValueError("no captions to judge")
    return sum(caption_correct(c, list(objects[k])) for k, c in preds.items()) / len(preds)


def most_frequent_caption(train_captions: Sequence[str]) -> str:
    """The most frequent training caption (ties: the first seen)."""
    if not train_captions:
        raise ValueError("no training captions")
    counts = Counter(train_captions)
    best = max(counts.values())
    return next(c for c in train_captions if counts[c] == best)


def random_captions(train_captions: Sequence[str], image_ids: Sequence[int], seed: int) -> dict[int, str]:
    """A training caption drawn at random (seeded) for every image."""
    if not train_captions:
        raise ValueError("no training captions")
    rng = random.Random(seed)
    return {int(k): rng.choice(list(train_captions)) for k in image_ids}


def baseline_predictions(cfg: Config, image_ids: Sequence[int]) -> dict[str, dict[int, str]]:
    """{"most frequent training caption": preds, "random training caption": preds} for ``image_ids``."""
    from lverse_core.data.loaders import caption_records

    train = [c for r in caption_records(cfg, "train") for c in r["captions"]]
    frequent = most_frequent_caption(train)
    return {"most frequent training caption": {int(k): frequent for k in image_ids},
            "random training caption": random_captions(train, image_ids, cfg.seed)}
