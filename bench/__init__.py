"""The kit's benchmarks (``python -m bench``); helpers shared by the scripts."""
from __future__ import annotations

import json
import resource


def finish(out: dict) -> dict:
    """Add this process's peak RSS to a benchmark's result, print it and the result as the last (JSON) line."""
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {out['peak_rss_mib']:.0f} MiB")
    print(json.dumps(out))
    return out
