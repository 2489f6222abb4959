"""The README's and the docs' Python examples run as written, and CI runs the README's test
command."""

import re

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
#: Pages whose Python blocks are complete scripts (docs/apps.md shows a path to fill in).
PAGES = (
    "README.md",
    "docs/getting-started.md",
    # 28 s: with the slow checks, so that the default suite stays under 10 minutes
    pytest.param("docs/tour.md", marks=pytest.mark.slow),
)


def _blocks(text, language):
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize("page", PAGES)
def test_examples_run(page):
    blocks = _blocks((ROOT / page).read_text(), "python")
    assert blocks
    for block in blocks:
        exec(compile(block, page, "exec"), {})  # noqa: S102  (the pages are ours)


def test_ci_runs_the_readme_test_command():
    commands = [b.strip() for b in _blocks(README, "bash")]
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()
