"""Every code block of the README and the documentation runs in the tests, or says why it cannot.

A block is preceded by an HTML comment ``<!-- docs-test: KIND -->`` (hidden on the rendered page):

- ``run``: this file runs it (Python with the interpreter, shell lines with bash, in an empty folder);
- ``tested-by tests/FILE.py::TEST [...]``: those tests run what it shows (they must exist);
- ``ci``: `.ci/run` runs it on a clean clone (the README's two commands);
- ``gpu`` or ``download``: it needs what the tests lack (a GPU; a checkpoint or dataset from the Hub);
- ``listing``: not code (a folder layout, a file's fields, an example to copy into a file).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
KINDS = ("run", "tested-by", "ci", "gpu", "download", "listing")
MARK = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->")
FENCE = re.compile(r"^```([\w-]*)\s*$")


def blocks(page: Path) -> list[tuple[int, str, str, str | None]]:
    """(line, language, body, mark) of every fenced block of ``page``; mark None where the block has none."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i].strip()) if not lines[i].startswith("    ") else None
        if opening is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        back = i - 1
        mark = None
        while back >= 0 and lines[back].strip().startswith("<!--"):
            hit = MARK.search(lines[back])
            mark = hit.group(1) if hit else mark
            back -= 1
        found.append((i + 1, opening.group(1), "\n".join(lines[i + 1:end]), mark))
        i = end + 1
    return found


ALL = [(page, *block) for page in PAGES for block in blocks(page)]


def _id(item) -> str:
    return f"{item[0].relative_to(ROOT)}:{item[1]}"


@pytest.mark.parametrize("item", ALL, ids=_id)
def test_every_block_says_how_it_is_tested(item):
    page, line, _, _, mark = item
    where = f"{page.relative_to(ROOT)}:{line}"
    assert mark is not None, f"{where}: a code block without <!-- docs-test: KIND --> (one of {KINDS})"
    kind, *rest = mark.split()
    assert kind in KINDS, f"{where}: unknown docs-test kind {kind!r}"
    if kind == "tested-by":
        assert rest, f"{where}: tested-by names no test"
        for node in rest:
            path, _, name = node.partition("::")
            assert (ROOT / path).is_file(), f"{where}: {path} does not exist"
            assert re.search(rf"^(async )?def {re.escape(name)}\(", (ROOT / path).read_text(), re.M), \
                f"{where}: {path} has no test {name}"


RUNNABLE = [item for item in ALL if item[4] == "run"]


@pytest.mark.parametrize("item", RUNNABLE, ids=_id)
def test_the_runnable_blocks_run_as_written(item, tmp_path):
    page, line, language, body, _ = item
    env = {**os.environ, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if language == "python":
        command = [sys.executable, "-c", body]
    elif language in ("bash", "sh", "shell"):
        command = ["bash", "-euo", "pipefail", "-c", body]
    else:
        pytest.fail(f"{page.relative_to(ROOT)}:{line}: a runnable block must be python or bash, not {language!r}")
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{page.relative_to(ROOT)}:{line} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
