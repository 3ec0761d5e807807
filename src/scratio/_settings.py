"""Package-wide settings: verbosity of log lines and progress bars."""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("scratio")


class Settings:
    """Global settings, available as ``scratio.settings``.

    Attributes
    ----------
    verbosity
        ``0``: warnings only; ``1``: log lines saying what was trained and added;
        ``2`` (default): log lines and progress bars for training and scoring.
    """

    def __init__(self) -> None:
        self._handler = logging.StreamHandler(sys.stderr)
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(self._handler)
        logger.propagate = False
        self.verbosity = 2

    @property
    def verbosity(self) -> int:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int) -> None:
        if value not in (0, 1, 2):
            raise ValueError(f"`verbosity` must be 0, 1 or 2, got {value!r}.")
        self._verbosity = value
        logger.setLevel(logging.WARNING if value == 0 else logging.INFO)

    @property
    def progress_bar(self) -> bool:
        """Whether training and scoring show progress bars."""
        return self._verbosity >= 2

    def __repr__(self) -> str:
        return f"scratio.settings(verbosity={self.verbosity})"


settings = Settings()
