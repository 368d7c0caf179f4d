"""Compressed-FSM structured decoding: per-request grammars enforced by a logits processor.

Enable: the `vllm.logits_processors` entry point (installed with this package) makes vLLM load
`RadixGrammarLogitsProcessor` in every engine; naming it explicitly also works and is harmless
(`--logits-processors radix_plugin.worker.logits:RadixGrammarLogitsProcessor`, one instance
per engine stays active). Requests opt in through `vllm_xargs` (`SamplingParams.extra_args`
offline):

===================== ========================================================================
key                   value
===================== ========================================================================
radix_json_schema     JSON schema (a JSON string, or a dict offline). Output is strict JSON:
                      `json.loads` accepts it (no raw control characters inside strings).
radix_regex           regular expression the whole output must match
radix_ebnf            xgrammar EBNF grammar with a `root` rule
radix_choice          list of strings; the output is exactly one of them
radix_any_whitespace  JSON only; default false = compact JSON (`,` and `:` without spaces, no
                      free whitespace). A random or weak model under a JSON grammar otherwise
                      tends to emit whitespace until `max_tokens`; set true for xgrammar's
                      flexible whitespace.
===================== ========================================================================

At most one grammar key per request, and not together with vLLM's own `structured_outputs` /
`response_format`. Invalid input is rejected at admission with a message naming the key (HTTP
400 from the server, `VLLMValidationError` offline). Requests without these keys are untouched.

Importing this package does not import vLLM; the processor class is resolved lazily.
"""

from __future__ import annotations

from typing import Any

from radix_plugin.core.grammar_spec import (
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
        from radix_plugin.worker.logits.processor import RadixGrammarLogitsProcessor

        return RadixGrammarLogitsProcessor
    raise AttributeError(f"module 'radix_plugin.worker.logits' has no attribute {name!r}")
