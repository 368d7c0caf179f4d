"""KVFlow host tier on a real vLLM engine: round trip, prefetch safety, abort mid-load.

One in-process engine for the module (the worker's KV connector is a process global, so a
second connector engine cannot share the process): tiny model, RadixScheduler with workflow
eviction, ``RadixHostTierConnector``, and a device pool of 79 blocks that three ~1k-token
prompts overflow. Reference tokens come from the same engine's cold runs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from vllm import LLM, SamplingParams
from vllm.config import KVTransferConfig
from vllm.v1.request import RequestStatus

from radix_plugin.cache_manager.core.workflow import AgentStepGraph
from radix_plugin.testing.engine import drain, running_llm

BLOCK = 32
NUM_BLOCKS = 80
PROMPT_TOKENS = 1000  # 31 full blocks: three such prompts do not fit in the pool
HOST_TIER = KVTransferConfig(
    kv_connector="RadixHostTierConnector",
    kv_connector_module_path="radix_plugin.cache_manager.connector",
    kv_role="kv_both",
)


@pytest.fixture(scope="module")
def llm() -> Iterator[LLM]:
    with running_llm(
        "tiny",
        # Float32: warm (host-loaded) and cold runs must pick the same greedy tokens in
        # different batch shapes, and bf16 rounding (per CPU ISA) could flip a near-tie.
        dtype="float32",
        max_model_len=2048,
        block_size=BLOCK,
        num_kv_blocks=NUM_BLOCKS,
        max_num_seqs=8,
        enable_prefix_caching=True,
        max_num_batched_tokens=1024,
        scheduler_cls="radix_plugin.RadixScheduler",
        additional_config={"radix_plugin": {"eviction": "workflow", "load_ahead_steps": 2}},
        kv_transfer_config=HOST_TIER,
    ) as engine:
        yield engine


def _scheduler(llm: LLM) -> Any:
    return llm.llm_engine.engine_core.engine_core.scheduler


def _host(llm: LLM) -> Any:
    return _scheduler(llm).connector.scheduler_side


def _prompt(seed: int, n: int = PROMPT_TOKENS) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(16, 4000) for _ in range(n)]


def _params(max_tokens: int = 8, **extra_args: Any) -> SamplingParams:
    return SamplingParams(
        temperature=0.0, max_tokens=max_tokens, ignore_eos=True, extra_args=extra_args or None
    )


def _generate(llm: LLM, prompt: list[int], **extra_args: Any) -> Any:
    (out,) = llm.generate({"prompt_token_ids": prompt}, _params(**extra_args), use_tqdm=False)
    return out


def _reset(llm: LLM) -> None:
    drain(llm)
    assert not _host(llm).loads_in_flight()
    assert llm.reset_prefix_cache()
    _host(llm).reset()


def test_host_round_trip_returns_cold_tokens(llm: LLM) -> None:
    _reset(llm)
    a, b, c = _prompt(1), _prompt(2), _prompt(3)
    cold = _generate(llm, a)
    assert cold.num_cached_tokens == 0
    saved_before = _host(llm).stats.saved_blocks
    for other in (b, c):
        _generate(llm, other)
    assert _host(llm).stats.saved_blocks > saved_before, "nothing was evicted to the host"
    loaded_before = _host(llm).stats.loaded_blocks
    warm = _generate(llm, a)
    loaded = _host(llm).stats.loaded_blocks - loaded_before
    assert loaded > 0, "the second run of the prompt did not load from the host tier"
    assert warm.num_cached_tokens >= loaded * BLOCK
    assert warm.outputs[0].token_ids == cold.outputs[0].token_ids


@pytest.mark.parametrize("hints", ["graph", "tags"])
def test_prefetch_never_loads_into_blocks_in_use(llm: LLM, hints: str) -> None:
    """An agent loop with step hints (an explicit graph, or only workflow and agent tags
    whose order the scheduler learns): every load, demand or prefetch, starts only into
    blocks nobody else holds, prefetches happen, and every agent call gives its cold tokens."""
    _reset(llm)
    scheduler = _scheduler(llm)
    host = _host(llm)
    pool = scheduler.kv_cache_manager.block_pool
    # Agents of their own: the scheduler learns step orders from every tagged request.
    agents = [f"{hints}-{name}" for name in ("planner", "coder", "critic")]
    prompts = {name: _prompt(10 + i) for i, name in enumerate(agents)}
    graph = AgentStepGraph.from_steps(agents, loop=True)
    violations: list[str] = []
    starts: list[str] = []
    original_start = host._start_load

    def checked_start(job_id: str, job: Any, keys: Any) -> None:
        starts.append(job_id)
        for rid in scheduler.requests:
            owned = set(scheduler.kv_cache_manager.get_block_ids(rid)[0])
            clash = owned & set(job.block_ids)
            if clash and rid != job_id:
                violations.append(f"{job_id} loads into blocks {sorted(clash)} held by {rid}")
        for block_id in job.block_ids:
            if pool.blocks[block_id].ref_cnt != 1:
                violations.append(
                    f"{job_id}: block {block_id} has {pool.blocks[block_id].ref_cnt} holders"
                )
        original_start(job_id, job, keys)

    host._start_load = checked_start
    try:
        cold = {name: _generate(llm, prompts[name]).outputs[0].token_ids for name in agents}
        prefetched_before = host.stats.prefetched_blocks
        outputs = []
        for round_ in range(3):
            for step, name in enumerate(agents):
                xargs = graph.hints(f"wf{round_}", step, name)
                if hints == "tags":
                    del xargs["radix_steps"]
                outputs.append((name, _generate(llm, prompts[name], **xargs)))
    finally:
        del host._start_load
    assert not violations, violations
    assert starts, "no load ever started: the pool is not small enough for this test"
    assert host.stats.prefetched_blocks > prefetched_before, "no prefetch happened"
    for name, out in outputs:
        assert out.outputs[0].token_ids == cold[name], f"{name} changed after a host load"


def test_abort_mid_load_loses_nothing_else(llm: LLM) -> None:
    _reset(llm)
    scheduler = _scheduler(llm)
    host = _host(llm)
    engine = llm.llm_engine
    a, b, c, d = _prompt(21), _prompt(22), _prompt(23), _prompt(24, 300)
    cold_a = _generate(llm, a).outputs[0].token_ids
    cold_d = _generate(llm, d).outputs[0].token_ids
    for other in (b, c):
        _generate(llm, other)
    engine.add_request("doomed", {"prompt_token_ids": a}, _params())
    engine.add_request("bystander", {"prompt_token_ids": d}, _params())
    finished: dict[str, Any] = {}
    for out in engine.step():
        finished[out.request_id] = out
    loading = [rid for rid in host.loads_in_flight() if rid.startswith("doomed")]
    assert loading, "the request to abort was not loading"
    # It waits for its blocks without holding up the batch: the bystander runs meanwhile.
    assert scheduler.requests[loading[0]].status == RequestStatus.WAITING_FOR_REMOTE_KVS
    assert any(r.request_id.startswith("bystander") for r in scheduler.running)
    engine.abort_request(["doomed"])
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                finished[out.request_id] = out
    assert finished["bystander"].outputs[0].token_ids == cold_d
    assert not host.loads_in_flight()
    assert not scheduler.requests
    pool = scheduler.kv_cache_manager.block_pool
    assert pool.get_num_free_blocks() == NUM_BLOCKS - 1
    assert _generate(llm, a).outputs[0].token_ids == cold_a
