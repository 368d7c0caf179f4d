"""Decide, for one request entering the batch, whether it gets a grammar row and which one.

Shared by the V1 and V2 drivers so both treat requests identically: no grammar key means no
row (and no work), a malformed key (only possible if admission-time validation was bypassed)
means a FAILED row that stops the request, and anything else starts a compile right away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from radix_plugin.logits.core.grammar_spec import (
    GrammarSpecError,
    has_grammar_keys,
    parse_grammar_spec,
)
from radix_plugin.logits.worker.row_state import GrammarRow

if TYPE_CHECKING:
    from vllm import SamplingParams

    from radix_plugin.logits.worker.compile_service import GrammarCompileService


def stop_token_ids(params: SamplingParams) -> set[int]:
    """Tokens that end this request in vLLM; the grammar allows them once it is complete."""
    stops = set(params.all_stop_token_ids or ())
    if params.eos_token_id is not None:
        stops.add(params.eos_token_id)
    return stops


def row_for_request(
    service: GrammarCompileService, params: SamplingParams, label: str
) -> GrammarRow | None:
    """A new `GrammarRow` for `params`, or None when the request carries no grammar."""
    if not has_grammar_keys(params.extra_args):
        return None
    stops = stop_token_ids(params)
    try:
        spec = parse_grammar_spec(params.extra_args)
    except GrammarSpecError as exc:
        return GrammarRow.failed(str(exc), stops, label=label)
    assert spec is not None
    return GrammarRow(service.submit(spec), stops, label=label)
