"""The human-evaluation kit of paper §4.2 / Figure 7: blinded forms, answer ingestion, vote shares.

The paper sampled 500 sets (image, ground-truth caption "GT", L-Verse caption "Pred") from MS-COCO minival;
each of 150 people saw 50 random sets and answered "Which caption well describes the given image?" with the
first, the second or "Both captions well describe the image". L-Verse got 30.4% of votes (Pred + Both).

Here:
1. ``build_study(cfg, preds, images, refs)`` samples the pool (``eval.human_eval_pool`` sets), makes one form of
   ``eval.human_eval_form_size`` sets per rater (``eval.human_eval_raters``), shows GT and Pred in a seeded random
   order, and writes under ``reports/<profile>/human_eval/``:
   ``forms/<form_id>.html`` (one self-contained page per rater: images as data URIs, no network),
   ``study.json`` (the public part: pool, forms, captions in display order), ``key.json`` (the blinding key:
   which position holds GT, kept apart from the forms).
2. A rater opens the page, answers every set and saves ``answers_<form_id>.json`` (a Blob download):
   {"study": ..., "form_id": ..., "rater": ..., "answers": [{"set_id": ..., "choice": "first"|"second"|"both"}]}.
3. ``ingest_answers(cfg, files)`` validates every file (malformed JSON, another study or form, unknown or duplicate
   set ids, missing answers, invalid choices, unknown top-level fields, files over ``MAX_ANSWER_BYTES`` ->
   ``AnswerFileError`` naming the file) and adds the valid ones to the store ``answers.jsonl``, whose earlier lines
   are never changed: the store is rewritten whole (temp file + rename), so a kill leaves the old or the new store,
   never a torn line. A call ingests all its files or none; re-ingesting a file is a no-op.
4. ``unblind(cfg)`` maps choices back to GT / Pred / Both; ``vote_shares`` adds bootstrap confidence intervals
   (``eval.bootstrap`` replicates, resampling sets and raters, not single votes); ``figure7`` plots them, with the
   paper's 30.4% drawn over the Pred + Both bar only (labelled as the paper's).

On embedded profiles ``simulate_raters`` answers the forms from the ground-truth attributes (``caption_score``: how
much of the scene a caption gets right, against each simulated rater's strictness, with occasional lapses); its
answer files and every table and figure built on them say "simulated".
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lverse_core.config import Config
from lverse_core.report import atomic_write
from lverse_core.report import write_json_atomic as _write_json
from lverse_core.evaluation.statistics import percentile_interval
from lverse_core.evaluation.human_eval_form import FORMAT_VERSION, image_data_uri, render_form  # noqa: F401  (part of this API)

CHOICES = ("first", "second", "both")
VOTES = ("GT", "Pred", "Both")
MAX_ANSWER_BYTES = 1 << 20  # a 50-set form's answers take about 3 kB; anything this large is not an answer file
# The top-level fields an answer file may hold (the form writes all but "simulated", simulate_raters all) and
# their JSON types; anything else is refused rather than carried into the store.
ANSWER_FIELDS = {"version": int, "study": str, "form_id": str, "rater": str, "simulated": bool, "answers": list}
log = logging.getLogger(__name__)


class AnswerFileError(ValueError):
    """An answer file that cannot be ingested; the message names the file and what is wrong."""


def study_dir(cfg: Config) -> Path:
    return cfg.reports_root / "human_eval"




# -- the study: pool, forms, key -----------------------------------------------------------------------------------

def build_pool(preds: Mapping[int, str], refs: Mapping[int, Sequence[str]], n: int, seed: int) -> list[dict]:
    """``n`` sets {set_id, image_id, gt, pred}: images drawn at random, one reference caption each (seeded)."""
    ids = sorted(k for k in preds if k in refs and refs[k])
    if len(ids) < n:
        raise ValueError(f"the pool needs {n} images with a prediction and references, only {len(ids)} have both; "
                         f"lower eval.human_eval_pool or caption more images")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(ids, n))
    return [{"set_id": f"s{i:04d}", "image_id": int(k), "gt": rng.choice(list(refs[k])), "pred": preds[k]}
            for i, k in enumerate(chosen)]


def build_study(cfg: Config, preds: Mapping[int, str], images: Mapping[int, Any], refs: Mapping[int, Sequence[str]],
                *, model: str = "L-Verse kit", n_raters: int | None = None, out: Path | None = None) -> dict:
    """Sample the pool, write one HTML form per rater, the public study file and the key; return the study.

    ``images``: image id -> (3, S, S) tensor in [-1, 1] or uint8, or a path to an image file.
    """
    e = cfg.eval
    out = out or study_dir(cfg)
    n_raters = n_raters or e.human_eval_raters
    pool = build_pool(preds, refs, min(e.human_eval_pool, len(preds)), cfg.seed)
    size = min(e.human_eval_form_size, len(pool))
    rng = random.Random(cfg.seed + 1)
    study_id = hashlib.sha256(json.dumps([cfg.profile, cfg.seed, model, pool]).encode()).hexdigest()[:12]
    by_id = {s["set_id"]: s for s in pool}
    forms, key = [], {}
    for r in range(n_raters):
        form_id = f"{study_id}-r{r:03d}"
        set_ids = rng.sample(sorted(by_id), size)
        order = {sid: rng.choice(("gt_first", "pred_first")) for sid in set_ids}
        key[form_id] = order
        shown = [{"set_id": sid, "image_id": by_id[sid]["image_id"],
                  "captions": ([by_id[sid]["gt"], by_id[sid]["pred"]] if order[sid] == "gt_first"
                               else [by_id[sid]["pred"], by_id[sid]["gt"]])} for sid in set_ids]
        forms.append({"form_id": form_id, "sets": shown})
    study = {"study": study_id, "version": FORMAT_VERSION, "profile": cfg.profile, "model": model,
             "question": "Which caption well describes the given image?", "pool": pool, "forms": forms}
    if (out / "study.json").exists():
        old = json.loads((out / "study.json").read_text())
        if old["study"] != study_id and store_path(cfg, out).exists():
            raise FileExistsError(
                f"{out} holds another study ({old['study']}) with ingested answers in {store_path(cfg, out)}; "
                f"rebuilding would orphan them. Move that folder away (keep it: it is the record of that study) "
                f"or pass out= a new folder")
    _write_json(out / "study.json", study)
    _write_json(out / "key.json", {"study": study_id, "key": key})
    png = {s["image_id"]: image_data_uri(images[s["image_id"]]) for s in pool}
    for f in forms:
        path = out / "forms" / f"{f['form_id']}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_form(study, f, png))
    return study


def load_study(cfg: Config, root: Path | None = None) -> tuple[dict, dict]:
    root = root or study_dir(cfg)
    for name in ("study.json", "key.json"):
        if not (root / name).exists():
            raise FileNotFoundError(f"{root / name} does not exist: build the study first (human_eval.build_study)")
    return json.loads((root / "study.json").read_text()), json.loads((root / "key.json").read_text())


# -- ingestion -----------------------------------------------------------------------------------------------------

def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"duplicate JSON keys {dup}")
    return dict(pairs)


def validate_answer_file(path: Path, study: dict) -> dict:
    """The parsed answer file, or AnswerFileError naming ``path`` and the problem."""
    def fail(msg: str) -> AnswerFileError:
        return AnswerFileError(f"answer file {path}: {msg}")

    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_ANSWER_BYTES + 1)  # bounded: a huge file is refused without reading it all
    except FileNotFoundError:
        raise fail("does not exist") from None
    except OSError as e:
        raise fail(f"cannot be read ({e})") from None
    if len(raw) > MAX_ANSWER_BYTES:
        raise fail(f"is larger than {MAX_ANSWER_BYTES} bytes; an answer file of one form is a few kB")
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as e:
        raise fail(f"is not valid JSON ({e})") from None
    except RecursionError:
        raise fail("nests JSON too deeply to be an answer file") from None
    if not isinstance(data, dict):
        raise fail("must be a JSON object with study, form_id and answers")
    for field in ("study", "form_id", "answers"):
        if field not in data:
            raise fail(f"lacks the '{field}' entry")
    unknown = sorted(set(data) - set(ANSWER_FIELDS))
    if unknown:
        raise fail(f"has unknown top-level field(s) {unknown}; an answer file holds only {', '.join(ANSWER_FIELDS)}")
    for field, typ in ANSWER_FIELDS.items():
        if field in data and (not isinstance(data[field], typ) or (typ is int and isinstance(data[field], bool))):
            raise fail(f"'{field}' must be of JSON type {typ.__name__.replace('str', 'string')}, got {data[field]!r:.60}")
    if "version" in data and data["version"] != FORMAT_VERSION:
        raise fail(f"has format version {data['version']}, and this kit reads version {FORMAT_VERSION}; answer it "
                   f"with a form this kit rendered (human_eval.build_study)")
    if data["study"] != study["study"]:
        raise fail(f"belongs to another study ({data['study']!r}, this one is {study['study']!r})")
    forms = {f["form_id"]: f for f in study["forms"]}
    if data["form_id"] not in forms:
        raise fail(f"names form {data['form_id']!r}, which is not a form of this study")
    if not isinstance(data["answers"], list):
        raise fail("'answers' must be a list of {set_id, choice}")
    expected = [s["set_id"] for s in forms[data["form_id"]]["sets"]]
    seen: set[str] = set()
    for i, a in enumerate(data["answers"]):
        if not isinstance(a, dict) or set(a) != {"set_id", "choice"} or not all(isinstance(v, str) for v in a.values()):
            raise fail(f"answer {i} must be exactly {{\"set_id\": string, \"choice\": string}}, got {a!r:.100}")
        if a["set_id"] not in expected:
            other = [f["form_id"] for f in study["forms"] if any(s["set_id"] == a["set_id"] for s in f["sets"])]
            where = f" (it belongs to form(s) {other[:3]}: is this the file of another form?)" if other else ""
            raise fail(f"set id {a['set_id']!r} is not on form {data['form_id']}{where}")
        if a["set_id"] in seen:
            raise fail(f"set id {a['set_id']!r} is answered twice")
        if a["choice"] not in CHOICES:
            raise fail(f"set {a['set_id']!r} has the invalid choice {a['choice']!r}; valid: {', '.join(CHOICES)}")
        seen.add(a["set_id"])
    missing = [s for s in expected if s not in seen]
    if missing:
        raise fail(f"{len(missing)} set(s) of form {data['form_id']} are not answered: {missing[:10]}")
    data["sha256"] = hashlib.sha256(raw).hexdigest()
    data["source_file"] = Path(path).name
    return data


def store_path(cfg: Config, root: Path | None = None) -> Path:
    return (root or study_dir(cfg)) / "answers.jsonl"


def _read_store_lines(path: Path) -> tuple[list[dict], bytes]:
    """(records, the bytes of the whole lines) of the store. A last line without its newline is a torn write of
    an ingestion that never returned (stores written before the store was replaced atomically): it is left out,
    with a warning, and the next ingestion drops it. Any other unreadable line is an AnswerFileError."""
    if not path.exists():
        return [], b""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    records, good = [], len(raw)
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
            if not isinstance(rec, dict) or not {"form_id", "answers", "sha256"} <= set(rec):
                raise ValueError("not an answer record")
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            if n == len(lines):  # no newline after it: the append was cut off
                log.warning("%s: ignoring a torn last line (an interrupted ingestion); re-ingest that file", path)
                good = len(raw) - len(line)
                break
            raise AnswerFileError(f"answer store {path}, line {n}: unreadable ({type(e).__name__}: {e}); the store "
                                  f"was edited or damaged: restore it from a copy or re-ingest the answer files "
                                  f"into a fresh store") from None
        records.append(rec)
    return records, raw[:good]


def read_store(cfg: Config, root: Path | None = None) -> list[dict]:
    return _read_store_lines(store_path(cfg, root))[0]


def _replace_store(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(content), binary=True, prefix=path.name + ".")


def ingest_answers(cfg: Config, files: Sequence[str | Path], root: Path | None = None) -> dict[str, list[str]]:
    """Validate every file, then append the new ones to ``answers.jsonl``; all of them or none.

    Returns {"ingested": [...], "already": [...]} (file names). A file already in the store (same bytes) is
    skipped; a different file for a form that already has answers is an error (one form per rater).
    """
    study, _ = load_study(cfg, root)
    stored, kept = _read_store_lines(store_path(cfg, root))
    have_sha = {r["sha256"] for r in stored}
    have_form = {r["form_id"]: r["source_file"] for r in stored}
    errors, new, already = [], [], []
    for f in files:
        try:
            rec = validate_answer_file(Path(f), study)
        except AnswerFileError as e:
            errors.append(str(e))
            continue
        if rec["sha256"] in have_sha:
            already.append(Path(f).name)
            continue
        if rec["form_id"] in have_form:
            errors.append(f"answer file {f}: form {rec['form_id']} already has answers (from "
                          f"{have_form[rec['form_id']]}); each form is answered by one rater")
            continue
        have_sha.add(rec["sha256"])
        have_form[rec["form_id"]] = rec["source_file"]
        new.append(rec)
    if errors:
        raise AnswerFileError("nothing was ingested from this batch; fix or remove these files:\n  " +
                              "\n  ".join(errors))
    if new:  # earlier lines are copied byte for byte; the whole store is replaced atomically
        if kept and not kept.endswith(b"\n"):
            kept += b"\n"
        _replace_store(store_path(cfg, root),
                       kept + b"".join((json.dumps(rec, ensure_ascii=False) + "\n").encode() for rec in new))
    return {"ingested": [r["source_file"] for r in new], "already": already}


# -- un-blinding and statistics --------------------------------------------------------------------------------------

def unblind(cfg: Config, root: Path | None = None):
    """A DataFrame of every ingested vote: form_id, rater, simulated, set_id, image_id, choice, vote (GT/Pred/Both)."""
    import pandas as pd

    study, key = load_study(cfg, root)
    by_set = {s["set_id"]: s for s in study["pool"]}
    rows = []
    for n, rec in enumerate(read_store(cfg, root), start=1):
        order = _stored_order(store_path(cfg, root), n, rec, key["key"])
        for a in rec["answers"]:
            if a["choice"] == "both":
                vote = "Both"
            else:
                gt_first = order[a["set_id"]] == "gt_first"
                vote = "GT" if (a["choice"] == "first") == gt_first else "Pred"
            rows.append({"form_id": rec["form_id"], "rater": rec.get("rater", ""),
                         "simulated": bool(rec.get("simulated", False)), "set_id": a["set_id"],
                         "image_id": by_set[a["set_id"]]["image_id"], "choice": a["choice"], "vote": vote})
    return pd.DataFrame(rows, columns=["form_id", "rater", "simulated", "set_id", "image_id", "choice", "vote"])


def _stored_order(store: Path, n: int, rec: dict, keys: dict) -> dict:
    """The un-blinding order of stored record ``n``, after checking it is one this study can read: a store edited
    by hand or copied from another study names an unknown form, holds answers of the wrong shape, or of another
    format version (each an AnswerFileError naming the store, the record and what to do)."""
    def fail(msg: str) -> AnswerFileError:
        return AnswerFileError(f"answer store {store}, record {n}: {msg}; restore the store from a copy or re-ingest "
                               f"the answer files into a fresh store")

    if rec.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        raise fail(f"format version {rec.get('version')!r:.40}, this kit reads version {FORMAT_VERSION}")
    form = rec["form_id"]
    if not isinstance(form, str) or form not in keys:
        raise fail(f"form {form!r:.60} is not a form of this study")
    order, answers = keys[form], rec["answers"]
    if not isinstance(answers, list) or not all(
            isinstance(a, dict) and isinstance(a.get("set_id"), str) and a["set_id"] in order
            and a.get("choice") in CHOICES for a in answers):
        raise fail(f"'answers' must be a list of {{set_id of form {form}, choice in {'/'.join(CHOICES)}}}, got "
                   f"{answers!r:.100}")
    return order


def vote_shares(votes, n_boot: int, seed: int = 0, level: float = 0.95):
    """Share of GT / Pred / Both / Pred + Both with percentile bootstrap CIs that respect how votes cluster.

    ``votes``: a DataFrame with ``vote`` and, as ``unblind`` gives them, ``set_id`` and ``rater`` (or a plain
    sequence of votes, then treated as independent). Votes on one set share its image and captions, and votes of
    one rater share that person's taste, so resampling single votes makes the intervals too narrow. Each bootstrap
    replicate instead draws the sets with replacement and, when there are several raters, the raters too, and
    weights every vote by (times its set was drawn) x (times its rater was drawn): the two-way "pigeonhole"
    bootstrap (Owen 2007, Ann. Appl. Stat. 1:2), which is the ordinary set bootstrap when there is one rater.
    """
    import pandas as pd

    if isinstance(votes, pd.DataFrame):
        df = votes
    else:
        df = pd.DataFrame({"vote": list(votes)})
    if len(df) == 0:
        raise ValueError("no votes to summarise: ingest answer files first")
    v = df["vote"].to_numpy()
    n = len(v)
    set_idx = (pd.factorize(df["set_id"])[0] if "set_id" in df else np.arange(n))
    rater_idx = (pd.factorize(df["rater"])[0] if "rater" in df else np.zeros(n, dtype=int))
    n_sets, n_raters = int(set_idx.max()) + 1, int(rater_idx.max()) + 1
    rng = np.random.default_rng(seed)
    w_sets = rng.multinomial(n_sets, np.full(n_sets, 1 / n_sets), size=n_boot)  # (B, sets): times drawn
    w_raters = (rng.multinomial(n_raters, np.full(n_raters, 1 / n_raters), size=n_boot) if n_raters > 1
                else np.ones((n_boot, 1), dtype=np.int64))
    w = w_sets[:, set_idx] * w_raters[:, rater_idx]  # (B, votes)
    total = w.sum(axis=1)
    keep = total > 0  # a replicate whose drawn raters never saw the drawn sets carries no votes
    cats = {"GT": v == "GT", "Pred": v == "Pred", "Both": v == "Both", "Pred + Both": v != "GT"}
    rows = []
    for name, mask in cats.items():
        boot = (w[keep] @ mask.astype(np.float64)) / total[keep]
        iv = percentile_interval(boot, float(mask.mean()), n, level, method="two-way bootstrap (sets x raters)")
        rows.append({"vote": name, "share": iv.estimate, "ci_low": iv.low, "ci_high": iv.high, "n_votes": int(n),
                     "n_sets": n_sets, "n_raters": n_raters})
    return pd.DataFrame(rows)


def paper_pred_plus_both_percent() -> float:
    """The paper's Pred + Both share (percent, Figure 7), from the kit's labelled reference table."""
    from lverse_core.report import reference_table

    ref = reference_table("figure7_human_eval")
    return float(ref.loc[ref["quantity"] == "pred_plus_both_vote_share_percent", "value"].iloc[0])


def figure7(shares, simulated: bool, paper_pred_plus_both: float | None = None):
    """Bar chart of vote shares with CIs, beside the paper's Pred + Both share (percent)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if paper_pred_plus_both is None:
        paper_pred_plus_both = paper_pred_plus_both_percent()
    df = shares.copy()
    df["percent"] = 100 * df["share"]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    who = "simulated raters (ground-truth attributes)" if simulated else "human raters"
    sns.barplot(data=df, x="vote", y="percent", ax=ax, color="#4c72b0")
    ax.errorbar(range(len(df)), df["percent"], yerr=[df["percent"] - 100 * df["ci_low"],
                                                     100 * df["ci_high"] - df["percent"]],
                fmt="none", ecolor="black", capsize=4)
    at = list(df["vote"]).index("Pred + Both")  # the paper reports only this share: its line stands over that bar
    ax.hlines(paper_pred_plus_both, at - 0.45, at + 0.45, color="#c44e52", linestyle="--", linewidth=2,
              label=f"L-Verse paper: Pred + Both = {paper_pred_plus_both:.1f}% (MS-COCO, human raters)")
    ax.set_ylabel("share of votes (%)")
    ax.set_xlabel("")
    ax.set_ylim(0, 100)
    ax.set_title(f"Which caption well describes the image? ({who},\n{int(df['n_votes'].iloc[0])} votes on "
                 f"{int(df['n_sets'].iloc[0])} sets; 95% CI: bootstrap over sets and raters)", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


# -- the simulated rater (embedded profiles only) -------------------------------------------------------------------

def caption_score(text: str, objects: Sequence[dict]) -> float:
    """How much of the scene a caption gets right, in [0, 1]: objects named with the right (size, colour, shape),
    as a share of the larger of (objects named, objects in the image); 1 exactly when ``caption_correct``."""
    from collections import Counter

    from lverse_core.data.shapes import parse_caption

    key = lambda o: (o.get("size"), o.get("colour"), o.get("shape"))  # noqa: E731
    named, true = Counter(map(key, parse_caption(text))), Counter(map(key, objects))
    denominator = max(sum(named.values()), sum(true.values()))
    return sum((named & true).values()) / denominator if denominator else 1.0


SIM_STRICTNESS = (0.5, 1.0)  # each simulated rater's bar for "well describes", drawn uniformly in this range
SIM_LAPSE = 0.05  # chance that a simulated rater answers one set at random (attention lapses)


def simulated_choice(scores: Sequence[float], strictness: float, lapse: float, rng: random.Random) -> str:
    """One simulated answer from the two captions' ``caption_score`` (in display order).

    A caption "well describes" the image when its score reaches the rater's ``strictness``: both -> "both", one ->
    that one, neither -> the better one (a coin on a tie). With probability ``lapse`` the rater answers at random.
    """
    if rng.random() < lapse:
        return rng.choice(CHOICES)
    good = [sc >= strictness for sc in scores]
    if all(good):
        return "both"
    if any(good):
        return "first" if good[0] else "second"
    if scores[0] != scores[1]:
        return "first" if scores[0] > scores[1] else "second"
    return rng.choice(("first", "second"))


def simulate_raters(cfg: Config, objects: Mapping[int, Sequence[dict]], out: Path,
                    root: Path | None = None, strictness: tuple[float, float] = SIM_STRICTNESS,
                    lapse: float = SIM_LAPSE) -> list[Path]:
    """Answer every form as a simulated rater; write ``answers_<form_id>.json`` files under ``out``.

    Each rater gets a seeded strictness in ``strictness`` (a lenient rater accepts a caption that gets most of the
    scene right) and lapses with probability ``lapse`` (``simulated_choice``), so GT, Pred and Both all occur. On
    the embedded data the ground-truth caption is right by construction (score 1), so "Pred" alone comes only from
    a lapse, or from a ground truth that misses objects on data where it can. These are modelling assumptions, not
    measurements of people; files and every table built on them say "simulated": true.
    """
    study, _ = load_study(cfg, root)
    paths = []
    for r, form in enumerate(study["forms"]):
        rng = random.Random(cfg.seed * 1000 + r)
        bar = rng.uniform(*strictness)
        answers = [{"set_id": s["set_id"],
                    "choice": simulated_choice([caption_score(c, list(objects[s["image_id"]])) for c in s["captions"]],
                                               bar, lapse, rng)}
                   for s in form["sets"]]
        rec = {"version": FORMAT_VERSION, "study": study["study"], "form_id": form["form_id"],
               "rater": f"simulated-{r:03d}", "simulated": True, "answers": answers}
        paths.append(_write_json(Path(out) / f"answers_{form['form_id']}.json", rec))
    return paths
