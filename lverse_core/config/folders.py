"""Where a profile's files are: the work directory, the profile YAMLs, the folders a profile may name, and the record
(``overrides.json``) that ties a run folder to the overrides it was made with."""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import lverse_core.config as package  # the package this module is part of (for its CONFIG_DIR, read at call time)
from lverse_core.config.errors import ConfigError, short

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG_DIR = REPO_ROOT / "configs"

# A profile name is a plain file stem: it becomes part of paths (configs/<name>.yaml, data/<name>, runs/<name>,
# reports/<name>), so separators or '..' would read a YAML outside configs/ and write outside the work directory.
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")

# Keys that name the profile's output folders. A profile YAML keeps them relative and inside the work directory; a
# run's OVERRIDES may not set them at all (profiles.RESERVED_OVERRIDES).
OUTPUT_FOLDER_KEYS = ("runs_dir", "reports_dir", "data.root")


def workdir() -> Path:
    """Where relative outputs (data, runs, reports) go: ``LVERSE_WORKDIR`` (e.g. a test's tmp dir) or the repo root.

    A relative ``LVERSE_WORKDIR`` is taken against the current directory and written back to the environment as an
    absolute path, so the notebook kernels and subprocesses started later (with another cwd: the runner starts
    kernels in the repo root) use the same folder instead of splitting the run in two.
    """
    value = os.environ.get("LVERSE_WORKDIR")
    if not value:
        return REPO_ROOT
    p = Path(value).expanduser()
    if not p.is_absolute():
        p = p.absolute()
        os.environ["LVERSE_WORKDIR"] = str(p)
    return p


def config_dir() -> Path:
    """The folder of the profile YAMLs: ``lverse_core.config.CONFIG_DIR``, read when called, so a tool or test that
    points the package's ``CONFIG_DIR`` elsewhere moves every reader of profiles with it."""
    return package.CONFIG_DIR


def available_profiles() -> list[str]:
    return sorted(p.stem for p in config_dir().glob("*.yaml") if PROFILE_NAME.fullmatch(p.stem))


def check_profile_name(name: Any) -> None:
    if not isinstance(name, str) or not PROFILE_NAME.fullmatch(name):
        raise ConfigError(f"profile name {name!r} is not a plain name (letters, digits, '_' and '-' only; it names "
                          f"configs/<name>.yaml); valid profiles: {', '.join(available_profiles())}")


def check_profile_folders(tree: dict[str, Any], path: Path) -> None:
    """The output folders a profile YAML sets are relative and stay inside the work directory: ``LVERSE_WORKDIR``
    is the one setting that moves every output (docs/running.md), and no profile of the kit sets an absolute folder."""
    for key in OUTPUT_FOLDER_KEYS:
        node: Any = tree
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, str):
            continue  # not set here, or of the wrong type (validation names it)
        rel = Path(node.replace("{profile}", "x"))
        if rel.is_absolute() or os.path.normpath(rel).split(os.sep)[0] == "..":
            raise ConfigError(f"{path}: {key} = {node!r} leaves the work directory; a profile's folders are relative "
                              f"to it (e.g. '{key.split('.')[-1] if key != 'data.root' else 'data'}/{{profile}}'). "
                              f"To write elsewhere, set LVERSE_WORKDIR")


def overrides_tag(overrides: dict[str, Any]) -> str:
    """A stable name for a set of overrides: 16 hex digits (64 bits) of their canonical JSON's SHA-256, so two
    different sets practically never share folders; ``load_run_config`` also checks ``overrides.json`` in the run
    folder against the overrides it stands for."""
    return hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_folders(tag: str, moves_data: bool) -> dict[str, str]:
    """The folder settings of a run with overrides tagged ``tag``: its own runs/ and reports/ folders, and its own
    data/ folder when the overrides change the data set (``moves_data``)."""
    folders = {"runs_dir": f"runs/{{profile}}+{tag}", "reports_dir": f"reports/{{profile}}+{tag}"}
    if moves_data:
        folders["data.root"] = f"data/{{profile}}+{tag}"
    return folders


def check_run_record(runs: Path, record: dict[str, Any]) -> None:
    """Write ``overrides.json`` into a new run folder; in an existing one, refuse a record of other overrides."""
    path = runs / "overrides.json"
    if path.exists():
        try:
            held = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path} cannot be read ({type(e).__name__}: {e}), so what {runs} holds is unknown; "
                              f"move that folder away and run again") from None
        if not isinstance(held, dict) or {k: held.get(k) for k in record} != record:
            said = {k: held.get(k) for k in record} if isinstance(held, dict) else held
            raise ConfigError(f"{path} records another run ({short(said)}) than these overrides "
                              f"({short(record)}); the folder is not reused. Move {runs} away (or compare the two) "
                              f"and run again")
        return
    runs.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(path)
