"""The scheduler's collaborators on their own: each over a real ``RadixBlockPool`` inside
vLLM's real ``KVCacheManager`` and real ``Request`` objects, without a scheduler or engine."""

from __future__ import annotations

import random
from typing import Any

import pytest
from test_block_pool import BS, admit, make_manager, pool_of, request
from vllm.v1.core.sched.output import NewRequestData, SchedulerOutput
from vllm.v1.core.sched.request_queue import FCFSRequestQueue
from vllm.v1.request import Request

from radix_plugin.cache_manager.core.hints import parse_hints
from radix_plugin.cache_manager.core.orderings import LongestPrefixMatchPolicy
from radix_plugin.cache_manager.core.registry import make_eviction_policy
from radix_plugin.cache_manager.core.workflow import AgentStepGraph
from radix_plugin.cache_manager.engine_core.hint_feeder import HintFeeder
from radix_plugin.cache_manager.engine_core.pins import PinManager
from radix_plugin.cache_manager.engine_core.waiting_order import WaitingQueueOrder


def cache_prompt(manager: Any, tokens: list[int]) -> Request:
    """Run ``tokens`` through admission and free it: its full blocks stay cached."""
    req, _ = admit(manager, tokens)
    manager.free(req)
    return req


def queue_of(*requests: Request) -> FCFSRequestQueue:
    waiting = FCFSRequestQueue()
    for r in requests:
        waiting.add_request(r)
    return waiting


def order(pool: Any, **options: Any) -> WaitingQueueOrder:
    defaults = {"block_size": BS, "max_wait_steps": 64, "in_batch_sharing": True}
    return WaitingQueueOrder(pool, LongestPrefixMatchPolicy(), **{**defaults, **options})


# --- WaitingQueueOrder ------------------------------------------------------------------


def test_longest_cached_prefix_goes_first_until_the_other_is_overdue() -> None:
    manager = make_manager(32)
    cache_prompt(manager, list(range(12)))  # 3 blocks cached
    cold, hot = request(list(range(100, 112))), request([*range(12), 7])
    waiting = queue_of(cold, hot)
    ordering = order(pool_of(manager), max_wait_steps=2)
    seen = []
    for _ in range(3):
        assert ordering.reorder(waiting, [], 8192) == []
        seen.append([r.request_id for r in waiting])
    assert seen[:2] == [[hot.request_id, cold.request_id]] * 2
    assert seen[2] == [cold.request_id, hot.request_id]  # both overdue: arrival order
    assert ordering.lookup(hot)[0] == 3 and ordering.lookup(cold)[0] == 0


def test_follower_waits_while_a_running_request_prefills_its_first_new_block() -> None:
    manager = make_manager(32)
    shared = list(range(40))  # 10 blocks, nothing cached
    leader = request([*shared, 1])
    assert manager.allocate_slots(leader, 8) is not None  # a first chunk: two blocks
    leader.num_computed_tokens = 8
    follower, stranger = request([*shared, 2]), request(list(range(500, 508)))
    waiting = queue_of(follower, stranger)
    held = order(pool_of(manager)).reorder(waiting, [leader], 8192)
    assert held == [follower]
    assert list(waiting) == [stranger]
    no_sharing = order(pool_of(manager), in_batch_sharing=False)
    waiting = queue_of(follower, stranger)
    assert no_sharing.reorder(waiting, [leader], 8192) == []


def test_wait_counts_are_kept_only_for_requests_still_waiting() -> None:
    manager = make_manager(64)
    ordering = order(pool_of(manager))
    requests = [request(list(range(i * 10, i * 10 + 9))) for i in range(50)]
    waiting = queue_of(*requests)
    ordering.reorder(waiting, [], 8192)
    assert len(ordering) == 50
    for r in requests[:45]:
        waiting.remove_request(r)
    ordering.reorder(waiting, [], 8192)
    assert len(ordering) == 5
    waiting.remove_requests(requests[45:])
    ordering.reorder(waiting, [], 8192)
    assert len(ordering) == 0


def test_remembered_lookups_follow_the_tree_across_steps() -> None:
    """A waiting request's lookup is remembered across steps and only re-checked; after
    every step of random caching, eviction and a reset it equals a fresh search."""
    rng = random.Random(7)
    manager = make_manager(24)
    pool = pool_of(manager)
    ordering = order(pool, in_batch_sharing=False)
    prompts = [[p * 100 + t for t in range(4 * BS + 1)] for p in range(6)]
    waiting_requests = [request([*prompt, 99]) for prompt in prompts]
    waiting = queue_of(*waiting_requests)
    for step in range(60):
        ordering.reorder(waiting, [], 8192)
        for r in waiting_requests:
            assert ordering.lookup(r) == pool.cached_prefix_node(r.block_hashes), step
        if step == 40:
            assert pool.reset_prefix_cache()
            continue
        prompt = rng.choice(prompts)
        cache_prompt(manager, prompt[: rng.randint(BS, len(prompt))])  # extends or evicts
    assert len(ordering.state_sizes()) and ordering.state_sizes()["lookup_memo"] == 6


# --- PinManager -------------------------------------------------------------------------


def pins_over(manager: Any, **options: Any) -> tuple[PinManager, list[float]]:
    clock = [0.0]
    pins = PinManager(
        pool_of(manager),
        block_size=BS,
        pin_share=options.get("pin_share", 0.5),
        default_ttl_s=options.get("default_ttl_s", 0.0),
        clock=lambda: clock[0],
    )
    return pins, clock


def test_a_pin_waits_for_its_prompt_then_lasts_its_ttl() -> None:
    manager = make_manager(32)
    pins, clock = pins_over(manager)
    assert pins.stats().budget_blocks == 15  # half of the 31 usable blocks
    tokens = list(range(8))
    req = request(tokens, {"radix_pin": True, "radix_pin_ttl": 10})
    pins.on_add(req, parse_hints(req.sampling_params.extra_args))
    assert len(pins) == 1 and pins.stats().pinned_blocks == 0  # prompt not computed yet
    computed, hit, *_ = manager.get_computed_blocks(req)
    manager.allocate_slots(
        req, len(tokens) - hit, num_new_computed_tokens=hit, new_computed_blocks=computed
    )
    req.num_computed_tokens = len(tokens)
    pins.after_step({req.request_id: len(tokens)}, {req.request_id: req})
    assert len(pins) == 0 and pins.stats().pinned_blocks == 2
    manager.free(req)
    assert pool_of(manager).tree.stats().pinned_blocks == 2  # freed, still pinned
    clock[0] = 9.9
    pins.expire()
    assert pins.stats().pinned_blocks == 2
    clock[0] = 10.0
    pins.expire()
    assert pins.stats().pinned_blocks == 0 and len(pins.table) == 0


def test_a_request_freed_in_its_prefill_step_pins_then_unpin_releases() -> None:
    manager = make_manager(32)
    pins, _ = pins_over(manager)
    tokens = list(range(12))
    req, _ = admit(manager, tokens, extra={"radix_pin": True})
    pins.on_add(req, parse_hints(req.sampling_params.extra_args))
    manager.free(req)
    pins.on_freed(req)  # finished before after_step saw it
    assert pins.stats().pinned_blocks == 3 and len(pins) == 0
    unpin = request(tokens, {"radix_unpin": True})
    pins.on_add(unpin, parse_hints(unpin.sampling_params.extra_args))
    assert pins.stats().pinned_blocks == 0


def test_pending_pins_are_dropped_when_their_requests_end() -> None:
    manager = make_manager(32)
    pins, _ = pins_over(manager)
    reqs = [request(list(range(i, i + 8)), {"radix_pin": True}) for i in range(100)]
    for r in reqs:
        pins.on_add(r, parse_hints(r.sampling_params.extra_args))
    assert len(pins) == 100
    for r in reqs:
        pins.on_freed(r)  # aborted before any prompt was computed
    assert len(pins) == 0 and pins.stats().pinned_blocks == 0


# --- HintFeeder -------------------------------------------------------------------------


def test_workflow_steps_reach_the_policy_sent_or_learned() -> None:
    manager = make_manager(32, policy="workflow")
    pool = pool_of(manager)
    feeder = HintFeeder(pool, pool.tree.policy, BS)
    graph = AgentStepGraph.from_steps(["planner", "coder"], loop=True)
    feeder.on_add(request(list(range(8)), graph.hints("wf", 0, "planner")), new=True)
    assert pool.tree.policy.steps_of("coder") == 1
    # Tags only: the learner infers the order from the workflow's requests.
    for agent in ("a", "b", "a", "b"):
        tags = {"radix_workflow": "wf2", "radix_agent": agent}
        feeder.on_add(request(list(range(8)), tags), new=True)
    assert feeder.learner.steps_to_execution("wf2") == {"b": 0, "a": 1}  # b runs now


def test_scheduled_agent_requests_tag_their_cached_path() -> None:
    manager = make_manager(32, policy="workflow")
    pool = pool_of(manager)
    feeder = HintFeeder(pool, pool.tree.policy, BS)
    tags = {"radix_workflow": "wf", "radix_agent": "planner"}
    req, _ = admit(manager, [*range(8), 1], extra=tags)
    feeder.on_add(req, new=True)
    output = SchedulerOutput.make_empty()
    output.scheduled_new_reqs = [NewRequestData.from_request(req, ([],))]
    feeder.after_schedule(output, {req.request_id: req})
    _, node = pool.cached_prefix_node(req.block_hashes[:2])
    assert "planner" in node.metadata["agents"]


@pytest.mark.parametrize("policy", ["lru", "session"])
def test_hints_are_dropped_when_requests_end(policy: str) -> None:
    manager = make_manager(64, policy=policy)
    pool = pool_of(manager)
    feeder = HintFeeder(pool, pool.tree.policy, BS)
    reqs = [request(list(range(i, i + 8)), {"session_id": f"s{i % 7}"}) for i in range(200)]
    for r in reqs:
        feeder.on_add(r, new=True)
    assert len(feeder) == 200
    for r in reqs:
        feeder.on_freed(r.request_id)
    assert len(feeder) == 0


def test_no_pool_means_no_policy_feeding() -> None:
    feeder = HintFeeder(None, make_eviction_policy("workflow", online=True), BS)
    graph = AgentStepGraph.from_steps(["planner"])
    hints = feeder.on_add(request(list(range(8)), graph.hints("wf", 0, "planner")), new=True)
    assert hints.agent == "planner" and len(feeder.tracker.agent_steps()) == 0
