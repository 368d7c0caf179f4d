"""Admission checks for the plugin's per-request ``vllm_xargs``, run in the API server.

vLLM calls a logits processor's ``validate_params`` for every request before it reaches the
engine and turns the exception into HTTP 400, so malformed ``radix_*`` keys never get to the
engine core. Every grammar it refuses is counted by reason on /metrics
(``radix_plugin:grammar_refusals_total``), in this process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from radix_plugin.api_server.metrics import count_grammar_refusal
from radix_plugin.cache_manager.core.hints import parse_hints
from radix_plugin.logits.core.grammar_spec import (
    GrammarCannotFinishError,
    GrammarSpecError,
    parse_grammar_spec,
)
from radix_plugin.logits.core.jump_forward_mode import request_mode
from radix_plugin.logits.grammar.builder import build_grammar

if TYPE_CHECKING:
    from vllm import SamplingParams


def validate_radix_xargs(sampling_params: SamplingParams) -> None:
    """Raise (``HintError`` / ``JumpForwardModeError`` / ``GrammarSpecError``, all
    ``ValueError``) naming the bad key."""
    parse_hints(sampling_params.extra_args)
    request_mode(sampling_params.extra_args, "auto")
    try:
        spec = parse_grammar_spec(sampling_params.extra_args)
    except GrammarSpecError:
        count_grammar_refusal("malformed")
        raise
    if spec is None:
        return
    if sampling_params.structured_outputs is not None:
        count_grammar_refusal("conflict")
        raise GrammarSpecError(
            f"{spec.kind.value} cannot be combined with vLLM's structured_outputs / "
            "response_format in the same request; use one of them"
        )
    try:
        build_grammar(spec)
    except GrammarCannotFinishError:
        count_grammar_refusal("cannot_finish")
        raise
    except GrammarSpecError:
        count_grammar_refusal("invalid")
        raise
