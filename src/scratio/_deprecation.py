"""Renamed keywords keep working for a release, with a :class:`FutureWarning` that names the new one."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable


def renamed_keywords(**renames: str) -> Callable[[Callable], Callable]:
    """Accept each old keyword of ``renames`` (old name to new name) for its new name, with a warning.

    Passing both the old and the new name is a :class:`TypeError`.
    """

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(
                        f"{func.__qualname__}() got both `{old}` and its new name `{new}`; pass `{new}`."
                    )
                warnings.warn(
                    f"`{old}` of {func.__qualname__}() is renamed `{new}`; the old name will be removed in 0.3.",
                    FutureWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper

    return decorate


def deprecated_alias(new: Callable, *, old_name: str, new_name: str) -> Callable:
    """``new`` under its old public name ``old_name``, warning at each call that it is now ``new_name``."""

    @functools.wraps(new)
    def alias(*args, **kwargs):
        warnings.warn(
            f"`{old_name}` is renamed `{new_name}`; the old name will be removed in 0.3.",
            FutureWarning,
            stacklevel=2,
        )
        return new(*args, **kwargs)

    alias.__doc__ = f"Deprecated name of :func:`{new_name}`."
    return alias
