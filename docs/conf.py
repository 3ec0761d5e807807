"""Sphinx configuration for scratio.

Build offline, warnings as errors::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Set ``SCRATIO_DOCS_INTERSPHINX=1`` to link to the Python, NumPy, AnnData, scanpy, PyTorch
and Lightning documentation (needs internet access).
"""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
try:
    import scratio
except ImportError:  # document the source tree when the package is not installed
    sys.path.insert(0, str(ROOT / "src"))
    import scratio
sys.path.insert(0, str(HERE / "extensions"))


def _version() -> str:
    """``scratio.__version__``, or pyproject's version when the tree is not installed."""
    version = scratio.__version__
    if version.endswith("+unknown"):
        pyproject = (ROOT / "pyproject.toml").read_text()
        version = re.search(r'^version = "(.+)"', pyproject, flags=re.MULTILINE).group(1)
    return version


# -- Project -----------------------------------------------------------------------------
project = "scratio"
author = "scratio developers"
copyright = f"{datetime.now():%Y}, {author}"
release = _version()
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------------------
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # before sphinx_autodoc_typehints
    "sphinx_autodoc_typehints",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "sphinx_copybutton",
    "sphinxcontrib.bibtex",
    "typed_returns",  # docs/extensions
]

templates_path = ["_templates"]
source_suffix = {
    ".rst": "restructuredtext",
    ".md": "myst-nb",
    ".ipynb": "myst-nb",
}  # .rst first: autosummary stubs are rst
master_doc = "index"
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "README.md",
    # `notebooks` links to ../tutorials; only the notebooks in it are pages.
    "notebooks/**.md",
    "notebooks/**/.ipynb_checkpoints",
    "notebooks/**/data",
]

# -- MyST and notebooks ------------------------------------------------------------------
myst_enable_extensions = ["amsmath", "colon_fence", "deflist", "dollarmath", "html_image", "html_admonition"]
myst_heading_anchors = 3
# Notebooks are executed by CI and committed with their outputs.
nb_execution_mode = "off"
nb_merge_streams = True

# -- API ---------------------------------------------------------------------------------
autosummary_generate = True
autodoc_member_order = "groupwise"
default_role = "literal"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True
napoleon_use_ivar = True  # "Attributes" sections as fields, not as stray attribute targets
napoleon_custom_sections = [("Params", "Parameters")]
typehints_defaults = "braces"
always_document_param_types = False
typehints_document_rtype = True

bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"
bibtex_default_style = "plain"

# -- Intersphinx: opt-in, because it fetches inventories over the network ----------------
intersphinx_mapping: dict[str, tuple[str, None]] = {}
if os.environ.get("SCRATIO_DOCS_INTERSPHINX", "0") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "pandas": ("https://pandas.pydata.org/pandas-docs/stable", None),
        "anndata": ("https://anndata.readthedocs.io/en/stable", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable", None),
        "matplotlib": ("https://matplotlib.org/stable", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
        "lightning": ("https://lightning.ai/docs/pytorch/stable", None),
    }

# -- HTML --------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"scratio {release}"
html_theme_options = {
    "repository_url": "https://github.com/scverse/scratio",
    "repository_branch": "main",
    "path_to_docs": "docs/",
    "use_repository_button": True,
    "use_issues_button": True,
    "navigation_with_keys": False,
}
html_show_sphinx = False

# -- Optional pages ----------------------------------------------------------------------
BENCHMARKS_README = ROOT / "benchmarks" / "README.md"
TUTORIALS = ROOT / "tutorials"


REPOSITORY = "https://github.com/scverse/scratio/blob/main"
_LINK = re.compile(r"(?<!!)\[([^\]]*)\]\((?![a-z]+:|#)([^)\s]+)\)")
_IMAGE = re.compile(r"!\[([^\]]*)\]\((?![a-z]+:)([^)\s]+)\)")


def _inline_readme(path: Path) -> str:
    """A README's Markdown for inclusion one heading level down.

    Links to files next to the README (scripts, result tables) point at the repository, as
    Sphinx cannot resolve them; images are taken from the source tree.
    """
    folder = path.parent.relative_to(ROOT).as_posix()
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced:
            if line.startswith("#"):
                line = "#" + line
            line = _IMAGE.sub(rf"![\1](../{folder}/\2)", line)
            line = _LINK.sub(rf"[\1]({REPOSITORY}/{folder}/\2)", line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def _benchmarks_page(app, docname: str, source: list[str]) -> None:
    """Include ``benchmarks/README.md`` on the benchmarks page when it exists."""
    if docname != "benchmarks":
        return
    if BENCHMARKS_README.exists():
        block = _inline_readme(BENCHMARKS_README)
    else:
        block = "The benchmark scripts and their results will be described here.\n"
    source[0] = source[0].replace("<!-- benchmarks-readme -->", block)


def _tutorials_page(app, docname: str, source: list[str]) -> None:
    """List the notebooks of ``tutorials/`` (linked as ``docs/notebooks``), if there are any.

    An empty glob toctree is a warning, so the toctree is written only once notebooks exist.
    """
    if docname != "tutorials":
        return
    if any(TUTORIALS.glob("*.ipynb")):
        block = "```{toctree}\n:maxdepth: 1\n:glob:\n\nnotebooks/*\n```\n"
    else:
        block = "No tutorial notebooks have been published yet.\n"
    source[0] = source[0].replace("<!-- tutorials-toctree -->", block)


# Attributes every torch module has; not part of scratio's API.
_TORCH_MODULE_ATTRIBUTES = {"training", "dump_patches", "call_super_init", "T_destination"}


def _skip_member(app, what, name, obj, skip, options):
    if name in _TORCH_MODULE_ATTRIBUTES:
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("source-read", _benchmarks_page)
    app.connect("source-read", _tutorials_page)
