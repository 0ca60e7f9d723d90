"""The kit's benchmarks (``python -m bench``); helpers shared by the scripts."""
from __future__ import annotations

import json
import resource
import statistics
import time


def finish(out: dict) -> dict:
    """Add this process's peak RSS to a benchmark's result, print it and the result as the last (JSON) line."""
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {out['peak_rss_mib']:.0f} MiB")
    print(json.dumps(out))
    return out


def step_stats(times: list[float]) -> tuple[dict, str]:
    """Per-round step times (s) -> the JSON fields (median and range in ms) and the printed "median [min-max]"."""
    med, lo, hi = statistics.median(times) * 1e3, min(times) * 1e3, max(times) * 1e3
    return {"step_ms_median": med, "step_ms_range": [lo, hi]}, f"{med:.0f} [{lo:.0f}-{hi:.0f}]"


def interleave(runs: dict, step, rounds: int, steps: int) -> None:
    """Round by round, ``steps`` calls of ``step(r)`` for each variant ``r`` of ``runs`` (dicts with a "times" list),
    appending each round's mean seconds per step: a slow spell of a shared machine hits every variant alike."""
    for _ in range(rounds):
        for r in runs.values():
            t0 = time.perf_counter()
            for _ in range(steps):
                step(r)
            r["times"].append((time.perf_counter() - t0) / steps)
