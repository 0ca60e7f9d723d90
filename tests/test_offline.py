"""The offline guard (tests/offline_site/sitecustomize.py) that the ci pipeline fixture runs under: any process
started with it (a notebook kernel, a worker) cannot reach the network but keeps loopback (kernel <-> runner)."""
from __future__ import annotations

import os
import subprocess
import sys

from ._limits import HANG_GUARD_S
from .conftest import offline_env

PROBE = """
import socket, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname(), timeout=5); c.close()  # loopback: allowed
try:
    socket.create_connection(("93.184.216.34", 80), timeout=5)
    print("REACHED")
except OSError as e:
    print("BLOCKED" if "network access blocked" in str(e) else f"OTHER {e}")
try:
    socket.socket(socket.AF_INET6).connect(("2001:4860:4860::8888", 53))
except OSError as e:
    print("BLOCKED6" if "network access blocked" in str(e) else f"OTHER6 {e}")
import urllib.request
try:
    urllib.request.urlopen("http://93.184.216.34/", timeout=5)
except OSError as e:
    print("URLLIB", "network access blocked" in str(e))
"""


def test_processes_started_under_the_guard_have_loopback_but_no_network(tmp_path):
    out = subprocess.run([sys.executable, "-c", PROBE], env=offline_env(dict(os.environ)), capture_output=True,
                         text=True, timeout=HANG_GUARD_S, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["BLOCKED", "BLOCKED6", "URLLIB", "True"], out.stdout


def test_the_guard_is_off_unless_asked_for():
    env = {k: v for k, v in offline_env(dict(os.environ)).items() if k != "LVERSE_BLOCK_NETWORK"}
    code = "import socket, sitecustomize; print(socket.socket.connect is socket._socket.socket.connect)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.stdout.strip() == "True", out.stderr
