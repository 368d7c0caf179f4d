"""The session signal reaches the cache in a real engine.

Two conversations share a small KV pool. ``A`` says its turn is the last one
(``radix_session_end``), ``B`` is still live; then a long one-off prompt needs part of the
pool. LRU evicts ``B``'s older tail, so ``B``'s next turn recomputes it; the ``session``
policy evicts the ended conversation instead, so ``B``'s next turn hits its whole history.
The session id travels the way vLLM carries it (``Request.session_id``, set from the chat
body, the ``X-Session-ID`` header or ``vllm_xargs`` by the API server).
"""

from __future__ import annotations

from typing import Any

import pytest
from vllm import LLM, SamplingParams

from radix_plugin.testing.engine import cpu_llm_kwargs, run_one, shutdown_llm

BS = 32
OUT = 4


def _tokens(start: int, n: int) -> list[int]:
    """``n`` token ids no other prompt here shares (the tiny model has 4096)."""
    return [10 + (start + i) % 4000 for i in range(n)]


B1 = _tokens(0, 6 * BS + 8)  # 6 full blocks + a partial one
A1 = _tokens(1000, 6 * BS + 8)
FILLER = _tokens(2000, 14 * BS)  # needs 15 blocks: more than the 11 free ones


def _second_turn(policy: str) -> dict[str, Any]:
    """B1, A1 (last turn), a long one-off, then B's second turn, on a fresh engine
    (``vanilla``: vLLM without the plugin)."""
    plugin = {
        "scheduler_cls": "radix_plugin.RadixScheduler",
        "additional_config": {"radix_plugin": {"eviction": policy}},
    }
    llm = LLM(
        **cpu_llm_kwargs(
            "tiny",
            max_model_len=512,
            block_size=BS,
            num_kv_blocks=24,
            max_num_seqs=2,
            enable_prefix_caching=True,
            dtype="float32",  # identical greedy tokens are only asserted in float32
            **({} if policy == "vanilla" else plugin),
        )
    )
    try:
        b1 = _run(llm, "b1", B1, "conv-B")
        _run(llm, "a1", A1, "conv-A", radix_session_end=True)
        _run(llm, "filler", FILLER, "one-off", radix_session_end=True)
        b2_prompt = B1 + list(b1.outputs[0].token_ids) + _tokens(3000, 40)
        b2 = _run(llm, "b2", b2_prompt, "conv-B")
        return {"hit": b2.num_cached_tokens, "tokens": list(b2.outputs[0].token_ids)}
    finally:
        shutdown_llm(llm)


def _run(llm: LLM, rid: str, tokens: list[int], session: str, **xargs: Any) -> Any:
    """One request through the engine's own add_request (which takes ``session_id``)."""
    params = SamplingParams(temperature=0.0, max_tokens=OUT, extra_args=xargs or None)
    return run_one(llm.llm_engine, rid, tokens, params, session_id=session)


@pytest.fixture(scope="module")
def second_turns() -> dict[str, dict[str, Any]]:
    return {policy: _second_turn(policy) for policy in ("vanilla", "lru", "session")}


def test_session_policy_keeps_the_live_history_lru_drops(
    second_turns: dict[str, dict[str, Any]],
) -> None:
    assert second_turns["session"]["hit"] == 6 * BS  # B's whole cached history
    assert second_turns["lru"]["hit"] < 6 * BS  # LRU evicted B's older tail for the one-off


def test_session_policy_hits_at_least_what_vanilla_vllm_hits(
    second_turns: dict[str, dict[str, Any]],
) -> None:
    assert second_turns["session"]["hit"] >= second_turns["vanilla"]["hit"]
    assert second_turns["vanilla"]["hit"] < 6 * BS  # vanilla's LRU drops B's tail too


def test_greedy_tokens_are_identical_under_every_engine(
    second_turns: dict[str, dict[str, Any]],
) -> None:
    assert second_turns["session"]["tokens"] == second_turns["lru"]["tokens"]
    assert second_turns["session"]["tokens"] == second_turns["vanilla"]["tokens"]
