"""RadixScheduler picks vLLM's sync or async scheduler and runs it over the radix pool.

Built from a real ``VllmConfig`` (tiny test model) and fed real requests; the CPU platform
forces async scheduling off, so the async variant is exercised by turning it on in the
config, as the GPU platform does by default.
"""

from __future__ import annotations

import pytest
import torch
from vllm.engine.arg_utils import EngineArgs
from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import get_hash_fn_by_name
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.request import Request, RequestStatus
from vllm.v1.structured_output import StructuredOutputManager

from radix_plugin import RadixAsyncScheduler, RadixScheduler
from radix_plugin.engine_core.scheduler import RadixSchedulerMixin
from radix_plugin.testing.engine import configure_cpu_env
from radix_plugin.testing.models import get_model_path

BLOCKS = 64


def build(async_scheduling: bool, radix: dict | None = None, **engine_args):
    configure_cpu_env()
    config = EngineArgs(
        model=str(get_model_path("tiny")),
        enforce_eager=True,
        block_size=32,
        max_model_len=512,
        enable_prefix_caching=True,
        scheduler_cls="radix_plugin.RadixScheduler",
        additional_config={"radix_plugin": radix or {"eviction": "lfu", "schedule": "dfs"}},
        **engine_args,
    ).create_engine_config()
    config.scheduler_config.async_scheduling = async_scheduling
    config.cache_config.num_gpu_blocks = BLOCKS
    spec = FullAttentionSpec(block_size=32, num_kv_heads=2, head_size=64, dtype=torch.bfloat16)
    kv = KVCacheConfig(
        num_blocks=BLOCKS,
        kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(["model.layers.0.self_attn.attn"], spec)],
    )
    return RadixScheduler(
        vllm_config=config,
        kv_cache_config=kv,
        structured_output_manager=StructuredOutputManager(config),
        block_size=32,
        hash_block_size=32,
        log_stats=False,
    )


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_variant_follows_async_setting_and_caches_in_the_tree(async_scheduling: bool) -> None:
    scheduler = build(async_scheduling)
    assert isinstance(scheduler, RadixSchedulerMixin)
    assert isinstance(scheduler, AsyncScheduler) == async_scheduling
    assert isinstance(scheduler, RadixAsyncScheduler) == async_scheduling
    assert scheduler.radix_config.eviction == "lfu"
    assert scheduler.radix_scheduling.name == "dfs"

    hash_fn = get_hash_fn_by_name("sha256")
    init_none_hash(hash_fn)
    request = Request(
        "r0",
        list(range(100)),
        SamplingParams(max_tokens=4),
        None,
        block_hasher=get_request_block_hasher(32, hash_fn),
    )
    scheduler.add_request(request)
    output = scheduler.schedule()
    assert output.num_scheduled_tokens == {"r0": 100}
    tree = scheduler.kv_cache_manager.block_pool.tree
    assert tree.stats().cached_blocks == 3  # 100 prompt tokens = 3 full blocks of 32
    assert tree.stats().protected_blocks == 3  # in use by r0


def make_request(rid: str, tokens: list[int], extra: dict | None = None) -> Request:
    hash_fn = get_hash_fn_by_name("sha256")
    init_none_hash(hash_fn)
    return Request(
        rid,
        tokens,
        SamplingParams(max_tokens=4, extra_args=extra),
        None,
        block_hasher=get_request_block_hasher(32, hash_fn),
    )


def test_lpm_order_with_starvation_bound() -> None:
    scheduler = build(async_scheduling=False)
    scheduler.radix_config = type(scheduler.radix_config)(schedule="lpm", max_wait_steps=3)
    pool = scheduler.kv_cache_manager.block_pool
    # Cache a 3-block prefix by running a request through admission, then freeing it.
    warm = make_request("warm", [*range(96), 1])
    scheduler.add_request(warm)
    scheduler.schedule()
    scheduler.finish_requests("warm", RequestStatus.FINISHED_ABORTED)
    assert pool.tree.stats().cached_blocks == 3

    cold = make_request("cold", list(range(1000, 1100)))
    hot = make_request("hot", [*range(96), 7, 8, 9])
    scheduler.waiting.add_request(cold)
    scheduler.waiting.add_request(hot)
    order = []
    for _ in range(4):
        scheduler._radix_reorder_waiting()
        order.append([r.request_id for r in scheduler.waiting])
    # Longest cached prefix first, until "cold" has waited max_wait_steps rounds.
    assert order[:3] == [["hot", "cold"]] * 3
    assert order[3] == ["cold", "hot"]


def test_follower_is_held_back_while_leader_prefills_the_shared_prefix() -> None:
    scheduler = build(async_scheduling=False)
    shared = list(range(5000, 5000 + 256))  # 8 blocks, nothing cached yet
    leader = make_request("leader", [*shared, 1, 2, 3])
    scheduler.add_request(leader)
    scheduler.max_num_scheduled_tokens = 64  # the leader needs several chunked steps
    out = scheduler.schedule()
    assert out.num_scheduled_tokens == {"leader": 64}
    follower = make_request("follower", [*shared, 9, 9, 9])
    stranger = make_request("stranger", list(range(9000, 9040)))
    scheduler.add_request(follower)
    scheduler.add_request(stranger)
    held = scheduler._radix_reorder_waiting()
    assert [r.request_id for r in held] == ["follower"]
    assert [r.request_id for r in scheduler.waiting] == ["stranger"]
    scheduler.waiting.prepend_requests(held)


def test_workflow_hints_reach_the_eviction_policy_and_tag_cached_prefixes() -> None:
    from radix_plugin.core.workflow import AgentStepGraph

    scheduler = build(async_scheduling=False, radix={"eviction": "workflow"})
    policy = scheduler.kv_cache_manager.block_pool.tree.policy
    graph = AgentStepGraph.from_steps(["planner", "coder"], loop=True)
    planner_prompt = list(range(64))
    first = make_request("p1", [*planner_prompt, 1], graph.hints("wf", 0, "planner"))
    scheduler.add_request(first)
    assert policy.steps_of("planner") == 0 and policy.steps_of("coder") == 1
    scheduler.schedule()
    scheduler.finish_requests("p1", RequestStatus.FINISHED_ABORTED)
    # The next planner call hits the cached prompt and tags its path with the agent.
    second = make_request("p2", [*planner_prompt, 2], graph.hints("wf", 0, "planner"))
    scheduler.add_request(second)
    scheduler.schedule()
    pool = scheduler.kv_cache_manager.block_pool
    n_blocks, node = pool.cached_prefix_node(second.block_hashes[:2])
    assert n_blocks == 2
    assert "planner" in node.metadata["agents"]
    # Another workflow reports the coder due now: the merged view takes the minimum.
    scheduler.add_request(make_request("c1", [9] * 40, graph.hints("wf2", 1, "coder")))
    assert policy.steps_of("coder") == 0
