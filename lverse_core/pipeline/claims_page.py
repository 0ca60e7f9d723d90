"""The claims scorecard for the docs, generated from a run, never typed: the run that made it (commit, machine, CPU
model and class, precision, torch, seeds, wall time and peak memory of notebook 07), each arm's own quality, size
and cost seed by seed, the measured rows of the scorecard (difference with its interval, level, margin, minimum
detectable effect, p, seeds needed, verdict) and the notebook's shortfall lines, all read from
``reports/<profile>/results/07_claims.json`` (and ``manifest.json`` for what an older results file lacks).

    python -m lverse_core results --profile smoke --claims-doc [docs/claims.md]

refreshes the block between ``<!-- claims:<profile> begin -->`` and ``<!-- claims:<profile> end -->`` of that file;
nothing outside the markers changes, and a file whose markers are wrong is refused before anything is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from lverse_core.config import REPO_ROOT
from lverse_core.evaluation.claims import CONTRADICTED, NO_DIFFERENCE, SUPPORTED
from lverse_core.hardware import describe_plan
from lverse_core.pipeline.headlines import UnreadableResult, read_result
from lverse_core.pipeline.notebook_html import scrub_local_paths
from lverse_core.pipeline.results_page import (ResultsError, _markdown_table, _num, _read_readme, _write_text,
                                               load_manifest, replace_block)
from lverse_core.report import format_number

CLAIMS_DOC = REPO_ROOT / "docs" / "claims.md"
RESULTS_NAME = "07_claims"
NOTEBOOK = "07_claims"
KIND = "claims"  # the markers' word: <!-- claims:<profile> begin -->
# measures that are shares of the test items (shown as %, their differences in points)
SHARES = frozenset({"captions_right", "captions_right_single", "images_right", "images_right_single",
                    "judged_right"})
# each arm's own quality, size and cost: (measure key, column), in the order shown; a column no arm has is left out
ARM_COLUMNS = (("steps", "steps"), ("parameters", "parameters"), ("train_seconds", "training (s)"),
               ("psnr_db", "PSNR (dB)"), ("ssim", "SSIM"), ("judged_right", "reconstructions judged right"),
               ("captions_right", "captions naming every object"), ("images_right", "images judged right"),
               ("nll_i2t", "held-out NLL image→text"), ("nll_t2i", "held-out NLL text→image"))


def _key(arm_and_key: Any) -> str:
    """The measure key of a scorecard row's ``method arm`` ("bidirectional: images_right" -> "images_right")."""
    return str(arm_and_key).rpartition(": ")[2]


def _scaled(v: Any, share: bool, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (no exponent for everyday magnitudes); a share in percent with
    one decimal (no sign, no unit); "—" when missing."""
    x = _num(v)
    if x is None:
        return "—"
    if share:
        return f"{100 * x:.1f}"
    if digits >= 4 or x == 0:
        return format_number(x)
    text = f"{x:.{digits}g}"
    return f"{x:.0f}" if "e" in text and 1e-3 <= abs(x) < 1e7 else text  # 12,345 as 12345, not 1.23e+04


def _value(v: Any, share: bool) -> str:
    """An arm's mean: "74.3%" for a share, "3.916" otherwise."""
    text = _scaled(v, share)
    return text + "%" if share and text != "—" else text


def _interval(row: Mapping[str, Any], share: bool) -> str:
    """"+3.3 points [-9.2, 15.8]" for a share, "+0.0033 [-0.0524, 0.0591]" otherwise (three significant digits);
    "—" when not measured."""
    d = _num(row.get("difference"))
    if d is None:
        return "—"
    text = _scaled(d, share, 3)
    sign = "+" if d > 0 and text.strip("0.") else ""
    unit = " points" if share else ""
    return f"{sign}{text}{unit} [{_scaled(row.get('low'), share, 3)}, {_scaled(row.get('high'), share, 3)}]"


def _margin(row: Mapping[str, Any], share: bool) -> str:
    text = _scaled(row.get("margin"), share)
    return text + " points" if share and text != "—" else text


def _p(v: Any) -> str:
    x = _num(v)
    return "—" if x is None else (f"{x:.2f}" if x >= 0.1 else f"{x:.2g}")  # 0.50, 0.069, 0.0023


DECIDED = (SUPPORTED, CONTRADICTED, NO_DIFFERENCE)


def _seeds_needed(v: Any, verdict: str) -> str:
    """About how many seeds would bring an undecided primary's MDE to its margin; "—" for a decided row (the
    number would answer a question the run has settled)."""
    x = _num(v)
    return "—" if x is None or verdict.split(":")[0] in DECIDED else f"{int(x):,}"


def run_line(data: Mapping[str, Any], manifest: Mapping[str, Any], profile: str) -> str:
    """Where and how the scorecard was made: the results file's own record of the run when it has one, else the
    manifest's (the run that last wrote it), for notebook 07's commit, seconds and peak memory its entry."""
    entry = next((n for n in manifest.get("notebooks") or [] if isinstance(n, dict) and n.get("name") == NOTEBOOK),
                 {})
    ran = data.get("run") if isinstance(data.get("run"), dict) else {}
    if not ran and not entry.get("from_earlier_run"):  # the manifest's machine is notebook 07's own
        cpu = manifest.get("cpu") if isinstance(manifest.get("cpu"), dict) else {}
        packages = manifest.get("packages") if isinstance(manifest.get("packages"), dict) else {}
        ran = {"commit": entry.get("commit") or manifest.get("commit"), "machine": manifest.get("machine"),
               "cpu": cpu, "precision": manifest.get("precision"), "torch": packages.get("torch")}
    cpu = ran.get("cpu") if isinstance(ran.get("cpu"), dict) else {}
    plan = ran.get("precision")
    seconds, peak = _num(data.get("seconds")) or _num(entry.get("seconds")), _num(entry.get("peak_rss_mib"))
    facts = [f"commit {ran.get('commit') or entry.get('commit') or '?'}",
             str(ran.get("machine") or "machine not recorded"),
             f"CPU model {cpu.get('model', '?')}", f"CPU class {cpu.get('class', '?')}",
             describe_plan(plan) if isinstance(plan, dict) and "augvae" in plan else "precision not recorded",
             f"torch {ran.get('torch') or '?'}",
             f"notebook 07 {seconds:,.0f} s" if seconds is not None else "wall time not recorded"]
    if peak is not None:
        facts.append(f"peak memory {peak:,.0f} MiB")
    if entry.get("run_started"):
        facts.append(f"started {entry['run_started']}")
    seeds = ", ".join(str(s) for s in data["seeds"]) if isinstance(data.get("seeds"), list) else "?"
    return (f"Profile `{profile}`, seeds {seeds} ({'; '.join(facts)}); generated by `python -m lverse_core results "
            f"--profile {profile} --claims-doc`.")


def _kid_images_used(measures: Any) -> list[int]:
    """How many images claim 6's KIDs compared on each seed that measured them (``kid_images``)."""
    if not isinstance(measures, dict):
        return []
    used = []
    for seed in sorted(measures, key=str):
        arms = measures[seed]
        record = arms.get("bidirectional") if isinstance(arms, dict) else None
        value = _num(record.get("kid_images")) if isinstance(record, dict) else None
        if value is not None:
            used.append(int(value))
    return used


def _budget_line(b: Any, measures: Any = None) -> str:
    """The budgets every arm shared; a value that is not a whole number (a hand-edited file) is left out. Claim 6's
    image count is the one its KIDs used where that differs from the setting (the test split is smaller)."""
    if not isinstance(b, dict):
        return ""
    n = {k: int(v) for k, v in b.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
         and _num(v) is not None}
    parts = []
    if "ml_steps" in n and "sl_steps" in n:
        parts.append(f"AugVAE-ML {n['ml_steps']:,} + SL {n['sl_steps']:,} steps")
    if "biart_steps" in n:
        parts.append(f"BiART {n['biart_steps']:,} steps per arm (one-direction controls {n['biart_steps'] // 2:,})")
    if "eval_images" in n:
        parts.append(f"{n['eval_images']} test images and prompts per seed")
    if "blur_images" in n:
        used = sorted(set(_kid_images_used(measures)))
        if used and used != [n["blur_images"]]:
            parts.append(f"claim 6's KIDs on {', '.join(map(str, used))} test images and as many generated "
                         f"(`claims.blur_images` {n['blur_images']}: the test split has fewer)")
        else:
            parts.append(f"claim 6's KIDs on {n['blur_images']} test images and as many generated")
    if "n_candidates" in n:
        parts.append(f"{n['n_candidates']} image candidates")
    return ("Budgets: " + ", ".join(parts) + ".") if parts else ""


def arms_table(measures: Any) -> str:
    """One row per seed and arm: its steps, parameters, training time and own quality."""
    if not isinstance(measures, dict) or not measures:
        return "no arm was measured"
    rows, used = [], set()
    for seed, arms in measures.items():
        for arm, m in (arms.items() if isinstance(arms, dict) else ()):
            m = m if isinstance(m, dict) else {}
            used |= {k for k, _ in ARM_COLUMNS if _num(m.get(k)) is not None}
            rows.append((seed, arm, m))
    columns = [(k, label) for k, label in ARM_COLUMNS if k in used]

    def cell(m: Mapping[str, Any], k: str) -> str:
        x = _num(m.get(k))
        if x is None:
            return ""
        if k in ("steps", "parameters", "train_seconds"):
            return f"{x:,.0f}"
        return _value(x, k in SHARES)

    return _markdown_table(["seed", "arm"] + [label for _, label in columns],
                           [[seed, arm] + [cell(m, k) for k, _ in columns] for seed, arm, m in rows])


def scorecard_table(card: Any) -> tuple[str, list[str]]:
    """The measured rows in the docs' columns, and one line per reason rows were not measured."""
    rows, missing = [], {}
    shown: set[str] = set()
    for r in card if isinstance(card, list) else []:
        if not isinstance(r, dict):
            continue
        verdict = str(r.get("verdict", ""))
        if _num(r.get("difference")) is None:
            why = verdict.split(":", 1)[1].strip() if ":" in verdict else (verdict or "no value")
            missing.setdefault(why, []).append(f"{_claim_id(r)} {r.get('measure') or '?'}")
            continue
        share = _key(r.get("method arm")) in SHARES
        claim = str(r.get("claim", ""))
        rows.append([_claim_id(r) if claim in shown else claim, r.get("measure"), r.get("role"),
                     _value(r.get("method"), share), _value(r.get("control"), share), _interval(r, share),
                     _scaled(r.get("level"), False), _margin(r, share), _scaled(r.get("MDE"), share, 3),
                     _p(r.get("p")), _seeds_needed(r.get("seeds needed"), verdict), verdict])
        shown.add(claim)
    table = _markdown_table(["claim", "measure", "role", "method", "control", "difference [interval]", "level",
                             "margin", "MDE", "p", "seeds needed", "verdict"], rows) if rows else "no row was measured"
    notes = [f"{why} ({len(what)} row{'s' if len(what) != 1 else ''}: {', '.join(what)})"
             for why, what in missing.items()]
    return table, notes


def _claim_id(row: Mapping[str, Any]) -> str:
    return str(row.get("claim", "")).split(" ", 1)[0]


def _sentence(card: Any) -> str:
    primaries = [r for r in card if isinstance(r, dict) and r.get("role") == "primary"] if isinstance(card, list) \
        else []
    counts: dict[str, int] = {}
    for r in primaries:
        v = str(r.get("verdict", "")).split(":")[0] or "?"
        counts[v] = counts.get(v, 0) + 1
    seeds = next((r.get("seeds") for r in primaries if r.get("seeds")), "?")
    if not primaries:
        return "No primary measure in this run."
    family = _holm_family(card)
    how = ("Holm over the six declared, a claim not run counting as not rejected" if family == 6 else
           f"Holm over the {family} measured" if family else "Holm-corrected")
    return (f"Of the {len(primaries)} primary measures of this run (one per claim; {how}) over {seeds} seeds: "
            + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".")


def _holm_family(card: list) -> int | None:
    """How many primaries the run's Holm correction counted, read back from the levels: the smallest p's interval
    is at ``1 - alpha / m``, alpha from a secondary row's level (the profile's). Six since the correction counts
    every declared primary; results files written before counted only the measured ones. None if unknown."""
    rows = [r for r in card if isinstance(r, dict)]
    levels = [_num(r.get("level")) for r in rows
              if r.get("role") == "primary" and _num(r.get("difference")) is not None]
    secondary = [_num(r.get("level")) for r in rows if r.get("role") == "secondary"]
    base = next((x for x in secondary if x is not None and 0 < x < 1), 0.95)
    top = max((x for x in levels if x is not None and 0 < x < 1), default=None)
    return round((1 - base) / (1 - top)) if top is not None else None


def claims_markdown(cfg) -> str:
    """The block's text for ``cfg``'s report folder (ResultsError when there is no claims run to describe)."""
    root = cfg.reports_root
    manifest = load_manifest(root, cfg.profile)
    path = root / "results" / f"{RESULTS_NAME}.json"
    if not path.exists():
        raise ResultsError(f"{path} is missing: no claims run of profile {cfg.profile} here yet; run `make claims "
                           f"PROFILE={cfg.profile}` (notebook 07) first")
    try:
        data = read_result(path)
    except UnreadableResult as e:
        raise ResultsError(f"{e}; run `make claims PROFILE={cfg.profile}` again to rewrite it") from None
    card = data.get("scorecard")
    table, notes = scorecard_table(card)
    out = [run_line(data, manifest, cfg.profile), ""]
    budget = _budget_line(data.get("budgets"), data.get("measures"))
    if budget:
        out += [budget, ""]
    out += ["Each arm's own quality, size and cost, seed by seed:", "", arms_table(data.get("measures")), "",
            "The scorecard (difference = method − control, the mean over seeds; a primary's interval at its Holm "
            "step's level and its Holm-adjusted p; MDE: the smallest true difference the design detects at that "
            "level with 80% power; seeds needed: for a primary not decided, about how many seeds would bring its "
            "MDE to its margin; shares in %, their differences in points). " + _sentence(card), "", table, ""]
    if notes:
        out += ["Rows not measured in this run: " + "; ".join(notes) + ".", ""]
    gaps = [g for g in data.get("shortfall") or [] if isinstance(g, str)]
    if gaps:
        out += ["The notebook's shortfall lines:", ""] + [f"- {g}" for g in gaps] + [""]
    return scrub_local_paths("\n".join(out))


def claims_doc_text(cfg, doc: Path = CLAIMS_DOC) -> str:
    """The refreshed text of ``doc``, or ResultsError (nothing written) when its markers for ``cfg.profile`` are
    missing, doubled or out of order, or there is no claims run to describe."""
    text = _read_readme(doc)
    replace_block(text, cfg.profile, "", str(doc), kind=KIND)  # the markers first: their error is the cheaper one
    return replace_block(text, cfg.profile, claims_markdown(cfg), str(doc), kind=KIND)


def write_claims_doc(doc: Path, text: str) -> Path:
    """``claims_doc_text``'s result into ``doc`` (atomically, keeping its permissions)."""
    return _write_text(doc, text)
