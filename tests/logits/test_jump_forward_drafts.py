"""Scheduler-side jump-forward glue against vLLM's real Request and StructuredOutputManager."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from grammar_test_utils import STOP_IDS
from vllm import SamplingParams
from vllm.sampling_params import StructuredOutputsParams
from vllm.v1.request import Request, RequestStatus
from vllm.v1.structured_output import StructuredOutputManager

from radix_plugin.logits.engine_core.jump_forward_drafts import (
    MemoTokenizer,
    NoDraftProposer,
    attach_xargs_grammar,
    forced_draft_tokens,
)

SCHEMA = {
    "type": "object",
    "properties": {"status": {"enum": ["approved", "rejected"]}, "n": {"type": "integer"}},
    "required": ["status", "n"],
}


@pytest.fixture
def manager(vllm_config: Any) -> StructuredOutputManager:
    return StructuredOutputManager(vllm_config)


def _request(**params: Any) -> Request:
    sampling = SamplingParams(max_tokens=64, stop_token_ids=list(STOP_IDS), **params)
    return Request("r", [1, 50, 60], sampling, None)


def _ready(request: Request) -> None:
    structured = request.structured_output_request
    assert structured is not None
    deadline = time.monotonic() + 30
    while not structured.is_grammar_ready:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_proposer_never_proposes(vllm_config: Any) -> None:
    proposer = NoDraftProposer(vllm_config)
    proposer.load_model(object())
    assert proposer.propose([[1], [2, 3]], None, None, slot_mappings=None) == [[], []]


def test_xargs_become_a_scheduler_side_grammar_with_forced_drafts(
    manager: StructuredOutputManager, tokenizer: Any
) -> None:
    request = _request(extra_args={"radix_json_schema": json.dumps(SCHEMA)})
    assert attach_xargs_grammar(request, manager)
    assert request.status == RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR
    _ready(request)
    drafts = forced_draft_tokens(request, manager, max_tokens=16)
    assert tokenizer.decode(drafts) == '{"status'  # '":"' may merge with the value: held back
    assert forced_draft_tokens(request, manager, max_tokens=1) == drafts[:1]
    # Drafts never move the grammar: asking twice gives the same answer.
    assert forced_draft_tokens(request, manager, max_tokens=16) == drafts


def test_drafts_follow_committed_output(manager: StructuredOutputManager, tokenizer: Any) -> None:
    request = _request(extra_args={"radix_json_schema": json.dumps(SCHEMA)})
    attach_xargs_grammar(request, manager)
    _ready(request)
    committed = tokenizer.encode('{"status":"app', add_special_tokens=False)
    request.append_output_token_ids(committed)
    assert manager.accept_tokens(request, committed)
    drafts = forced_draft_tokens(request, manager, max_tokens=16)
    text = tokenizer.decode(drafts)
    # The enum is decided after "app": the rest of the value and the next key are forced
    # (the trailing '":' is held back as a prefix of longer tokens).
    assert text == 'roved","n'
    # The memoizing tokenizer gives the same drafts, also when answering from its cache.
    memo = MemoTokenizer(manager.tokenizer)
    for _ in range(2):
        assert forced_draft_tokens(request, manager, max_tokens=16, tokenizer=memo) == drafts
    assert memo._encode.cache_info().hits > 0


def test_requests_that_must_not_be_touched(manager: StructuredOutputManager) -> None:
    plain = _request()
    assert not attach_xargs_grammar(plain, manager)
    assert forced_draft_tokens(plain, manager, max_tokens=8) == []
    own = _request(structured_outputs=StructuredOutputsParams(regex="[a-z]+"))
    before = own.structured_output_request
    assert not attach_xargs_grammar(own, manager)
    assert own.structured_output_request is before
    malformed = _request(extra_args={"radix_regex": ""})
    assert not attach_xargs_grammar(malformed, manager)
    assert malformed.structured_output_request is None


def test_vllm_grammar_that_cannot_finish_gets_no_jump_forward(
    manager: StructuredOutputManager,
) -> None:
    """vLLM's own structured outputs skip our admission check; xgrammar's forced-string search
    never returns on them (it allocated 22 GB before), so no drafts are asked for."""
    from radix_plugin.compat import mark_xgrammar_backend

    params = StructuredOutputsParams(grammar='root ::= "{\\"a\\":" root "}"')
    mark_xgrammar_backend(params)
    request = _request(structured_outputs=params)
    manager.grammar_init(request)
    _ready(request)
    start = time.perf_counter()
    assert forced_draft_tokens(request, manager, max_tokens=16) == []
    assert time.perf_counter() - start < 2


def test_one_hot_rows_allow_exactly_the_draft_token() -> None:
    import numpy as np

    from radix_plugin.logits.engine_core.jump_forward_drafts import one_hot_rows

    rows = one_hot_rows([0, 31, 32, 95], 3)
    assert rows.dtype == np.int32 and rows.shape == (4, 3)
    for row, token in zip(rows.view(np.uint32), [0, 31, 32, 95], strict=True):
        bits = [w * 32 + b for w in range(3) for b in range(32) if int(row[w]) >> b & 1]
        assert bits == [token]
