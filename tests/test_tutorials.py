"""The tutorial notebooks in ``tutorials/``: committed with outputs, and they run end to end.

Executing them takes a few minutes in fast mode (``SCRATIO_TUTORIAL_FAST=1``, fewer training
steps); select only these tests with ``pytest -m tutorials`` or leave them out with
``pytest -m "not tutorials"``.
"""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))

nbformat = pytest.importorskip(
    "nbformat", reason="the tutorial tests need nbformat (pip install 'scratio[test]')"
)

pytestmark = pytest.mark.tutorials


def _ids(path: Path) -> str:
    return path.stem


def _prose(markdown: str) -> list[str]:
    """The lines of a Markdown cell outside fenced code blocks."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def test_there_are_tutorials():
    assert NOTEBOOKS, f"no notebooks in {ROOT / 'tutorials'}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_committed_with_outputs(path):
    """The docs show the committed outputs (nb_execution_mode "off"): every code cell ran, none failed."""
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    not_run = [i for i, cell in enumerate(code) if cell.get("execution_count") is None]
    assert not not_run, f"{path.name}: code cells {not_run} have not been executed"
    errors = [out for cell in code for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, f"{path.name}: committed with an error output: {errors[0].get('ename')}"
    titles = [line for cell in notebook.cells if cell.cell_type == "markdown" for line in _prose(cell.source)]
    titles = [line for line in titles if line.startswith("# ")]
    assert len(titles) == 1, f"{path.name}: the docs need exactly one level-1 heading, found {titles}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_runs(path, monkeypatch):
    """Execute the notebook in fast mode; any cell that raises fails the test."""
    nbclient = pytest.importorskip("nbclient", reason="executing the tutorials needs nbclient")
    pytest.importorskip("ipykernel", reason="executing the tutorials needs ipykernel")
    from jupyter_client.kernelspec import NoSuchKernel

    monkeypatch.setenv("SCRATIO_TUTORIAL_FAST", "1")
    # The kernel is a new process: let it import scratio from this source tree when it is not installed.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv("MPLBACKEND", "agg")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute()
    except NoSuchKernel as error:
        pytest.skip(f"no python3 Jupyter kernel: {error}")
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name} failed in fast mode:\n{error}", pytrace=False)
