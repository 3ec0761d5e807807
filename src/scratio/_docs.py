"""Shared docstring fragments, filled in as scanpy's ``_doc_params`` does."""

from __future__ import annotations

import textwrap
from collections.abc import Callable


def doc_params(**fragments: str) -> Callable[[Callable], Callable]:
    """Replace ``{name}`` in the decorated function's docstring by the fragment ``name``.

    A fragment is written unindented; each of its lines takes the indentation of the
    placeholder's line.
    """

    def decorate(func: Callable) -> Callable:
        doc = func.__doc__
        for name, fragment in fragments.items():
            placeholder = "{" + name + "}"
            for line in doc.splitlines():
                if line.strip() == placeholder:
                    indent = line[: len(line) - len(line.lstrip())]
                    doc = doc.replace(line, textwrap.indent(fragment.strip("\n"), indent))
        func.__doc__ = doc
        return func

    return decorate


def parameters_section(doc: str) -> str:
    """The entries of a numpy docstring's Parameters section, unindented (to reuse them as a fragment)."""
    lines = doc.split("----------\n", 1)[1].splitlines()
    return "\n".join(line[4:] for line in lines).strip("\n")
