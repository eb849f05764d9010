"""Every relative link of the README and the documentation pages leads somewhere: the file exists and, for a
link into a Markdown page, so does the heading it names (GitHub's anchors, which the site's match)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "recipes").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but '-' and '_' dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text, found, in_code = page.read_text(), set(), False
    for line in text.splitlines():
        in_code ^= line.startswith("```")
        if not in_code and (m := re.match(r"^#{1,6} (.*)", line)):
            found.add(anchor(m.group(1)))
    return found


def broken_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links inside code blocks are code
    broken = []
    for target in LINK.findall(text):
        if re.match(r"(https?|mailto):", target):
            continue
        path, _, name = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            broken.append(f"{target} (no such file)")
        elif name and where.suffix == ".md" and name not in anchors(where):
            broken.append(f"{target} (no such heading)")
    return broken


def test_every_relative_link_resolves():
    problems = {str(p.relative_to(ROOT)): b for p in PAGES if (b := broken_links(p))}
    assert problems == {}


def test_the_check_sees_a_broken_file_and_a_broken_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## A part\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-part) [no](missing.md) [gone](other.md#no-part) [self](#here)\n\n## Here\n")
    assert broken_links(page) == ["missing.md (no such file)", "other.md#no-part (no such heading)"]
