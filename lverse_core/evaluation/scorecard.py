"""The claims scorecard (notebook 07): one row per claim and measure, its paired interval, p, minimum detectable
effect and verdict, with the six declared primary measures corrected for multiplicity (Holm).

Rows come from the experiment (``claims_experiment.CLAIM_ROWS``: claim, label, (method arm, key), (control arm,
key), the side the paper predicts) plus ``DERIVED_ROWS``, the comparisons of measures made here from the
experiment's: held-out NLL summed over both directions (``nll_both`` = ``nll_i2t`` + ``nll_t2i``, per item), and
the one-direction models' pair read as one arm (``ONE_DIRECTION``: ``i2t_only``'s image->text NLL plus
``t2i_only``'s text->image NLL). ``measures[seed][arm][key]`` is a number; ``key + "_items"``, when present, its
per-item values (paired across the arms of a seed), and ``key + "_why"`` why a NaN value could not be measured.

Each row: ``statistics.paired_difference`` (seeds, then items within each seed) and ``claims.verdict``.

- **Primary** rows (one per claim, ``claims.primaries``): the p-values of the primaries are Holm-adjusted over all
  m = 6 declared (``statistics.holm``), one this run did not measure counting as p = 1; the j-th smallest is shown
  with its interval at Holm's step level ``1 - alpha / (m - j + 1)``, and is supported or contradicted only if its
  adjusted p <= alpha and that interval clears zero on the side it names (the two agree except past the first step
  Holm does not reject, where the row is inconclusive and says so). Equivalence (*no difference within the
  margin*) uses the same widened interval.
- **Secondary** rows: the interval at ``claims.level``, no correction, no margin (supported, contradicted or
  inconclusive only): they describe, the primaries decide.
- Every row gets its minimum detectable effect at its interval's level and 80% power
  (``statistics.min_detectable_effect``); a primary also the seeds it would need for that to reach its margin.
- A row whose measure is missing or NaN on a seed is *not measured: <why>*; the other rows still decide.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from lverse_core.config import ConfigError
from lverse_core.evaluation.claims_arms import ONE_DIRECTION, claim_number
from lverse_core.evaluation.claims import (CONTRADICTED, INCONCLUSIVE, NO_DIFFERENCE, NOT_MEASURED, SUPPORTED,
                                          float_tolerance, verdict)
from lverse_core.evaluation.statistics import holm, min_detectable_effect, paired_difference, seeds_needed

PRIMARY, SECONDARY = "primary", "secondary"
Row = tuple[str, str, tuple[str, str], tuple[str, str], str]

_CLAIM2 = "2 segment embedding vs none (per-modality positions)"
_CLAIM3 = "3 one bidirectional model vs one-direction models (equal steps per direction)"
_NLL = "held-out NLL, both directions (nats per token)"
DERIVED_ROWS: list[Row] = [
    (_CLAIM2, _NLL, ("bidirectional", "nll_both"), ("no_segment", "nll_both"), "lower"),
    (_CLAIM3, _NLL, ("bidirectional", "nll_both"), (ONE_DIRECTION, "nll_both"), "lower"),
]


def all_rows(rows: Sequence[Row]) -> list[Row]:
    """``rows`` (the experiment's) and the ``DERIVED_ROWS`` of the claims they cover, each comparison once, each
    derived row after the last of its claim's."""
    claims = {claim_number(r[0]) for r in rows}
    seen = {(r[2], r[3]) for r in rows}
    out = list(rows)
    for r in DERIVED_ROWS:
        n = claim_number(r[0])
        if n in claims and (r[2], r[3]) not in seen:
            last = max(i for i, x in enumerate(out) if claim_number(x[0]) == n)
            out.insert(last + 1, r)
    return out


def _sum(arm_a: Mapping[str, Any], key_a: str, arm_b: Mapping[str, Any], key_b: str) -> dict[str, Any] | None:
    """``nll_both`` from two measures (None if either is missing): their sum, per item where both have items."""
    if key_a not in arm_a or key_b not in arm_b:
        return None
    try:
        a, b = float(arm_a[key_a]), float(arm_b[key_b])
    except (TypeError, ValueError):
        return None
    out: dict[str, Any] = {"nll_both": a + b}
    whys = [w for w in (arm_a.get(f"{key_a}_why"), arm_b.get(f"{key_b}_why")) if w]
    if whys:
        out["nll_both_why"] = "; ".join(whys)
    ia, ib = arm_a.get(f"{key_a}_items"), arm_b.get(f"{key_b}_items")
    if isinstance(ia, list) and isinstance(ib, list) and len(ia) == len(ib):
        out["nll_both_items"] = [float(x) + float(y) for x, y in zip(ia, ib)]
    return out


def with_derived(measures: Mapping[int, Mapping[str, Mapping[str, Any]]]) -> dict[int, dict[str, dict[str, Any]]]:
    """A copy of ``measures`` with ``nll_both`` on every arm that has both directions' NLL, claim 6's falls
    (``claims_measures.blur_falls``) on every arm that has the blurred KIDs but not the falls (measures saved
    before ``kid_fall_ceiling`` existed), and the ``ONE_DIRECTION`` arm where both one-direction models have their
    own direction's."""
    from lverse_core.evaluation.claims_measures import blur_falls

    out = copy.deepcopy({s: {a: dict(m) for a, m in by_arm.items()} for s, by_arm in measures.items()})
    for by_arm in out.values():
        for m in by_arm.values():
            m.update(_sum(m, "nll_i2t", m, "nll_t2i") or {})
            if "kid_fall_ceiling" not in m:
                m.update({k: v for k, v in blur_falls(m).items() if k.startswith("kid_fall_ceiling")})
        if "i2t_only" in by_arm and "t2i_only" in by_arm:
            one = _sum(by_arm["i2t_only"], "nll_i2t", by_arm["t2i_only"], "nll_t2i")
            if one is not None:
                by_arm[ONE_DIRECTION] = one
    return out


def primary_rows(primaries: Any, rows: Sequence[Row]) -> dict[int, int]:
    """Which row is each claim's primary: {row index: claim number}, found by claim number, the method arm and
    measure key and the control arm that ``claims.primaries.claim_<n>`` declares. A claim none of ``rows`` covers
    (not run: ``claims.only``) has none; a claim whose rows hold no such comparison is a ConfigError."""
    found = {}
    for f in dataclasses.fields(primaries):
        n, p = int(f.name.split("_")[-1]), getattr(primaries, f.name)
        of_claim = [i for i, r in enumerate(rows) if claim_number(r[0]) == n]
        if not of_claim:
            continue
        hits = [i for i in of_claim if rows[i][2] == (p.method, p.measure) and rows[i][3][0] == p.control]
        if len(hits) != 1:
            listed = "; ".join(f"{rows[i][2][0]}: {rows[i][2][1]} vs {rows[i][3][0]}" for i in of_claim)
            raise ConfigError(
                f"claims.primaries.{f.name}: {p.method}: {p.measure} vs {p.control} matches {len(hits)} rows of "
                f"claim {n}; declare one of its rows (method arm: measure key vs control arm): {listed}")
        found[hits[0]] = n
    return found


def _values(measures: Mapping[int, Any], seeds: Sequence[int], arm: str, key: str) -> tuple[list[Any] | None, str]:
    """The arm's ``key`` on every seed (per-item lists where every seed has them) and a note, or None and why
    not."""
    values, items = [], []
    for s in seeds:
        m = measures[s].get(arm)
        if m is None:
            return None, f"no arm {arm} on seed {s}"
        if key not in m:
            extra = " (made from nll_i2t and nll_t2i)" if key == "nll_both" else ""
            return None, f"no {arm}: {key}{extra} on seed {s}"
        try:  # a NaN read from a results file (strict JSON) is null: the same NaN, with its why
            v = math.nan if m[key] is None else float(m[key])
        except (TypeError, ValueError):
            return None, f"{arm}: {key} is not a number on seed {s} ({str(m[key])[:40]!r})"
        if not math.isfinite(v):
            why = m.get(f"{key}_why")
            return None, f"{arm}: {key} is {v} on seed {s}" + (f" ({why})" if why else "")
        values.append(v)
        items.append(m.get(f"{key}_items"))
    if all(i is not None for i in items):
        try:
            arrays = [np.asarray(i, dtype=np.float64).reshape(-1) for i in items]
        except (TypeError, ValueError):
            return None, f"{arm}: {key}_items is not a list of numbers"
        if any(len(a) == 0 or not np.isfinite(a).all() for a in arrays):
            return None, f"{arm}: {key}_items is empty or holds a non-finite value"
        off = [s for s, v, a in zip(seeds, values, arrays) if abs(a.mean() - v) > 1e-6 * max(1.0, abs(v))]
        # e.g. corpus BLEU-4 beside its per-caption scores: the row compares the per-item mean
        return [a.tolist() for a in arrays], (f"{arm}: {key} is not the mean of its items on seed {off[0]}; the "
                                              f"row compares the items' mean" if off else "")
    return values, ""


def _pair(method: list[Any], control: list[Any]) -> tuple[list[Any], list[Any], str]:
    """Per-item lists when both arms have them and they pair up on every seed, else the seeds' values."""
    if all(isinstance(v, list) for v in (*method, *control)):
        if all(len(a) == len(b) for a, b in zip(method, control)):
            return method, control, ""
        return ([float(np.mean(v)) for v in method], [float(np.mean(v)) for v in control],
                "items not paired (different counts): seeds only")
    return ([float(np.mean(v)) for v in method], [float(np.mean(v)) for v in control], "")


def scorecard(measures: Mapping[int, Mapping[str, Mapping[str, Any]]], claims: Any, rows: Sequence[Row] | None = None,
              resamples: int = 4000) -> pd.DataFrame:
    """One row per (claim, measure) of ``rows`` (default ``CLAIM_ROWS``) and ``DERIVED_ROWS``, decided as the
    module docstring says; ``claims`` is the profile's ``claims`` section (``level``, ``primaries``)."""
    if rows is None:
        from lverse_core.evaluation.claims_experiment import CLAIM_ROWS
        rows = CLAIM_ROWS
    rows = all_rows(rows)
    primary = primary_rows(claims.primaries, rows)
    level, alpha = claims.level, 1 - claims.level
    measures = with_derived(measures)
    seeds = sorted(measures)
    out, diffs = [], {}
    for i, (claim, label, (m_arm, m_key), (c_arm, c_key), better) in enumerate(rows):
        n = primary.get(i)
        margin = getattr(claims.primaries, f"claim_{n}").margin if n is not None else None
        row: dict[str, Any] = {
            "claim": claim, "measure": label, "role": PRIMARY if n is not None else SECONDARY,
            "method arm": f"{m_arm}: {m_key}", "control arm": f"{c_arm}: {c_key}", "paper predicts": f"method {better}",
            "method": math.nan, "control": math.nan, "difference": math.nan, "low": math.nan, "high": math.nan,
            "level": level, "margin": margin if margin is not None else math.nan, "MDE": math.nan, "p": math.nan,
            "seeds needed": math.nan, "verdict": "", "seeds": len(seeds), "items": 0, "note": ""}
        method, why = _values(measures, seeds, m_arm, m_key)
        control, why_c = _values(measures, seeds, c_arm, c_key) if method is not None else (None, "")
        if method is None or control is None:
            row["verdict"] = f"{NOT_MEASURED}: {why if method is None else why_c}"
            out.append(row)
            continue
        method, control, note = _pair(method, control)
        note = "; ".join(x for x in (why, why_c, note) if x)
        try:
            d = paired_difference(method, control, level, resamples, seed=i)
        except ValueError as e:  # e.g. no seeds at all: this row, not the scorecard
            row["verdict"] = f"{NOT_MEASURED}: {e}"
            out.append(row)
            continue
        diffs[i] = (d, float_tolerance(method, control), better)
        row.update({"method": float(np.mean([np.mean(v) for v in method])),
                    "control": float(np.mean([np.mean(v) for v in control])), "difference": d.estimate,
                    "low": d.low, "high": d.high, "p": d.p, "items": d.items,
                    "MDE": min_detectable_effect(d.se, d.df, level),
                    "note": "; ".join(x for x in (note, d.note) if x),
                    "verdict": verdict(d.low, d.high, better, diffs[i][1])})
        out.append(row)
    _holm(out, diffs, primary, alpha, len(dataclasses.fields(claims.primaries)))
    return pd.DataFrame(out)


def _holm(out: list[dict[str, Any]], diffs: Mapping[int, Any], primary: Mapping[int, int], alpha: float,
          family: int) -> None:
    """The measured primaries: Holm-adjusted p over the ``family`` declared primaries (one per claim, six), the
    interval at Holm's step level, the verdict (module docstring). A declared primary this run did not measure (a
    claim not run, a measure undefined) counts as a p of 1, never rejected: a verdict of a run of some claims is
    one that Holm over all six would also give, whatever the others' p turn out to be."""
    measured = [i for i in primary if i in diffs]
    if not measured:
        return
    m = len(measured)
    family = max(family, m)
    adjusted = holm([diffs[i][0].p for i in measured] + [1.0] * (family - m))[:m]
    order = sorted(range(m), key=lambda k: diffs[measured[k]][0].p)
    for step, k in enumerate(order):
        i, p_adj = measured[k], adjusted[k]
        d, tol, better = diffs[i]
        wide = d.at_level(1 - alpha / (family - step))
        margin = out[i]["margin"]
        v = verdict(wide.low, wide.high, better, tol, margin)
        note = out[i]["note"]
        if v in (SUPPORTED, CONTRADICTED) and p_adj > alpha:  # past the first primary Holm does not reject
            v = NO_DIFFERENCE if -margin <= wide.low and wide.high <= margin else INCONCLUSIVE
            note = "; ".join(x for x in (note, "Holm stopped at an earlier primary") if x)
        out[i].update({"low": wide.low, "high": wide.high, "level": wide.level, "p": p_adj, "verdict": v,
                       "MDE": min_detectable_effect(d.se, d.df, wide.level), "note": note,
                       "seeds needed": seeds_needed(d.se, d.seeds, margin, wide.level) or math.nan})


def shortfall(card: pd.DataFrame) -> list[str]:
    """One sentence per primary that did not decide: its minimum detectable effect against its margin, and the
    seeds it would need (at the same items per seed)."""
    out = []
    for _, r in card[card["role"] == PRIMARY].iterrows():
        if r["verdict"].startswith(NOT_MEASURED):
            out.append(f"claim {claim_number(r['claim'])} ({r['measure']}): {r['verdict']}")
        elif r["verdict"] == INCONCLUSIVE:
            need = (f"about {int(r['seeds needed'])} seeds would bring it to the margin" if
                    math.isfinite(r["seeds needed"]) else "more than 1,000 seeds (or a spread to estimate) would be "
                                                           "needed to reach the margin")
            out.append(f"claim {claim_number(r['claim'])} ({r['measure']}): inconclusive over {r['seeds']} seeds; "
                       f"the smallest difference it detects (80% power) is {r['MDE']:.3g} against a margin of "
                       f"{r['margin']:.3g}: {need}")
    return out
