"""Render numpy ``Returns`` sections as prose, as scanpy and the scverse template do.

Napoleon reads a ``Returns`` line without ``name : type`` as a *type*, so a sentence such as
"Log-ratios, ``float32`` of shape ``(n_cells,)``." would replace the annotated return type.
Here the section becomes the ``:returns:`` description, lines of the form ``name : type``
become list items, and sphinx-autodoc-typehints adds the annotated type as ``:rtype:``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from sphinx.application import Sphinx
from sphinx.ext.napoleon import NumpyDocstring

_NAMED = re.compile(r"(?P<name>\w+)\s+:\s+(?P<type>[\w.\[\], |]+)")


def _process_return(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        if m := _NAMED.fullmatch(line):
            yield f"- **{m['name']}** ({m['type'].strip()})"
        else:
            yield line


def _parse_returns_section(self: NumpyDocstring, section: str) -> list[str]:
    lines_raw = self._dedent(self._consume_to_next_section())
    if lines_raw and lines_raw[0] == ":":
        del lines_raw[0]
    lines = self._format_block(":returns: ", list(_process_return(lines_raw)))
    if lines and lines[-1]:
        lines.append("")
    return lines


def setup(app: Sphinx) -> dict[str, bool]:
    NumpyDocstring._parse_returns_section = _parse_returns_section
    return {"parallel_read_safe": True, "parallel_write_safe": True}
