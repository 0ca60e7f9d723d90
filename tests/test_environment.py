"""The install files agree (the committed notebooks are checked in test_notebook_sources.py)."""
import re
import tomllib

import yaml

from lverse_core.config import REPO_ROOT
from ._limits import HANG_GUARD_S


def _name(req: str) -> str:
    return re.split(r"[=<>!~\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_pip_section_matches_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r.replace(" ", "") for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-e")}
    assert pins == wanted
    assert "-e ." in pip
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])


def test_every_dependency_is_pinned():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for req in project["dependencies"]:
        assert "==" in req, f"{req} is not pinned"


def test_a_torch_index_installs_the_pinned_torch_from_it_first():
    """`make setup TORCH_INDEX=...` (e.g. PyTorch's CPU-only index) takes the pyproject pins of torch and torchvision
    from that index before the rest; without it nothing changes."""
    import subprocess

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = [r for r in project["dependencies"] if _name(r) in ("torch", "torchvision")]
    index = "https://download.pytorch.org/whl/cpu"
    dry = subprocess.run(["make", "-n", "-W", "pyproject.toml", "setup", f"TORCH_INDEX={index}"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=HANG_GUARD_S, check=True).stdout.splitlines()
    first = next(i for i, line in enumerate(dry) if "--index-url" in line)
    assert dry[first].split("install -q ")[1].split(" --index-url")[0].split() == pins
    assert dry[first].endswith(f"--index-url {index}")
    assert first < next(i for i, line in enumerate(dry) if '-e ".[test]"' in line)
    plain = subprocess.run(["make", "-n", "-W", "pyproject.toml", "setup"], cwd=REPO_ROOT, capture_output=True,
                           text=True, timeout=HANG_GUARD_S, check=True).stdout
    assert "--index-url" not in plain
