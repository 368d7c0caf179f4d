"""Turn a `GrammarSpec` into a tokenizer-independent xgrammar `Grammar`.

Building the `Grammar` parses and checks the schema / regex / EBNF but does not touch the
vocabulary, so it is cheap enough to run in the API server at request admission (where it
provides the HTTP 400 for bad input) and is memoized because the worker builds the same
grammar again before compiling it against the tokenizer.
"""

from __future__ import annotations

import functools
import json
import re
from typing import TYPE_CHECKING

from radix_plugin.logits.core.grammar_spec import (
    GrammarCannotFinishError,
    GrammarKind,
    GrammarSpec,
    GrammarSpecError,
)
from radix_plugin.logits.grammar.satisfiable import analyse
from radix_plugin.logits.grammar.strict_json import forbid_raw_control_chars

if TYPE_CHECKING:
    import xgrammar as xgr

# Compact separators: without free whitespace a random or weak model cannot pad forever, and
# outputs are shorter. `radix_any_whitespace=true` restores xgrammar's flexible whitespace.
COMPACT_SEPARATORS = (",", ":")
# vLLM rejects deeper schemas for its own structured outputs; xgrammar recurses per level.
MAX_SCHEMA_NESTING = 64
MAX_SCHEMA_PROPERTIES = 512
"""Properties in one schema, all objects together: xgrammar's compile time grows faster
than linearly with an object's optional properties (1,000 take 15 s on one core, 10,000
never finish), and the request, and every grammar queued behind it, would wait for it."""
# xgrammar prefixes C++ errors with "[hh:mm:ss] /path/file.cc:123: ", noise for an API client.
_CPP_LOCATION = re.compile(r"^\[[\d:]+\] \S+:\d+: ")


def build_grammar(spec: GrammarSpec) -> xgr.Grammar:
    """Return the xgrammar `Grammar` for `spec`, raising `GrammarSpecError` if it is invalid.

    Invalid includes a grammar that cannot finish (a rule with no finite derivation;
    `GrammarCannotFinishError`): xgrammar accepts those, but generating under them never ends
    and jump-forward over them never returns (see `radix_plugin.logits.grammar.satisfiable`).
    """
    return _build_grammar_cached(spec)


def grammar_cache_sizes() -> dict[str, int]:
    """Entries in this process's grammar caches (each an LRU of at most 256): grammars
    built, and finiteness analyses (O(1))."""
    return {
        "grammar_builds": _build_grammar_cached.cache_info().currsize,
        "grammar_finiteness": analyse.cache_info().currsize,
    }


@functools.lru_cache(maxsize=256)
def _build_grammar_cached(spec: GrammarSpec) -> xgr.Grammar:
    grammar = _parse(spec)
    finiteness = analyse(str(grammar))
    if finiteness is not None and not finiteness.ok:
        raise GrammarCannotFinishError(f"{spec.kind.value} {finiteness.problem()}")
    return grammar


def _parse(spec: GrammarSpec) -> xgr.Grammar:
    import xgrammar as xgr

    try:
        if spec.kind is GrammarKind.JSON_SCHEMA:
            return _json_schema_grammar(spec)
        if spec.kind is GrammarKind.REGEX:
            return xgr.Grammar.from_regex(spec.source)
        if spec.kind is GrammarKind.EBNF:
            return xgr.Grammar.from_ebnf(spec.source)
        return xgr.Grammar.from_ebnf(choice_ebnf(spec.choices))
    except GrammarSpecError:
        raise
    except Exception as exc:  # xgrammar raises RuntimeError/ValueError/InvalidJSONError
        what = {
            GrammarKind.JSON_SCHEMA: "is not a supported JSON schema",
            GrammarKind.REGEX: "is not a valid regular expression",
            GrammarKind.EBNF: "is not a valid EBNF grammar",
            GrammarKind.CHOICE: "could not be turned into a grammar",
        }[spec.kind]
        raise GrammarSpecError(f"{spec.kind.value} {what}: {_clean_message(exc)}") from None


def _json_schema_grammar(spec: GrammarSpec) -> xgr.Grammar:
    import xgrammar as xgr

    schema = json.loads(spec.source)
    depth, properties = _schema_shape(schema)
    if depth > MAX_SCHEMA_NESTING:
        raise GrammarSpecError(
            f"{spec.kind.value} is nested more than {MAX_SCHEMA_NESTING} levels deep"
        )
    if properties > MAX_SCHEMA_PROPERTIES:
        raise GrammarSpecError(
            f"{spec.kind.value} has {properties} properties; at most {MAX_SCHEMA_PROPERTIES}"
        )
    grammar = xgr.Grammar.from_json_schema(
        spec.source,
        any_whitespace=spec.any_whitespace,
        separators=None if spec.any_whitespace else COMPACT_SEPARATORS,
        strict_mode=True,
    )
    return xgr.Grammar.from_ebnf(forbid_raw_control_chars(str(grammar)))


def _clean_message(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return _CPP_LOCATION.sub("", lines[0]) if lines else type(exc).__name__


def choice_ebnf(choices: list[str]) -> str:
    """EBNF whose language is exactly `choices` (each emitted verbatim, no quotes added)."""
    return "root ::= " + " | ".join(f'"{_escape_literal(choice)}"' for choice in choices)


def _escape_literal(text: str) -> str:
    """Escape `text` for an xgrammar EBNF string literal."""
    parts: list[str] = []
    for ch in text:
        if ch in ('"', "\\"):
            parts.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            # 4-digit \u: xgrammar's \x escape is greedy and would swallow a following digit.
            parts.append(f"\\u{ord(ch):04x}")
        else:
            parts.append(ch)
    return "".join(parts)


def _schema_shape(node: object) -> tuple[int, int]:
    """Depth of nested containers and the number of properties (entries of every
    ``properties`` object), iteratively so a hostile schema cannot overflow our stack."""
    deepest = properties = 0
    stack: list[tuple[object, int]] = [(node, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth + 1)
            if isinstance(item.get("properties"), dict):
                properties += len(item["properties"])
            stack.extend((value, depth + 1) for value in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((value, depth + 1) for value in item)
    return deepest, properties
