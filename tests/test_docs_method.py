"""Every section of docs/METHOD.md that the code cites exists.

Code, configs, scripts and docs cite the method page as "METHOD.md s.2", "METHOD.md section 4",
"METHOD.md sections 2, 3 and 5", "METHOD.md 4.2" or "METHOD.md sections 4-5". A citation of a section the
page does not have sends a reader nowhere, so it fails here with the file and line that cite it.
Run as a script (`python tests/test_docs_method.py`) to list the cited sections and where each is cited.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set

REPO_ROOT = Path(__file__).resolve().parents[1]
METHOD_PAGE = REPO_ROOT / "docs" / "METHOD.md"
SCANNED_SUFFIXES = (".py", ".yaml", ".yml", ".sh", ".md", ".ipynb", ".toml")
# Folders of data, outputs and environments: no citations there, and possibly many files.
SKIPPED_DIRS = {"datasets", "output_dir", "pretrained_models", "__pycache__", "node_modules"}
# Fewer citations than this means the pattern no longer matches how the code cites the page (today: ~120).
MIN_CITATIONS = 20

_NUMBER = r"\d+(?:\.\d+)?"
CITATION = re.compile(rf"METHOD\.md\s*\(?\s*(?:s\.\s*|sections?\s+)?({_NUMBER}(?:\s*(?:,\s*and|,|and|-)\s*{_NUMBER})*)")
HEADING = re.compile(r"^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)


def cited_sections(text: str) -> List[str]:
    """Section numbers cited in `text`, in order: "METHOD.md sections 2, 3 and 5" -> ["2", "3", "5"];
    "sections 4-5" -> ["4", "5"]."""
    found = []
    for match in CITATION.finditer(text):
        for part in re.split(r"\s*(?:,\s*and|,|and)\s*", match.group(1)):
            if "-" in part:
                first, last = (int(x) for x in part.split("-"))
                found.extend(str(n) for n in range(first, last + 1))
            else:
                found.append(part.strip())
    return found


def headings(text: str) -> Set[str]:
    """Numbered headings "## 2. Architecture" / "### 4.2 Stage 2" -> {"2", "4.2"}."""
    return set(HEADING.findall(text))


def citations_in_repo() -> Dict[str, List[str]]:
    """{section: ["path:line", ...]} over the repository's text files, the method page itself excluded."""
    where: Dict[str, List[str]] = defaultdict(list)
    for folder, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS
                   and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            if not name.endswith(SCANNED_SUFFIXES) or path == METHOD_PAGE:
                continue
            text = path.read_text(encoding="utf-8", errors="ignore")
            if "METHOD.md" not in text:
                continue
            for lineno, line in enumerate(text.splitlines(), 1):
                for section in cited_sections(line):
                    where[section].append(f"{path.relative_to(REPO_ROOT)}:{lineno}")
    return dict(where)


def test_every_cited_section_exists():
    assert METHOD_PAGE.is_file(), f"{METHOD_PAGE.relative_to(REPO_ROOT)} is missing, but the code cites it"
    have = headings(METHOD_PAGE.read_text(encoding="utf-8"))
    cited = citations_in_repo()
    assert sum(len(v) for v in cited.values()) >= MIN_CITATIONS, f"only found citations {cited}"
    missing = {s: places for s, places in cited.items() if s not in have}
    assert not missing, ("docs/METHOD.md has no section for these citations: "
                         + "; ".join(f"{s} (cited at {', '.join(p)})" for s, p in sorted(missing.items()))
                         + f". Its numbered headings: {sorted(have)}")


def test_citation_and_heading_patterns():
    text = ("# METHOD.md s.2: 0.25; (METHOD.md section 4); METHOD.md sections 2, 3 and 5; METHOD.md 4.2: x;\n"
            "METHOD.md s.2, 4); METHOD.md sections 4-5; METHOD.md s.3 [code]; METHOD.md 2: size; "
            "docs/METHOD.md (no section); METHOD.md s.6.")
    assert cited_sections(text) == ["2", "4", "2", "3", "5", "4.2", "2", "4", "4", "5", "3", "2", "6"]
    page = "# Title\n## 1. What\ntext 2. not a heading\n### 4.2 Stage two\n#### 4.2.1 Detail\n## Settings\n"
    assert headings(page) == {"1", "4.2", "4.2.1"}


if __name__ == "__main__":
    have = headings(METHOD_PAGE.read_text(encoding="utf-8")) if METHOD_PAGE.is_file() else set()
    for section, places in sorted(citations_in_repo().items(), key=lambda kv: [int(x) for x in kv[0].split(".")]):
        print(f"{section:>4} {'ok     ' if section in have else 'MISSING'} {len(places):3d} citations, e.g. {places[0]}")
