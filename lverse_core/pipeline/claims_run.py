"""What notebook 07 calls besides the experiment (``lverse_core.evaluation.claims_experiment``): the scorecard, one
row per claim and measure with the paired interval over seeds (``claims.compare``) and the verdict.
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from lverse_core.evaluation.claims import compare
from lverse_core.evaluation.claims_experiment import CLAIM_ROWS
# the experiment's names, read from here by earlier callers
from lverse_core.evaluation.claims_experiment import _cached, seed_config  # noqa: F401


def scorecard(measures: Mapping[int, Mapping[str, Mapping[str, float]]], level: float = 0.95) -> pd.DataFrame:
    """One row per (claim, measure): method and control means, the paired difference with its interval over
    seeds, and the verdict. ``measures[seed][arm][key]``."""
    seeds = sorted(measures)
    rows = []
    for claim, label, (m_arm, m_key), (c_arm, c_key), better in CLAIM_ROWS:
        try:
            method = [measures[s][m_arm][m_key] for s in seeds]
            control = [measures[s][c_arm][c_key] for s in seeds]
        except KeyError as e:
            raise KeyError(f"claim {claim!r}, {label}: no measure {e} for some seed; run every arm of every seed")
        r = compare(method, control, better, level)
        d = r["difference"]
        rows.append({"claim": claim, "measure": label, "method arm": f"{m_arm}: {m_key}",
                     "control arm": f"{c_arm}: {c_key}", "paper predicts": f"method {better}",
                     "method": r["method"].estimate, "control": r["control"].estimate, "difference": d.estimate,
                     "low": d.low, "high": d.high, "seeds": r["seeds"], "verdict": r["verdict"]})
    return pd.DataFrame(rows)
