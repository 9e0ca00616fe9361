"""Every relative link in README.md and docs/*.md reaches a file of the repository, and every `#anchor` a
heading of the page it names (GitHub's anchor rules), so a reader who follows one never lands on nothing."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def prose(text: str) -> str:
    """The page without its fenced code blocks (a `# comment` in a shell block is no heading, a link-like
    string in code no link)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link in a heading keeps its text
    text = text.lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6} (.+?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(prose(page.read_text(encoding="utf-8")))]


def test_slug_follows_github():
    assert slug("Halting headroom (a diagnostic for training)") == "halting-headroom-a-diagnostic-for-training"
    assert slug("Demo model: decoder width") == "demo-model-decoder-width"
    assert slug("`metrics.json` schema") == "metricsjson-schema"
    assert slug("Stages 1 and 2: the training engine") == "stages-1-and-2-the-training-engine"


def test_the_pages_exist_and_link_to_each_other():
    assert len(PAGES) >= 8, [p.name for p in PAGES]
    readme_targets = {t.split("#")[0] for t in links(REPO / "README.md")}
    missing = [p.relative_to(REPO).as_posix() for p in PAGES[1:] if p.relative_to(REPO).as_posix() not in
               readme_targets]
    assert not missing, f"docs pages README.md does not link to: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not this repository's
            continue
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with anchor #{anchor} in {destination.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)
