"""Package-wide settings: what scratio says (log lines) and shows (progress bars).

scratio's log records go to the ``"scratio"`` logger and on to the root logger, like any
library's; when the root logger has no handler (a fresh notebook) scratio writes them to
stderr itself, so they are seen without any set-up and never twice. Progress bars go to stderr
too, as widgets in Jupyter when ipywidgets is installed and as text otherwise.
"""

from __future__ import annotations

import importlib.util
import logging
import sys

logger = logging.getLogger("scratio")
logger.setLevel(logging.INFO)


class _UnlessRootHandles(logging.StreamHandler):
    """Write a record to stderr unless the root logger has handlers, which then write it."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            self.stream = sys.stderr  # the current one: Jupyter and pytest replace it
            super().emit(record)


class _Verbosity(logging.Filter):
    """Let log lines through only when :data:`settings` says so, at the time of the call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or settings.log_lines


class Settings:
    """Global settings, available as ``scratio.settings``.

    Attributes
    ----------
    verbosity
        ``None`` (default): follow :attr:`scanpy.settings.verbosity`: ``0`` (errors) shows
        nothing, ``1`` (scanpy's default, warnings) shows progress bars, ``2`` and more (info)
        also the log lines saying what was trained and added. Or one of scratio's own levels,
        which override scanpy's: ``0`` warnings only, ``1`` log lines, ``2`` log lines and
        progress bars.
    """

    def __init__(self) -> None:
        self._verbosity: int | None = None

    @property
    def verbosity(self) -> int | None:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int | None) -> None:
        if value not in (None, 0, 1, 2):
            raise ValueError(f"`verbosity` must be None (follow scanpy), 0, 1 or 2, got {value!r}.")
        self._verbosity = value

    def _scanpy_verbosity(self) -> int:
        import scanpy as sc

        return int(sc.settings.verbosity)

    @property
    def log_lines(self) -> bool:
        """Whether scratio logs what it trained and added."""
        if self._verbosity is None:
            return self._scanpy_verbosity() >= 2
        return self._verbosity >= 1

    @property
    def progress_bar(self) -> bool:
        """Whether training and scoring show progress bars."""
        if self._verbosity is None:
            return self._scanpy_verbosity() >= 1
        return self._verbosity >= 2

    def __repr__(self) -> str:
        return f"scratio.settings(verbosity={self.verbosity})"


def progress_bar(*, total: int, desc: str, unit: str):
    """A progress bar on stderr: a widget in Jupyter when ipywidgets is installed, else text.

    Disabled unless :attr:`Settings.progress_bar`; it leaves no line behind when done.
    """
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:  # tqdm.auto would warn "IProgress not found" and fall back to text anyway
        from tqdm import tqdm
    return tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=not settings.progress_bar
    )


settings = Settings()
_handler = _UnlessRootHandles(sys.stderr)
_handler.setFormatter(logging.Formatter("%(message)s"))
logger.addHandler(_handler)
logger.addFilter(_Verbosity())
