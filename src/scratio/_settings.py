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
logger.setLevel(logging.DEBUG)  # what is shown is decided by the verbosity, at the time of each call

#: scanpy's verbosity levels, by value and name (:class:`scanpy.Verbosity`), and the lowest
#: record level each shows: scratio has no hints, so ``"hint"`` shows what ``"info"`` shows.
VERBOSITY_LEVELS = {
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "hint": logging.INFO,
    "debug": logging.DEBUG,
}


class _UnlessRootHandles(logging.StreamHandler):
    """Write a record to stderr unless the root logger has handlers, which then write it."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            self.stream = sys.stderr  # the current one: Jupyter and pytest replace it
            super().emit(record)


class _Verbosity(logging.Filter):
    """Let a record through only when the verbosity shows its level, at the time of the call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= settings.lowest_level_shown


class Settings:
    """Global settings, available as ``scratio.settings``.

    Attributes
    ----------
    verbosity
        ``None`` (default): follow :attr:`scanpy.settings.verbosity`. Otherwise a level on
        scanpy's scale, which overrides scanpy's for scratio: ``0`` or ``"error"``, ``1`` or
        ``"warning"`` (scanpy's default), ``2`` or ``"info"``, ``3`` or ``"hint"``, ``4`` or
        ``"debug"`` (or a :class:`scanpy.Verbosity`). From ``"info"`` on, scratio logs what it
        trained and added.
    progress_bar
        ``None`` (default): progress bars for training and scoring from verbosity
        ``"warning"`` on; ``True`` or ``False``: whatever the verbosity.
    """

    def __init__(self) -> None:
        self._verbosity: int | None = None
        self._progress_bar: bool | None = None

    @property
    def verbosity(self) -> int | None:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int | str | None) -> None:
        names = list(VERBOSITY_LEVELS)
        level = names.index(value) if isinstance(value, str) and value in names else value
        valid = level is None or (
            isinstance(level, int) and not isinstance(level, bool) and 0 <= level < len(names)
        )
        if not valid:
            raise ValueError(
                f"`verbosity` must be None (follow scanpy) or one of scanpy's levels, 0-4 or {names}, got {value!r}."
            )
        self._verbosity = None if level is None else int(level)

    @property
    def progress_bar(self) -> bool | None:
        return self._progress_bar

    @progress_bar.setter
    def progress_bar(self, value: bool | None) -> None:
        if value not in (None, True, False):
            raise ValueError(
                f"`progress_bar` must be None (follow the verbosity), True or False, got {value!r}."
            )
        self._progress_bar = None if value is None else bool(value)

    @property
    def level(self) -> int:
        """The verbosity in effect, on scanpy's scale: scratio's own, or scanpy's."""
        if self._verbosity is not None:
            return self._verbosity
        import scanpy as sc

        return int(sc.settings.verbosity)

    @property
    def lowest_level_shown(self) -> int:
        """The lowest :mod:`logging` level of the records scratio shows."""
        return list(VERBOSITY_LEVELS.values())[min(self.level, len(VERBOSITY_LEVELS) - 1)]

    @property
    def shows_progress_bars(self) -> bool:
        """Whether training and scoring show progress bars."""
        return self.level >= 1 if self._progress_bar is None else self._progress_bar

    def __repr__(self) -> str:
        return f"scratio.settings(verbosity={self.verbosity!r}, progress_bar={self.progress_bar!r})"


def progress_bar(*, total: int, desc: str, unit: str):
    """A progress bar on stderr: a widget in Jupyter when ipywidgets is installed, else text.

    Disabled unless :attr:`Settings.shows_progress_bars`; it leaves no line behind when done.
    """
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:  # tqdm.auto would warn "IProgress not found" and fall back to text anyway
        from tqdm import tqdm
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        leave=False,
        disable=not settings.shows_progress_bars,
    )


settings = Settings()
_handler = _UnlessRootHandles(sys.stderr)
_handler.setFormatter(logging.Formatter("%(message)s"))
logger.addHandler(_handler)
logger.addFilter(_Verbosity())
