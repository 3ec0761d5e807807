"""Packaging metadata."""

from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def read(path: str) -> str:
    if not (ROOT / "README.md").is_file():
        pytest.skip("not a source tree of scratio")
    assert (ROOT / path).is_file(), f"{path} is missing"
    return (ROOT / path).read_text()


def test_igraph_listed_once():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads(read("pyproject.toml"))["project"]
    requirements = [*project["dependencies"], *sum(project["optional-dependencies"].values(), [])]
    assert [r for r in requirements if r.startswith("igraph")] == ["igraph>=0.10"]
