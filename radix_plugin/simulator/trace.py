"""Mooncake-format request traces: one JSON object per line.

``{"timestamp": ms, "input_length": n, "output_length": m, "hash_ids": [...]}`` where hash id
``i`` names the content of prompt block ``i`` (``block_size`` tokens; the last block may be
partial). Equal ids mean equal content *and* equal prefix, as in Mooncake's published traces.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class TraceRequest:
    timestamp: int
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> str:
        record = asdict(self)
        record["hash_ids"] = list(self.hash_ids)
        if not self.extra:
            del record["extra"]
        return json.dumps(record, separators=(",", ":"))


class TraceFormatError(ValueError):
    """A trace line that is not valid Mooncake JSONL; names the file and line."""


_REQUIRED = ("timestamp", "input_length", "output_length", "hash_ids")


def parse_mooncake_line(line: str, block_size: int, where: str = "<trace>") -> TraceRequest:
    """Parse and validate one line; the hash ids must cover ``input_length`` tokens. Any
    malformed line raises :class:`TraceFormatError` naming ``where``, never another error."""
    obj = parse_json_object(line, where)
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise TraceFormatError(f"{where}: missing field(s) {missing}; required: {list(_REQUIRED)}")
    n_in = whole_number(obj, "input_length", where, minimum=1)
    n_out = whole_number(obj, "output_length", where, minimum=0)
    timestamp = whole_number(obj, "timestamp", where, minimum=None)
    raw_ids = obj["hash_ids"]
    if not isinstance(raw_ids, list) or not all(_is_int(h) for h in raw_ids):
        raise TraceFormatError(f"{where}: hash_ids must be a list of integers")
    needed = -(-n_in // block_size)
    if len(raw_ids) < needed:
        raise TraceFormatError(
            f"{where}: input_length {n_in} needs {needed} hash ids at block size "
            f"{block_size}, got {len(raw_ids)} (is --block-size right?)"
        )
    extra = {k: v for k, v in obj.items() if k not in _REQUIRED}
    return TraceRequest(
        timestamp=timestamp,
        input_length=n_in,
        output_length=n_out,
        hash_ids=tuple(raw_ids[:needed]),
        extra=extra,
    )


def parse_json_object(line: str, where: str) -> dict[str, Any]:
    """One JSONL line as a dict, or :class:`TraceFormatError` naming ``where``."""
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise TraceFormatError(f"{where}: not JSON ({msg})") from None
    if not isinstance(obj, dict):
        raise TraceFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def whole_number(obj: dict[str, Any], key: str, where: str, minimum: int | None) -> int:
    """``obj[key]`` as an int (an integral float is accepted), at least ``minimum``."""
    value = obj[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_int(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise TraceFormatError(f"{where}: {key} must be an integer{bound}, got {value!r}")
    return value


def load_mooncake(
    path: str | Path, block_size: int, limit: int | None = None
) -> list[TraceRequest]:
    """Read a Mooncake JSONL trace (blank lines skipped), at most ``limit`` requests."""
    out: list[TraceRequest] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            out.append(parse_mooncake_line(line, block_size, f"{path}:{lineno}"))
            if limit is not None and len(out) >= limit:
                break
    return out


def save_mooncake(requests: Iterable[TraceRequest], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in requests:
            fh.write(r.to_json() + "\n")


def iter_lines(requests: Iterable[TraceRequest]) -> Iterator[str]:
    for r in requests:
        yield r.to_json()
