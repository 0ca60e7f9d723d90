"""The documentation a user reads on a fresh clone: README is a short guide, every relative link in README, docs/
and bench/README.md resolves, no file speaks of the team's work history, and LICENSE and CITATION.cff say what
research code carries."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests._limits import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
README_MAX_LINES = 220
CELL_MAX_CHARS = 250
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".sh", ".cff", ".json", ".csv", ".html"}
TEXT_NAMES = {"Makefile", "run", "LICENSE", ".gitignore"}
# CHANGELOG.md is the project's history by design; this file names the phrases it looks for.
HISTORY_EXEMPT = {"CHANGELOG.md", "tests/test_docs.py"}

# Phrases that refer to the team's own work history, not to the method: numbered or ordinal rounds of work, issue
# and ticket numbers, work sessions. POSIX sessions (start_new_session, os.setsid, "its own session") and pytest's
# scope="session" are not matched.
HISTORY = [
    (re.compile(r"\bround \d+\b", re.I), "a numbered round of work"),
    (re.compile(r"\b(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|next|previous|earlier|later|"
                r"this|last) round\b(?! of (?:timing|steps))", re.I), "a round of work"),
    (re.compile(r"\bissues? ?#? ?\d+", re.I), "an issue number"),
    (re.compile(r"\btickets?\b", re.I), "a ticket"),
    (re.compile(r"\b(?:this|previous|earlier|next|later|last|our|my|work|working|pairing) sessions?\b", re.I),
     "a work session"),
    (re.compile(r"\bsessions? (?:of work|notes|log)\b", re.I), "a work session"),
]


def tracked_text_files() -> list[Path]:
    """Every file git tracks (or, outside a git checkout, every file under the repository) that is text."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True,
                             timeout=HANG_GUARD_S).stdout.decode()
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.SubprocessError):
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file() and ".git" not in p.parts]
    files = []
    for name in names:
        p = REPO / name
        if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.name in TEXT_NAMES) and p.suffix != ".ipynb":
            files.append(p)
    return files


def history_references(path: Path, text: str) -> list[str]:
    hits = []
    for n, line in enumerate(text.splitlines(), 1):
        for pattern, what in HISTORY:
            m = pattern.search(line)
            if m:
                hits.append(f"{path}:{n}: {what}: {m.group(0)!r}")
    return hits


@pytest.mark.parametrize("line, found", [
    ("## Third round: codebook size (2026-11-28)", True),
    ("measured in round 3 of the tuning", True),
    ("as issue 8 asked", True),
    ("(issue #10, item 11)", True),
    ("see the ticket", True),
    ("found in an earlier session", True),
    ("subprocess.Popen(cmd, start_new_session=True)", False),
    ("os.setsid()", False),
    ('@pytest.fixture(scope="session")', False),
    ("a child in its own session (as Jupyter starts kernels)", False),
    ("a grandchild in that session's group", False),
    ("the variants interleaved round by round", False),
    ("5 rounds of 4 steps", False),
])
def test_history_patterns_match_history_and_nothing_else(line, found):
    assert bool(history_references(Path("x.md"), line)) is found


def test_no_file_speaks_of_the_teams_work_history():
    hits = []
    for path in tracked_text_files():
        rel = path.relative_to(REPO).as_posix()
        if rel in HISTORY_EXEMPT:
            continue
        hits += history_references(Path(rel), path.read_text(encoding="utf-8", errors="replace"))
    assert not hits, "references to the team's work history (say what was measured, not when or by whom):\n" + \
        "\n".join(hits)


def test_readme_is_a_short_guide_with_the_two_commands_and_the_generated_block():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move long material to docs/"
    assert "make reproduce" in text and "make test" in text
    begin, end = "<!-- results:smoke begin -->", "<!-- results:smoke end -->"
    assert text.count(begin) == 1 and text.count(end) == 1 and text.index(begin) < text.index(end)
    for heading in ("## Two commands", "## What you get", "## Profiles", "## Layout"):
        assert heading in lines, f"README.md lacks its section {heading!r}"


def table_cells(text: str):
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("|"):
            for cell in re.split(r"(?<!\\)\|", line.strip().strip("|")):
                yield n, cell.strip()


def test_no_readme_table_cell_is_a_paragraph():
    long = [f"README.md:{n}: {len(c)} characters: {c[:60]}..."
            for n, c in table_cells(README.read_text(encoding="utf-8")) if len(c) > CELL_MAX_CHARS]
    assert not long, "table cells over %d characters:\n" % CELL_MAX_CHARS + "\n".join(long)


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(path: Path) -> list[tuple[int, str]]:
    links = []
    in_code = False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        for m in LINK.finditer(line):
            target = m.group(1) or m.group(2)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#"):
                links.append((n, target))
    return links


def doc_pages() -> list[Path]:
    return [README, REPO / "bench" / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]


def test_every_relative_link_of_the_docs_resolves():
    broken = []
    for page in doc_pages():
        for n, target in relative_links(page):
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(REPO)}:{n}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_the_link_check_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [gone](docs/nothing.md) [web](https://example.org) [top](#top)\n"
                    "```\n[in code](not/checked.md)\n```\n![figure](figures/missing.png)\n")
    assert relative_links(page) == [(1, "page.md"), (1, "docs/nothing.md"), (5, "figures/missing.png")]


def test_readme_layout_names_every_profile_and_notebook():
    text = README.read_text(encoding="utf-8")
    for cfg in sorted((REPO / "configs").glob("*.yaml")):
        assert cfg.stem in text, f"README.md does not mention the profile {cfg.stem}"
    for nb in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py")):
        assert nb.stem in text, f"README.md's notebooks table lacks {nb.stem}"
    for package in sorted(p.name for p in (REPO / "lverse_core").iterdir()
                          if p.is_dir() and (p / "__init__.py").exists()):
        assert f"{package}/" in text, f"README.md's layout lacks lverse_core/{package}/"


def test_bench_readme_has_a_section_for_every_benchmark_script():
    text = (REPO / "bench" / "README.md").read_text(encoding="utf-8")
    scripts = [p.name for p in sorted((REPO / "bench").iterdir())
               if p.suffix in (".py", ".sh") and not p.name.startswith("_")]
    assert scripts
    missing = [name for name in scripts if f"`{name}`" not in text]
    assert not missing, f"bench/README.md does not say what these measure or how to run them: {missing}"


def test_every_deviation_names_its_key_or_says_it_has_none():
    rows = [line for line in (REPO / "docs" / "deviations.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and not line.startswith("| departure") and not line.startswith("| ---")]
    assert len(rows) >= 30
    for row in rows:
        key = row.strip().strip("|").split("|")[-1]
        assert "`" in key or "not a key" in key or key.strip().startswith("(part of"), \
            f"docs/deviations.md: a departure without its config key or 'not a key': {row[:80]}"


def test_license_is_mit():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text


def test_citation_cff_has_the_required_keys_and_cites_the_paper():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):  # the keys CFF 1.2.0 requires
        assert cff.get(key), f"CITATION.cff lacks {key}"
    assert all("name" in a or "family-names" in a for a in cff["authors"])
    paper = cff["preferred-citation"]
    for key in ("type", "title", "authors"):
        assert paper.get(key), f"CITATION.cff preferred-citation lacks {key}"
    assert paper["title"] == "L-Verse: Bidirectional Generation Between Image and Text"
    assert paper["year"] == 2022
    names = [(a["given-names"], a["family-names"]) for a in paper["authors"]]
    assert names[0] == ("Taehoon", "Kim") and names[-1] == ("Kyunghoon", "Bae") and len(names) == 9
    assert any("2111.11133" in str(i.get("value")) for i in paper.get("identifiers", []))
