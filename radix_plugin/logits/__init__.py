"""Compressed-FSM structured decoding: per-request grammars enforced by a logits processor.

Use `--logits-processors radix_plugin.logits:RadixGrammarLogitsProcessor` (or rely on the
`vllm.logits_processors` entry point, which vLLM always loads) and pass one of
`radix_json_schema`, `radix_regex`, `radix_ebnf`, `radix_choice` in `vllm_xargs`.

Importing this package does not import vLLM; the processor class is resolved lazily.
"""

from __future__ import annotations

from typing import Any

from radix_plugin.logits.request_spec import (
    XARG_ANY_WHITESPACE,
    XARG_CHOICE,
    XARG_EBNF,
    XARG_JSON_SCHEMA,
    XARG_REGEX,
    GrammarSpecError,
)

__all__ = [
    "XARG_ANY_WHITESPACE",
    "XARG_CHOICE",
    "XARG_EBNF",
    "XARG_JSON_SCHEMA",
    "XARG_REGEX",
    "GrammarSpecError",
    "RadixGrammarLogitsProcessor",
]


def __getattr__(name: str) -> Any:
    if name == "RadixGrammarLogitsProcessor":
        from radix_plugin.logits.processor import RadixGrammarLogitsProcessor

        return RadixGrammarLogitsProcessor
    raise AttributeError(f"module 'radix_plugin.logits' has no attribute {name!r}")
