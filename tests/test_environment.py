"""The install files agree, and the notebooks are stored clean with a parameters cell."""
import json
import re
import tomllib

import yaml

from lverse_core.config import REPO_ROOT
from lverse_core.pipeline.execute import list_notebooks
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


def test_notebooks_clean_and_parameterised():
    books = list_notebooks()
    assert books, "no notebooks found"
    for path in books:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert not any(c.get("outputs") for c in code), f"{path.name} has stored outputs"
        assert not any(c.get("execution_count") for c in code), f"{path.name} has execution counts"
        params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params) == 1, f"{path.name}: expected one cell tagged 'parameters'"
        src = "".join(params[0]["source"])
        assert re.search(r'^PROFILE = "\w+"', src, re.M), f"{path.name}: no PROFILE parameter"
        assert nb["cells"][0]["cell_type"] == "markdown", f"{path.name} must open with its paper section"


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
