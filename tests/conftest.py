"""Shared fixtures. Every test that writes data, runs or reports does it under a tmp dir (LVERSE_WORKDIR)."""
import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Point every relative output path of the profiles (data/, runs/, reports/) at a fresh tmp dir."""
    monkeypatch.setenv("LVERSE_WORKDIR", str(tmp_path))
    return tmp_path
