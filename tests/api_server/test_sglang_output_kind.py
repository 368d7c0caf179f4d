"""Non-streaming ``/generate`` asks vLLM for the final output only (as vLLM's own
non-streaming completions do); streaming keeps cumulative outputs (one event per step)."""

from __future__ import annotations

import asyncio

import pytest
from vllm.sampling_params import RequestOutputKind

from radix_plugin.api_server.core.sglang_request import parse_generate
from radix_plugin.api_server.sglang_generate import SglGenerator
from radix_plugin.api_server.sglang_sampling import EngineLimits, plan_item

LIMITS = EngineLimits(max_model_len=256, radix_scheduler=True)


def kinds(body: dict) -> list[RequestOutputKind]:
    """The output kind of every sequence the endpoint would start for ``body``."""
    generator = SglGenerator(engine=None, tokenizer=None, limits=LIMITS, vocab_size=1000)
    preps = asyncio.run(generator.prepare(parse_generate(body, vocab_size=1000)))
    return [p.plan.params.output_kind for p in preps]


@pytest.mark.parametrize(
    "sampling",
    [
        {"max_new_tokens": 4},
        {"max_new_tokens": 0},  # prefill only
        {"max_new_tokens": 4, "n": 2, "temperature": 0.7},
        {"max_new_tokens": 8, "regex": "[0-9]+"},
    ],
)
def test_non_streaming_sequences_are_final_only(sampling: dict) -> None:
    body = {"input_ids": [[1, 2, 3], [4, 5]], "sampling_params": sampling}
    assert set(kinds(body)) == {RequestOutputKind.FINAL_ONLY}


def test_streaming_sequences_stay_cumulative() -> None:
    body = {"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 4}, "stream": True}
    assert kinds(body) == [RequestOutputKind.CUMULATIVE]


def test_plan_item_defaults_to_cumulative() -> None:
    item = parse_generate({"input_ids": [1, 2, 3]}).items[0]
    assert plan_item(item, 3, LIMITS).params.output_kind == RequestOutputKind.CUMULATIVE
    final = plan_item(item, 3, LIMITS, final_only=True)
    assert final.params.output_kind == RequestOutputKind.FINAL_ONLY
