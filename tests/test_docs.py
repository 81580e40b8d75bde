"""Every example in docs/ and the README runs as written."""

import re
import shlex
from pathlib import Path

import pytest

from repadapter.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = "not run by the tests"


def blocks(language: str) -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        for i, match in enumerate(re.finditer(rf"```{language}\n(.*?)```", page.read_text(), re.DOTALL)):
            found.append((page.name, i, match.group(1)))
    return found


PYTHON = blocks("python")
BASH = blocks("bash")


def test_the_docs_have_examples_for_each_concept():
    pages = {page for page, _, _ in PYTHON}
    assert {"module.md", "placements.md", "merge.md", "files.md", "README.md"} <= pages
    assert any(page == "cli.md" for page, _, _ in BASH)


@pytest.mark.parametrize("page, index, code", PYTHON, ids=[f"{p}-{i}" for p, i, _ in PYTHON])
def test_python_examples_run(page, index, code, capsys):
    if SKIP in code.splitlines()[0]:
        pytest.skip("needs a download")
    exec(compile(code, f"{page} example {index}", "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize("page, index, code", [b for b in BASH if b[0] == "cli.md"])
def test_cli_examples_run(page, index, code, capsys):
    for line in filter(None, code.splitlines()):
        argv = shlex.split(line)
        assert argv[0] == "repadapter" and main(argv[1:]) == 0, line


@pytest.mark.parametrize(
    "name, file",
    [
        ("offline_vit", "accuracy.md"),
        ("offline_vit_dense2800", "accuracy.md"),
        ("offline_lite0", "accuracy.md"),
        ("latency", "latency.md"),
        ("training", "training.md"),
        ("segmentation", "methods.md"),
        ("video", "methods.md"),
        ("domains", "domains.md"),
    ],
)
def test_readme_result_tables_are_the_committed_result_files(name, file):
    text = (ROOT / "README.md").read_text()
    table = text.split(f"<!-- {name}:start -->\n")[1].split(f"<!-- {name}:end -->")[0]
    assert table == (ROOT / "results" / name / file).read_text()
