"""RadixScheduler picks vLLM's sync or async scheduler and runs it over the radix pool.

Built from a real ``VllmConfig`` (tiny test model) and fed real requests; the CPU platform
forces async scheduling off, so the async variant is exercised by turning it on in the
config, as the GPU platform does by default.
"""

from __future__ import annotations

import pytest
from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import get_hash_fn_by_name
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.request import Request, RequestStatus

from radix_plugin import RadixAsyncScheduler, RadixScheduler
from radix_plugin.cache_manager.core.pin_stats import PinStats
from radix_plugin.cache_manager.engine_core.scheduler import RadixSchedulerMixin
from radix_plugin.testing.scheduler import build_scheduler, make_request, run_steps

BLOCKS = 64


def build(async_scheduling: bool, radix: dict | None = None, cls: type = RadixScheduler, **kw):
    radix = radix or {"eviction": "lfu", "schedule": "dfs"}
    return build_scheduler(
        radix=radix, cls=cls, async_scheduling=async_scheduling, blocks=BLOCKS, **kw
    )


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_variant_follows_async_setting_and_caches_in_the_tree(async_scheduling: bool) -> None:
    scheduler = build(async_scheduling)
    assert isinstance(scheduler, RadixSchedulerMixin)
    assert isinstance(scheduler, AsyncScheduler) == async_scheduling
    assert isinstance(scheduler, RadixAsyncScheduler) == async_scheduling
    assert scheduler.radix_config.eviction == "lfu"
    assert scheduler.radix_order.ordering.name == "dfs"

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


def test_lpm_order_with_starvation_bound() -> None:
    scheduler = build(async_scheduling=False, radix={"schedule": "lpm", "max_wait_steps": 3})
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
        scheduler.radix_order.reorder(scheduler.waiting, scheduler.running, 8192)
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
    held = scheduler.radix_order.reorder(scheduler.waiting, scheduler.running, 64)
    assert [r.request_id for r in held] == ["follower"]
    assert [r.request_id for r in scheduler.waiting] == ["stranger"]
    scheduler.waiting.prepend_requests(held)


def test_workflow_hints_reach_the_eviction_policy_and_tag_cached_prefixes() -> None:
    from radix_plugin.cache_manager.core.workflow import AgentStepGraph

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


def test_hints_are_parsed_once_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    from types import SimpleNamespace

    from radix_plugin.cache_manager.core.workflow import AgentStepGraph, graph

    scheduler = build(async_scheduling=False, radix={"eviction": "workflow"})
    steps = AgentStepGraph.from_steps(["planner", "coder"], loop=True)
    hints = {**steps.hints("wf", 0, "planner"), "radix_pin": True, "radix_priority": 2}
    decoded: list[str] = []

    def loads(raw: str) -> object:
        decoded.append(raw)
        return json.loads(raw)

    monkeypatch.setattr(
        graph, "json", SimpleNamespace(loads=loads, JSONDecodeError=json.JSONDecodeError)
    )
    scheduler.max_num_scheduled_tokens = 48  # chunked prefills: several steps each
    for rid in ("a", "b"):
        scheduler.add_request(make_request(rid, [*range(100), ord(rid)], hints))
    assert run_steps(scheduler) > 4
    assert len(decoded) == 2  # radix_steps decoded once per request, not once per step
    assert len(scheduler.radix_hints) == 0  # dropped as the requests finished


def test_pins_are_kept_per_node_and_bounded_by_the_budget() -> None:
    scheduler = build(async_scheduling=False)
    pool = scheduler.kv_cache_manager.block_pool
    pool.tree.max_pinned_blocks = 4
    shared = list(range(64))  # 2 blocks
    for i in range(5):  # five requests pin the same prefix
        scheduler.add_request(make_request(f"same{i}", [*shared, 100 + i], {"radix_pin": True}))
    run_steps(scheduler)
    assert len(scheduler.radix_pins.table) == 1  # one entry per pinned node, not per request
    assert pool.tree.stats().pinned_blocks == 2
    for i in range(4):  # distinct 2-block prefixes: the budget keeps the two newest
        prompt = [*range(1000 * (i + 1), 1000 * (i + 1) + 64), 1]
        scheduler.add_request(make_request(f"other{i}", prompt, {"radix_pin": True}))
        run_steps(scheduler)
    assert len(scheduler.radix_pins.table) == 2
    assert pool.tree.stats().pinned_blocks == 4
    assert scheduler.reset_prefix_cache()
    assert len(scheduler.radix_pins.table) == 0
    assert pool.tree.stats().pinned_blocks == 0


def _used_blocks(scheduler: RadixScheduler) -> int:
    """Blocks vLLM counts as used (its ``kv_cache_usage`` times the usable pool)."""
    pool = scheduler.kv_cache_manager.block_pool
    return round(scheduler.kv_cache_manager.usage * (pool.num_gpu_blocks - 1))


def test_idle_usage_is_the_pins_until_they_expire_or_are_unpinned() -> None:
    scheduler = build(async_scheduling=False, radix={"pin_ttl_s": 100})
    clock = [0.0]
    scheduler.radix_pins.clock = lambda: clock[0]
    a, b, c = ([*range(k * 1000, k * 1000 + 64), 1] for k in (1, 2, 3))  # 2 blocks each
    scheduler.add_request(make_request("a", a, {"radix_pin": True, "radix_pin_ttl": 10}))
    scheduler.add_request(make_request("b", b, {"radix_pin": True}))  # pin_ttl_s: 100
    scheduler.add_request(make_request("c", c))
    run_steps(scheduler)
    assert scheduler.radix_pin_stats() == PinStats(4, 2, int((BLOCKS - 1) * 0.25))
    assert _used_blocks(scheduler) == 4  # idle: exactly the pinned blocks
    clock[0] = 10.0
    scheduler.schedule()  # expiry is lazy: the next step releases a's pin
    assert scheduler.radix_pin_stats().pinned_blocks == 2 and _used_blocks(scheduler) == 2
    scheduler.add_request(make_request("unpin-b", b, {"radix_unpin": True}))
    run_steps(scheduler)
    assert scheduler.radix_pin_stats().pinned_blocks == 0 and _used_blocks(scheduler) == 0
    scheduler.add_request(make_request("c2", c, {"radix_pin": True}))
    run_steps(scheduler)
    assert _used_blocks(scheduler) == 2
    clock[0] = 110.0  # the pin_ttl_s default
    scheduler.schedule()
    assert _used_blocks(scheduler) == 0 and len(scheduler.radix_pins.table) == 0


def test_plugin_stats_ride_scheduler_stats_to_the_stat_logger() -> None:
    """The samples survive vLLM's msgpack trip, leave vLLM's own dict as it was, and become
    gauges (set) and counters (increased by each step's increase) per engine."""
    from vllm.v1.engine import EngineCoreOutputs
    from vllm.v1.metrics.stats import SchedulerStats
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    from radix_plugin import plugin_metrics as m
    from radix_plugin.api_server.metrics import RadixPinStatLogger, engine_metric_families
    from radix_plugin.compat import put_plugin_stats

    config = build(async_scheduling=False).vllm_config
    logger = RadixPinStatLogger(config, [0, 1])
    model = config.model_config.served_model_name
    evicted = m.sample_key(m.EVICTED_BLOCKS, "capacity", "lru")
    families = engine_metric_families()
    counter = families[m.EVICTED_BLOCKS.name].labels(model, "1", "capacity", "lru")
    before = counter._value.get()
    for increase in (3, 4):
        stats = SchedulerStats(num_kv_fetch_reqs_by_stage={"waiting_to_start": 2})
        put_plugin_stats(stats, {m.PINNED_BLOCKS.name: 7, evicted: increase})
        wire = MsgpackEncoder().encode(EngineCoreOutputs(scheduler_stats=stats))
        received = MsgpackDecoder(EngineCoreOutputs).decode(wire).scheduler_stats
        logger.record(received, None, engine_idx=1)
        assert received.num_kv_fetch_reqs_by_stage == {"waiting_to_start": 2}
    assert counter._value.get() - before == 7
    assert families[m.PINNED_BLOCKS.name].labels(model, "1")._value.get() == 7


def test_each_steps_stats_carry_the_changes_that_add_up_to_the_samples() -> None:
    """The first stats carry every sample; later ones only what changed (counters as
    increases), so summing increases and keeping the last gauges gives the samples."""
    from radix_plugin import plugin_metrics as m
    from radix_plugin.compat import take_plugin_stats
    from radix_plugin.testing.scheduler import runner_output

    scheduler = build(async_scheduling=False, log_stats=True)
    first = take_plugin_stats(scheduler.make_stats())
    assert first is not None and set(first) == set(scheduler.radix_samples())
    assert first[m.PIN_BUDGET_BLOCKS.name] == int((BLOCKS - 1) * 0.25)
    assert take_plugin_stats(scheduler.make_stats()) is None  # nothing changed
    seen = dict(first)
    for i in range(3):  # the second and third share the first's prefix
        scheduler.add_request(make_request(f"r{i}", [*range(64), 100 + i, *range(35)]))
        while scheduler.has_unfinished_requests():
            out = scheduler.schedule()
            outputs = scheduler.update_from_output(out, runner_output(scheduler, out))
            for eco in outputs.values():
                changes = take_plugin_stats(eco.scheduler_stats) or {}
                for key, value in changes.items():
                    counter = key.split("|")[0] in m.COUNTER_NAMES
                    seen[key] = seen.get(key, 0) + value if counter else value
    assert seen == scheduler.radix_samples()
    assert seen[m.LOOKUP_TOKENS.name] == 3 * 99  # each prompt less its last token
    assert seen[m.sample_key(m.HIT_TOKENS, "device")] == 2 * 64  # two blocks, twice
    assert seen[m.CACHED_BLOCKS.name] == 2 + 3 * 1  # the shared prefix, one block each


PER_REQUEST = (
    "hints",
    "wait_steps",
    "lookup_memo",
    "pins_pending",
    "drafter_modes",
    "draft_caps",
    "forced_now",
)
"""Structures keyed by live requests (empty when the engine is idle)."""


def test_state_sizes_name_every_structure_and_per_request_ones_empty_when_idle() -> None:
    """``radix_state_sizes`` (what /metrics exports as ``radix_plugin:state_entries``)
    counts each live request in the per-request structures and nothing once they finish;
    per-session structures keep what they learned, within their caps."""
    radix = {"eviction": "session", "eviction_options": {"window": 2}}
    scheduler = build(async_scheduling=False, radix=radix)
    sizes = scheduler.radix_state_sizes()
    assert set(PER_REQUEST) <= set(sizes)
    assert {"pin_table_nodes", "workflow_tracker", "session_sessions", "grammar_builds"} <= set(
        sizes
    )
    assert all(type(v) is int and v >= 0 for v in sizes.values())
    for i in range(3):
        xargs = {"session_id": f"s{i}"}
        scheduler.add_request(make_request(f"r{i}", [*range(64), i], xargs, max_tokens=3))
    live = scheduler.radix_state_sizes()
    assert live["hints"] == 3
    assert live["session_sessions"] == 3
    run_steps(scheduler)
    idle = scheduler.radix_state_sizes()
    assert {k: idle[k] for k in PER_REQUEST} == dict.fromkeys(PER_REQUEST, 0)
    assert idle["session_sessions"] == 3  # learned per session, capped by max_sessions


class MyScheduler(RadixScheduler):
    """A user subclass, as ``--scheduler-cls mypkg.MyScheduler`` would name it."""

    def schedule(self, *args: object, **kwargs: object) -> object:
        self.steps_seen = getattr(self, "steps_seen", 0) + 1
        return super().schedule(*args, **kwargs)


@pytest.mark.parametrize("cls", [RadixScheduler, MyScheduler])
def test_async_variant_is_an_instance_of_the_class_named(cls: type) -> None:
    sync, asynchronous = build(False, cls=cls), build(True, cls=cls)
    assert type(sync) is cls and not isinstance(sync, AsyncScheduler)
    assert isinstance(asynchronous, cls) and isinstance(asynchronous, RadixScheduler)
    assert isinstance(asynchronous, AsyncScheduler)
    assert type(build(True, cls=cls)) is type(asynchronous)  # built once per class, cached
    if cls is RadixScheduler:
        assert type(asynchronous) is RadixAsyncScheduler


@pytest.mark.parametrize("cls", [RadixScheduler, MyScheduler])
def test_async_variant_runs_requests_to_completion(cls: type) -> None:
    scheduler = build(True, cls=cls)
    assert isinstance(scheduler, AsyncScheduler)
    scheduler.max_num_scheduled_tokens = 64  # chunked prefill over several steps
    shared = list(range(96))
    for i in range(3):
        scheduler.add_request(make_request(f"r{i}", [*shared, 200 + i, 201, 202]))
    steps = run_steps(scheduler)
    assert steps > 3 and not scheduler.requests
    pool = scheduler.kv_cache_manager.block_pool
    stats = pool.tree.stats()
    assert stats.cached_blocks >= 3 and stats.protected_blocks == 0
    assert stats.hit_blocks >= 3  # later requests reused the shared prefix
    assert pool.get_num_free_blocks() == BLOCKS - 1
    if cls is MyScheduler:
        assert scheduler.steps_seen == steps


def test_repeat_pinners_of_one_prefix_keep_one_bounded_entry() -> None:
    scheduler = build(async_scheduling=False)
    shared = list(range(64))  # 2 blocks
    for i in range(200):  # no TTL: each would have added an expiry time
        scheduler.add_request(make_request(f"p{i}", [*shared, 100 + i], {"radix_pin": True}))
    run_steps(scheduler, max_steps=400)
    table = scheduler.radix_pins.table
    (node,) = table._pins
    assert table.count(node) == 200 and table.stored_expiries(node) == 0
