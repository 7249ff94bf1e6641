"""Every Python block of the README and the documentation pages runs as
written (imports included) on the test session's backend."""

import contextlib
import io
import os
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))


def python_blocks(path):
    """```python blocks; ```py marks code that is shown, not run (another
    library's code in the migration guides)."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


BLOCKS = [(path, i, block) for path in PAGES for i, block in enumerate(python_blocks(path))]


@pytest.mark.parametrize("path, index, block", BLOCKS,
                         ids=[f"{p.relative_to(ROOT)}:{i}" for p, i, _ in BLOCKS])
def test_block_runs(path, index, block, tmp_path):
    printed = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)  # blocks that write files write them here
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(block, f"{path.name}:{index}", "exec"), {"__name__": "__doc_block__"})
    finally:
        os.chdir(cwd)
    # A printed value commented on its line (`print(x)  # value`) must be what printed.
    expected = [m.group(1).strip() for m in re.finditer(r"^print\(.*\)[ \t]*#[ \t]*(.+)$", block, re.M)]
    lines = printed.getvalue().strip().splitlines()
    for want in expected:
        assert any(line.strip() == want for line in lines), (want, lines)


def test_every_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").rglob("*.md"):
        assert str(page.relative_to(ROOT / "docs")) in nav, page
