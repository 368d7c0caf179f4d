"""KV events of a real plugin engine, received from vLLM's ZMQ publisher as a router would.

One in-process engine (tiny model, RadixScheduler with workflow eviction, the host tier with
prefetch, 79 device blocks of 32 tokens, a ~65-block host tier) publishes its KV events on
``tcp://*:PORT`` (vLLM binds only wildcard endpoints; a router's SUB socket connects). The
traffic forces radix evictions, host saves and slot reuse, demand loads, prefetches and pin
expiry; the batches, decoded with vLLM's own event classes, are replayed into an index that
must equal, per medium, the blocks the device pool caches and the host tier holds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from vllm import LLM, SamplingParams
from vllm.config import KVEventsConfig, KVTransferConfig

from radix_plugin.cache_manager.core.workflow import AgentStepGraph
from radix_plugin.testing.engine import drain, running_llm
from radix_plugin.testing.kv_events import (
    KVEventIndex,
    KVEventSubscriber,
    device_hashes,
    host_hashes,
)
from radix_plugin.testing.server import free_port

BLOCK = 32
NUM_BLOCKS = 80
PROMPT_TOKENS = 1000  # 31 full blocks: three such prompts overflow the device pool
# tiny, bf16: 2 layers x (K, V) x 32 tokens x 2 heads x 64 x 2 bytes = 32 KiB a block.
HOST_TIER_GIB = 0.002  # 65 host slots: fewer than the blocks the traffic evicts
TOPIC = "kv-events"
HOST_TIER = KVTransferConfig(
    kv_connector="RadixHostTierConnector",
    kv_connector_module_path="radix_plugin.cache_manager.connector",
    kv_role="kv_both",
)


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[LLM, KVEventSubscriber]]:
    port, replay = free_port(), free_port()
    with running_llm(
        "tiny",
        block_size=BLOCK,
        num_kv_blocks=NUM_BLOCKS,
        max_num_seqs=8,
        enable_prefix_caching=True,
        max_num_batched_tokens=1024,
        scheduler_cls="radix_plugin.RadixScheduler",
        additional_config={
            "radix_plugin": {
                "eviction": "workflow",
                "load_ahead_steps": 2,
                "host_tier_gib": HOST_TIER_GIB,
            }
        },
        kv_transfer_config=HOST_TIER,
        kv_events_config=KVEventsConfig(
            enable_kv_cache_events=True,
            publisher="zmq",
            endpoint=f"tcp://*:{port}",
            replay_endpoint=f"tcp://*:{replay}",
            topic=TOPIC,
        ),
    ) as llm:
        subscriber = KVEventSubscriber(
            f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{replay}", topic=TOPIC
        )
        yield llm, subscriber
        subscriber.close()


def _scheduler(llm: LLM) -> Any:
    return llm.llm_engine.engine_core.engine_core.scheduler


def _prompt(seed: int, n: int = PROMPT_TOKENS) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(16, 4000) for _ in range(n)]


def _generate(llm: LLM, prompt: list[int], **extra_args: Any) -> Any:
    params = SamplingParams(
        temperature=0.0, max_tokens=8, ignore_eos=True, extra_args=extra_args or None
    )
    (out,) = llm.generate({"prompt_token_ids": prompt}, params, use_tqdm=False)
    return out


def _step(llm: LLM) -> None:
    """One engine step that caches no block: vLLM publishes events queued between steps (a
    reset's) with the next step's."""
    _generate(llm, [5] * 5)


def _replayed(llm: LLM, subscriber: KVEventSubscriber) -> KVEventIndex:
    """Every batch published so far, replayed, once the engine is idle."""
    drain(llm)
    index = KVEventIndex()
    for batch in subscriber.batches():
        index.apply(batch.events)
    return index


def _assert_index_equals_engine(llm: LLM, index: KVEventIndex) -> None:
    scheduler = _scheduler(llm)
    pool = scheduler.kv_cache_manager.block_pool
    host = scheduler.connector.scheduler_side
    assert not index.problems, index.problems[:5]
    assert index.medium("GPU") == device_hashes(pool)
    assert index.medium("CPU") == host_hashes(host)


def test_replayed_events_equal_device_pool_and_host_tier(
    engine: tuple[LLM, KVEventSubscriber],
) -> None:
    llm, subscriber = engine
    host = _scheduler(llm).connector.scheduler_side
    assert host.prefetch, "prefetch must stay on with KV events"
    # A short-lived pin: its blocks resist eviction, then expire and become victims too.
    _generate(llm, _prompt(40, 300), radix_pin=True, radix_pin_ttl=1.0)
    a, b, c = _prompt(1), _prompt(2), _prompt(3)
    for prompt in (a, b, c):
        _generate(llm, prompt)
    time.sleep(1.2)
    loaded_before = host.stats.loaded_blocks
    _generate(llm, a)  # a's evicted tail comes back from host memory
    assert host.stats.loaded_blocks > loaded_before
    agents = ["planner", "coder", "critic"]
    prompts = {name: _prompt(10 + i) for i, name in enumerate(agents)}
    graph = AgentStepGraph.from_steps(agents, loop=True)
    for name in agents:
        _generate(llm, prompts[name])
    for round_ in range(3):
        for step, name in enumerate(agents):
            _generate(llm, prompts[name], **graph.hints(f"wf{round_}", step, name))
    assert host.stats.prefetched_blocks > 0, "no prefetch happened"

    index = _replayed(llm, subscriber)
    _assert_index_equals_engine(llm, index)
    counts = index.counts
    assert counts["BlockRemoved", "GPU"] > NUM_BLOCKS, "the traffic did not force evictions"
    assert 0 < counts["BlockStored", "CPU"] <= host.stats.saved_blocks
    assert counts["BlockRemoved", "CPU"] > 0, "no host slot was reused"
    assert not index.orphans, index.orphans[:5]
    assert subscriber.live > 0, "nothing arrived on the PUB socket"


def test_reset_clears_then_reannounces_host_copies(
    engine: tuple[LLM, KVEventSubscriber],
) -> None:
    llm, subscriber = engine
    host = _scheduler(llm).connector.scheduler_side
    drain(llm)
    assert llm.reset_prefix_cache()
    _step(llm)
    index = _replayed(llm, subscriber)
    _assert_index_equals_engine(llm, index)
    assert index.counts["AllBlocksCleared", None] >= 1
    assert len(index.medium("CPU")) == len(host.index) > 0  # still held, one copy away
    assert llm.reset_prefix_cache(reset_connector=True)
    _step(llm)
    index = _replayed(llm, subscriber)
    _assert_index_equals_engine(llm, index)
    assert not index.medium("CPU") and not index.medium("GPU")
