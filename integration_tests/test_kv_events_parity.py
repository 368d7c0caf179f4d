"""The plugin's KV event stream is vanilla vLLM's: same traffic, same events.

Two in-process engines in turn (tiny model, float32, a pool large enough that nothing is
evicted), vanilla vLLM and ``RadixScheduler``, each publishing on its own ZMQ endpoint. The
same prompts (shared prefixes, a fully cached prompt whose last block vLLM recomputes into a
duplicate, decode tokens filling blocks, a reset) are sent one at a time; the events received
must be identical, field by field (sha256 block hashes are the same in both processes).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from vllm import SamplingParams
from vllm.config import KVEventsConfig
from vllm.distributed.kv_events import AllBlocksCleared, BlockRemoved, BlockStored

from radix_plugin.testing.engine import drain, running_llm
from radix_plugin.testing.kv_events import KVEventIndex, KVEventSubscriber
from radix_plugin.testing.server import free_port

BLOCK = 32


def _traffic() -> list[tuple[list[int], int]]:
    """(prompt, max_tokens) pairs: shared system prefixes, repeats, decode across blocks."""
    rng = random.Random(7)
    system = [[rng.randrange(16, 4000) for _ in range(100)] for _ in range(2)]
    turns = []
    for i in range(6):
        user = [rng.randrange(16, 4000) for _ in range(20 + 13 * i)]
        turns.append((system[i % 2] + user, 40))
    turns.append(turns[0])  # fully cached: the last block is recomputed into a duplicate
    turns.append((system[0][:64], 1))  # exactly two blocks, all hits but the last block
    return turns


def _events(scheduler_cls: str | None) -> list[Any]:
    port, replay = free_port(), free_port()
    overrides: dict[str, Any] = {} if scheduler_cls is None else {"scheduler_cls": scheduler_cls}
    with running_llm(
        "tiny",
        dtype="float32",
        block_size=BLOCK,
        max_num_seqs=4,
        enable_prefix_caching=True,
        kv_events_config=KVEventsConfig(
            enable_kv_cache_events=True,
            publisher="zmq",
            endpoint=f"tcp://*:{port}",
            replay_endpoint=f"tcp://*:{replay}",
        ),
        **overrides,
    ) as llm:
        subscriber = KVEventSubscriber(f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{replay}")
        try:
            params = SamplingParams(temperature=0.0, ignore_eos=True)
            for prompt, max_tokens in _traffic():
                params.max_tokens = max_tokens
                llm.generate({"prompt_token_ids": prompt}, params, use_tqdm=False)
            assert llm.reset_prefix_cache()
            params.max_tokens = 1
            llm.generate({"prompt_token_ids": [5] * 5}, params, use_tqdm=False)  # publishes it
            drain(llm)
            return [event for batch in subscriber.batches() for event in batch.events]
        finally:
            subscriber.close()


@pytest.fixture(scope="module")
def streams() -> dict[str, list[Any]]:
    return {"vanilla": _events(None), "plugin": _events("radix_plugin.RadixScheduler")}


def test_plugin_emits_vanillas_event_stream(streams: dict[str, list[Any]]) -> None:
    vanilla, plugin = streams["vanilla"], streams["plugin"]
    kinds = {type(e) for e in vanilla}
    assert kinds == {BlockStored, AllBlocksCleared}, "the traffic must cover these kinds"
    assert sum(len(e.block_hashes) for e in vanilla if isinstance(e, BlockStored)) > 20
    assert plugin == vanilla


def test_stream_carries_what_a_router_needs(streams: dict[str, list[Any]]) -> None:
    index = KVEventIndex()
    index.apply(streams["plugin"])
    assert not index.problems and not index.orphans
    for event in streams["plugin"]:
        if isinstance(event, BlockStored):
            assert event.medium == "GPU" and event.block_size == BLOCK
            assert all(isinstance(h, int) for h in event.block_hashes)  # 64-bit ints
        assert not isinstance(event, BlockRemoved)  # nothing is evicted in this pool
