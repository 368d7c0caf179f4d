"""Compressed-FSM structured decoding: per-request grammars, jump-forward, the logits processor.

Enable: the `vllm.logits_processors` entry point (installed with this package) makes vLLM load
`RadixGrammarLogitsProcessor` in every engine; naming it explicitly also works and is harmless
(`--logits-processors radix_plugin.logits:RadixGrammarLogitsProcessor`, one instance
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

Floors, one folder per vLLM process that runs the code:

- ``core/`` (pure): the ``radix_*`` grammar keys (``grammar_spec``) and jump-forward modes.
- ``grammar/`` (xgrammar, no vLLM; all three processes): grammar building, strict JSON, the
  finiteness check, forced-text search.
- ``engine_core/`` (EngineCore): jump-forward drafts and their bitmask rows.
- ``worker/`` (workers; the processor class is also loaded by the API server for
  ``validate_params``): the logits processor and its V1 / Model Runner V2 drivers.

The names below resolve on first use; importing this package does not import vLLM or
xgrammar.
"""

from radix_plugin.lazy_exports import lazy_exports

__all__ = lazy_exports(
    __name__,
    {
        "XARG_ANY_WHITESPACE": "radix_plugin.logits.core.grammar_spec",
        "XARG_CHOICE": "radix_plugin.logits.core.grammar_spec",
        "XARG_EBNF": "radix_plugin.logits.core.grammar_spec",
        "XARG_JSON_SCHEMA": "radix_plugin.logits.core.grammar_spec",
        "XARG_REGEX": "radix_plugin.logits.core.grammar_spec",
        "GrammarSpec": "radix_plugin.logits.core.grammar_spec",
        "GrammarSpecError": "radix_plugin.logits.core.grammar_spec",
        "parse_grammar_spec": "radix_plugin.logits.core.grammar_spec",
        "build_grammar": "radix_plugin.logits.grammar.builder",
        "find_forced_tokens": "radix_plugin.logits.grammar.jump_forward",
        "RadixGrammarLogitsProcessor": "radix_plugin.logits.worker.processor",
    },
)
