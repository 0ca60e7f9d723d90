"""The two errors a profile can raise, and how a value is quoted in them."""
from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A profile, key or value that the kit does not accept; the message says what is valid."""


class MissingAssetError(FileNotFoundError):
    """A real data set or weight file the run needs is not on this machine."""


def short(value: Any, limit: int = 200) -> str:
    """``repr(value)`` cut to ``limit`` characters, for quoting a user's value in an error."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # nested too deeply, or an integer of more than 4300 digits
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[:limit] + "..."
