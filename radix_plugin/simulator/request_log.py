"""A user's own request log as a simulator trace, whichever of two JSONL formats it is in.

- ``mooncake``: ``{"timestamp", "input_length", "output_length", "hash_ids"}`` per line
  (:mod:`radix_plugin.simulator.trace`): block hashes, no tokenizer needed.
- ``openai``: ``{"prompt": "..."}`` (or a list of token ids) or ``{"messages": [...]}`` per
  line, as sent to ``/v1/completions`` and ``/v1/chat/completions``, optionally with
  ``"timestamp"`` (a number, orders the requests), ``"output"`` (the answer's text) or
  ``"output_length"`` (its tokens), and ``"session"`` (a conversation id the replay passes on
  as the client's session hint). Prompts are tokenized with the model's own tokenizer the way
  vLLM does (chat template rendered, then tokenized without adding special tokens; plain
  prompts with them), and the token ids hashed into pages as vLLM's prefix cache does.

A bad line is reported with its number and skipped; every other line still counts.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from radix_plugin.simulator.trace import (
    TraceFormatError,
    TraceRequest,
    parse_json_object,
    parse_mooncake_line,
    whole_number,
)

FORMATS = ("mooncake", "openai")
DETECT_LINES = 100
MAX_TOKEN_ID = 2**32 - 1


class UnknownFormatError(ValueError):
    """The format is not one of :data:`FORMATS`, or cannot be told from the log."""


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class RequestLog:
    """The requests of a log that parsed, in replay order, and the lines that did not."""

    path: str
    format: str
    requests: list[TraceRequest] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)


class Tokenizer(Protocol):
    """What the ``openai`` format needs of a Hugging Face tokenizer."""

    def __call__(self, text: str, *, add_special_tokens: bool) -> Any: ...

    def apply_chat_template(self, messages: list[dict], **kwargs: Any) -> Any: ...


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A local Hugging Face tokenizer directory (no download: the user's own model)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


class BlockIds:
    """Dense ids for chained block hashes: block ``i``'s id names its tokens and every token
    before it, as vLLM's prefix-cache hash ``hash(parent_hash, block_tokens)`` does, so equal
    ids mean equal content and prefix (what a Mooncake hash id means)."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self._ids: dict[bytes, int] = {}

    def __call__(self, tokens: list[int]) -> tuple[int, ...]:
        parent, out = b"", []
        for start in range(0, len(tokens), self.block_size):
            block = array("I", tokens[start : start + self.block_size]).tobytes()
            parent = hashlib.sha256(parent + block).digest()
            out.append(self._ids.setdefault(parent, len(self._ids)))
        return tuple(out)


class OpenAIParser:
    """One ``openai``-format line -> a :class:`TraceRequest` of hashed pages."""

    def __init__(self, tokenizer: Tokenizer, block_size: int, output_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.block_ids = BlockIds(block_size)
        self.output_tokens = output_tokens

    def __call__(self, line: str, where: str, lineno: int) -> TraceRequest:
        obj = parse_json_object(line, where)
        tokens = self._prompt_tokens(obj, where)
        if not tokens:
            raise TraceFormatError(f"{where}: the prompt has no tokens")
        extra: dict[str, Any] = {}
        timestamp = lineno
        if "timestamp" in obj:
            ts = obj["timestamp"]
            if isinstance(ts, bool) or not isinstance(ts, (int, float)) or ts != ts:
                raise TraceFormatError(f"{where}: timestamp must be a number, got {ts!r}")
            extra["timestamp"] = ts
        if "session" in obj:
            extra["session"] = str(obj["session"])
        return TraceRequest(
            timestamp=timestamp,
            input_length=len(tokens),
            output_length=self._output_length(obj, where),
            hash_ids=self.block_ids(tokens),
            extra=extra,
        )

    def _prompt_tokens(self, obj: dict[str, Any], where: str) -> list[int]:
        if "messages" in obj:
            messages = obj["messages"]
            if not isinstance(messages, list) or not messages:
                raise TraceFormatError(f"{where}: messages must be a non-empty list")
            for i, m in enumerate(messages):
                if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                    raise TraceFormatError(f"{where}: messages[{i}] needs a string 'role'")
            text = self._tokenize(
                lambda: self.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                ),
                where,
            )
            if not isinstance(text, str):
                raise TraceFormatError(f"{where}: the chat template did not render text")
            return self._encode(text, False, where)
        if "prompt" in obj:
            prompt = obj["prompt"]
            if isinstance(prompt, str):
                return self._encode(prompt, True, where)
            if isinstance(prompt, list) and all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= MAX_TOKEN_ID
                for t in prompt
            ):
                return list(prompt)
            raise TraceFormatError(f"{where}: prompt must be a string or a list of token ids")
        raise TraceFormatError(f"{where}: needs a 'prompt' or a 'messages' field")

    def _output_length(self, obj: dict[str, Any], where: str) -> int:
        if "output_length" in obj:
            return whole_number(obj, "output_length", where, minimum=0)
        if "output" in obj:
            if not isinstance(obj["output"], str):
                raise TraceFormatError(f"{where}: output must be a string")
            return len(self._encode(obj["output"], False, where))
        return self.output_tokens

    def _encode(self, text: str, special: bool, where: str) -> list[int]:
        ids = self._tokenize(lambda: self.tokenizer(text, add_special_tokens=special), where)
        return list(ids["input_ids"])

    @staticmethod
    def _tokenize(call: Callable[[], Any], where: str) -> Any:
        try:
            return call()
        # The tokenizer and the model's Jinja chat template raise what they raise (a
        # TemplateError, a ValueError for unpaired surrogates, ...): one bad line only.
        except Exception as exc:
            msg = f"{where}: tokenizer failed ({type(exc).__name__}: {exc})"
            raise TraceFormatError(msg) from None


def detect_format(path: str | Path) -> str:
    """The format of the first parseable JSON object among the first lines."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if lineno > DETECT_LINES:
                break
            if not line.strip():
                continue
            try:
                obj = parse_json_object(line, "")
            except TraceFormatError:
                continue
            if "hash_ids" in obj:
                return "mooncake"
            if "prompt" in obj or "messages" in obj:
                return "openai"
    raise UnknownFormatError(
        f"{path}: cannot tell the format from its first {DETECT_LINES} lines (no line with "
        f"'hash_ids', 'prompt' or 'messages'); pass --format, one of: {', '.join(FORMATS)}"
    )


def _lines(path: str | Path, on_bytes: Callable[[int], None] | None) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if on_bytes is not None:
                on_bytes(len(line))
            yield line


def load_request_log(
    path: str | Path,
    fmt: str,
    block_size: int,
    *,
    tokenizer: Tokenizer | None = None,
    output_tokens: int = 0,
    limit: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> RequestLog:
    """Parse every line of ``path``; ``fmt`` is one of :data:`FORMATS` or ``auto``.

    Requests are replayed in file order (Mooncake's traces are sorted by time); an
    ``openai`` log whose every request has a timestamp is sorted by it (stable).
    ``on_bytes`` sees each line's length (a progress bar over the file size).
    """
    if fmt == "auto":
        fmt = detect_format(path)
    parse: Callable[[str, str, int], TraceRequest]
    if fmt == "mooncake":

        def parse(line: str, where: str, _lineno: int) -> TraceRequest:
            return parse_mooncake_line(line, block_size, where)

    elif fmt == "openai":
        if tokenizer is None:
            raise ValueError("the openai format needs a tokenizer (--tokenizer PATH)")
        parse = OpenAIParser(tokenizer, block_size, output_tokens)
    else:
        raise UnknownFormatError(f"unknown format {fmt!r}; choices: auto, {', '.join(FORMATS)}")
    log = RequestLog(str(path), fmt)
    name = os.fspath(path)
    for lineno, line in enumerate(_lines(path, on_bytes), 1):
        if not line.strip():
            continue
        try:
            log.requests.append(parse(line, f"{name}:{lineno}", lineno))
        except TraceFormatError as exc:
            log.errors.append(LineError(lineno, str(exc)))
            continue
        if limit is not None and len(log.requests) >= limit:
            break
    if fmt == "openai" and log.requests and all("timestamp" in r.extra for r in log.requests):
        log.requests.sort(key=lambda r: r.extra["timestamp"])
    return log
