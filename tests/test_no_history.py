"""Code, configs and tests say why a value is what it is, not which past run found it, and name no path of the
machine they were written on; the README is for users (short, no run history). The runs themselves are in
docs/RESEARCH_LOG.md, which code may cite by anchor."""
from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", ".venv", "output_dir", "datasets", "__pycache__", ".pytest_cache", "shared"}
SOURCE_SUFFIXES = {".py", ".yaml", ".yml", ".sh", ".toml", ".cfg", ".ipynb"}
HISTORY = re.compile(r"\b(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth) session\b"
                     r"|\bfinding \d|\bwork period", re.I)
RUN_LABEL = re.compile(r"\brun [A-E]\b")  # "run D"; case-sensitive, so "run a command" is fine
MACHINE_PATH = re.compile(r"/work/|/tmp/")


def source_files() -> list[Path]:
    files = []
    for folder, subfolders, names in os.walk(REPO):
        subfolders[:] = [d for d in subfolders if d not in SKIP_DIRS]  # never walk into .venv or data
        files += [Path(folder) / n for n in names if Path(n).suffix in SOURCE_SUFFIXES]
    return files


def offending_lines(paths: list[Path], *patterns: re.Pattern) -> list[str]:
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if any(p.search(line) for p in patterns):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    return found


def test_the_scan_sees_the_code():
    names = {p.relative_to(REPO).as_posix() for p in source_files()}
    assert {"kolmogorov_tokenizers/config.py", "engine/configs/quickstart_full.yaml",
            "run_scripts/quickstart.sh", "pyproject.toml"} <= names


def test_no_history_in_code_configs_and_tests():
    this = Path(__file__).resolve()
    found = offending_lines([p for p in source_files() if p.resolve() != this], HISTORY, RUN_LABEL)
    assert not found, "say the reason or cite docs/RESEARCH_LOG.md#anchor instead:\n" + "\n".join(found)


def test_no_machine_paths():
    this = Path(__file__).resolve()
    docs = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
    found = offending_lines([p for p in source_files() + docs if p.resolve() != this], MACHINE_PATH)
    assert not found, "paths of one machine:\n" + "\n".join(found)


def test_readme_is_short_and_has_no_run_history():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    history = re.compile(r"\bsession\b|\bfinding \d|\bwork period", re.I)
    found = [line for line in text.splitlines() if history.search(line) or RUN_LABEL.search(line)]
    assert not found, found
