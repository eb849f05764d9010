"""mkdocs hooks: the site's home page is the README, its links made relative to docs/ (no second copy)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def on_page_markdown(markdown: str, page, config, files) -> str:
    """index.md is a placeholder: its content is the README's, ``docs/x`` links becoming ``x``, others ``../x``."""
    if page.file.src_uri != "index.md":
        return markdown
    text = README.read_text()
    text = re.sub(r"\]\(docs/", "](", text)
    return re.sub(r"\]\((?!https?:|#|mailto:|[\w\-]+\.(?:md|png)\b)([^)\s]+)\)", r"](../\1)", text)
