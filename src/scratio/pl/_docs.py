"""Docstring fragments shared by the plots.

A plot's docstring writes ``{plot_options}`` at the end of its parameters and ``{plot_returns}``
under "Returns"; :func:`doc_plot` fills them in.
"""

from __future__ import annotations

from scratio._docs import doc_params

#: The scanpy-style options every plot takes.
PLOT_OPTIONS = """
ax
    Axes to draw into; a new figure by default.
show
    Show the figure; defaults to ``scanpy.settings.autoshow``.
return_fig
    Return the figure.
"""

#: What every plot returns.
PLOT_RETURNS = """
The figure with ``return_fig=True``, nothing when shown, else the axes.
"""

#: The options of the plots that draw a table as an annotated heatmap.
HEATMAP_OPTIONS = """
annotate
    Write the values into the cells.
fmt
    Format of those values.
"""

doc_plot = doc_params(plot_options=PLOT_OPTIONS, plot_returns=PLOT_RETURNS, heatmap_options=HEATMAP_OPTIONS)
