"""Loose scalar parsing for ``vllm_xargs`` values, which HTTP clients spell many ways."""

from __future__ import annotations

from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_flag(value: Any) -> bool | None:
    """``True``/``False`` for a boolean spelled as bool, 0/1 or a word; ``None`` otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return None
