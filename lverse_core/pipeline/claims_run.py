"""The claims scorecard under its earlier import path; it lives in ``lverse_core.evaluation.scorecard`` (and the
experiment in ``lverse_core.evaluation.claims_experiment``)."""
from __future__ import annotations

from lverse_core.evaluation.scorecard import scorecard  # noqa: F401
