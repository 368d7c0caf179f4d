"""Parse the per-request grammar keys that clients pass through `vllm_xargs`.

vLLM copies `vllm_xargs` verbatim into `SamplingParams.extra_args`, so this is the only channel
a logits processor has for per-request options. Values arrive as flat JSON scalars or lists
(the OpenAI server's type is `str | int | float | list[...]`), so the parser accepts the loose
spellings HTTP clients produce (e.g. `1`/`"true"` for a flag) and turns everything else into a
`GrammarSpecError` that names the offending key. The result is a small, hashable `GrammarSpec`
that doubles as the compile-cache key, so the same schema sent twice is compiled once.

This module imports neither vLLM nor xgrammar: it runs in the API server for every request.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from radix_plugin.xargs import parse_flag

XARG_JSON_SCHEMA = "radix_json_schema"
XARG_REGEX = "radix_regex"
XARG_EBNF = "radix_ebnf"
XARG_CHOICE = "radix_choice"
XARG_ANY_WHITESPACE = "radix_any_whitespace"
# Admission parses the grammar on the API server's request path: bound the text it parses.
MAX_GRAMMAR_SOURCE_CHARS = 256 * 1024


class GrammarKind(str, enum.Enum):
    """Which grammar language a request's constraint is written in."""

    JSON_SCHEMA = XARG_JSON_SCHEMA
    REGEX = XARG_REGEX
    EBNF = XARG_EBNF
    CHOICE = XARG_CHOICE


_KIND_BY_KEY = {kind.value: kind for kind in GrammarKind}


class GrammarSpecError(ValueError):
    """A request's grammar keys are malformed or the grammar itself is invalid.

    Subclasses `ValueError` because vLLM converts a `ValueError` raised from a logits processor's
    `validate_params` into `VLLMValidationError`, which the API server answers with HTTP 400.
    """


class GrammarCannotFinishError(GrammarSpecError):
    """The grammar is valid but has no finite output (or none short enough)."""


@dataclass(frozen=True)
class GrammarSpec:
    """A normalized, hashable description of one request's output constraint.

    `source` is canonical for its kind (a JSON schema is re-serialized compactly, keeping key
    order because xgrammar emits properties in schema order; a choice list is stored as a JSON
    array), so equal constraints compare and hash equal and share one compiled grammar.
    """

    kind: GrammarKind
    source: str
    any_whitespace: bool = False

    @property
    def choices(self) -> list[str]:
        """The alternatives of a `CHOICE` spec."""
        if self.kind is not GrammarKind.CHOICE:
            raise TypeError(f"{self.kind.value} spec has no choices")
        return json.loads(self.source)


def has_grammar_keys(extra_args: Mapping[str, Any] | None) -> bool:
    """Cheap check used on the hot path to skip requests that carry no grammar."""
    return bool(extra_args) and any(key in extra_args for key in _KIND_BY_KEY)


def parse_grammar_spec(extra_args: Mapping[str, Any] | None) -> GrammarSpec | None:
    """Return the request's `GrammarSpec`, or None when it carries no grammar key.

    Raises `GrammarSpecError` for more than one grammar key, values of the wrong type, or a
    JSON schema string that is not JSON. Whether the grammar itself compiles is checked by
    `radix_plugin.logits.grammar.builder.build_grammar`.
    """
    if not has_grammar_keys(extra_args):
        if extra_args and XARG_ANY_WHITESPACE in extra_args:
            raise GrammarSpecError(
                f"{XARG_ANY_WHITESPACE} only applies together with {XARG_JSON_SCHEMA}"
            )
        return None
    assert extra_args is not None
    present = [key for key in _KIND_BY_KEY if key in extra_args]
    if len(present) > 1:
        raise GrammarSpecError(
            f"at most one of {', '.join(_KIND_BY_KEY)} may be given per request; got "
            f"{', '.join(present)}"
        )
    kind = _KIND_BY_KEY[present[0]]
    value = extra_args[present[0]]
    _check_size(kind, value)
    any_whitespace = _parse_flag(extra_args.get(XARG_ANY_WHITESPACE, False))
    if any_whitespace and kind is not GrammarKind.JSON_SCHEMA:
        raise GrammarSpecError(
            f"{XARG_ANY_WHITESPACE} only applies together with {XARG_JSON_SCHEMA}"
        )
    if kind is GrammarKind.JSON_SCHEMA:
        source = _normalize_schema(value)
    elif kind is GrammarKind.CHOICE:
        source = _normalize_choice(value)
    else:
        if not isinstance(value, str) or not value:
            raise GrammarSpecError(f"{kind.value} must be a non-empty string")
        source = value
    _check_size(kind, source)
    return GrammarSpec(kind=kind, source=source, any_whitespace=any_whitespace)


def _check_size(kind: GrammarKind, value: Any) -> None:
    if isinstance(value, str) and len(value) > MAX_GRAMMAR_SOURCE_CHARS:
        raise GrammarSpecError(
            f"{kind.value} is {len(value)} characters; at most {MAX_GRAMMAR_SOURCE_CHARS} "
            "are allowed"
        )


def _normalize_schema(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise GrammarSpecError(f"{XARG_JSON_SCHEMA} is not valid JSON: {exc}") from None
        except RecursionError:
            raise GrammarSpecError(f"{XARG_JSON_SCHEMA} is nested too deeply") from None
    # A JSON schema is an object or a boolean (`true` accepts anything, `false` nothing).
    if not isinstance(value, dict | bool):
        raise GrammarSpecError(
            f"{XARG_JSON_SCHEMA} must be a JSON object (a JSON schema), got {type(value).__name__}"
        )
    try:
        # Key order is kept: xgrammar emits properties in schema order.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (RecursionError, TypeError, ValueError) as exc:
        raise GrammarSpecError(f"{XARG_JSON_SCHEMA} cannot be serialized: {exc}") from None


def _normalize_choice(value: Any) -> str:
    if isinstance(value, str):
        # A JSON-encoded list is accepted too, for clients that can only send strings.
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise GrammarSpecError(
                f"{XARG_CHOICE} must be a list of strings (or a JSON array of strings)"
            ) from None
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(choice, str) and choice for choice in value)
    ):
        raise GrammarSpecError(f"{XARG_CHOICE} must be a non-empty list of non-empty strings")
    return json.dumps(list(value), ensure_ascii=False)


def _parse_flag(value: Any) -> bool:
    flag = parse_flag(value)
    if flag is None:
        raise GrammarSpecError(f"{XARG_ANY_WHITESPACE} must be a boolean, got {value!r}")
    return flag
