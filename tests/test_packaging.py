"""The install and test commands are stated once and used everywhere (README, docs, CI)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def read(path: str) -> str:
    if not (ROOT / "README.md").is_file():
        pytest.skip("not a source tree of scratio")
    assert (ROOT / path).is_file(), f"{path} is missing"
    return (ROOT / path).read_text()


def readme_test_command() -> str:
    readme = read("README.md")
    block = re.search(r"run the test suite.*?```bash\n(.*?)\n```", readme, re.S)
    assert block is not None, "README.md has no test command"
    return block.group(1)


def test_ci_runs_the_readme_test_command():
    command = readme_test_command()
    assert command.endswith("&& python -m pytest")
    assert command in read(".ci/run").splitlines()
    assert "run: bash .ci/run" in read(".github/workflows/test.yaml")


def test_docs_give_the_readme_install_command():
    command = readme_test_command()
    assert command in read("docs/installation.md")
    assert command in read("docs/contributing.md")
    install = command.removesuffix(' -e ".[test]" && python -m pytest')
    assert f"{install} -e . && scratio demo" in read("README.md")
    assert f'{install} -e ".[test,doc,dev]"' in read("docs/contributing.md")
    cpu = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    assert cpu in read("docs/installation.md")
    assert f"python -m {cpu}" in read(".readthedocs.yaml")


def test_igraph_listed_once():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads(read("pyproject.toml"))["project"]
    requirements = [*project["dependencies"], *sum(project["optional-dependencies"].values(), [])]
    assert [r for r in requirements if r.startswith("igraph")] == ["igraph>=0.10"]
