"""Every per-request and per-session structure of the scheduler returns to its bound
(docs/bounded-state.md) after thousands of requests through vLLM's real scheduler without
a model, under every eviction policy: sessions with end hints, workflows with tags and
steps, pins with TTLs and unpins, radix grammars with jump-forward drafts, vLLM's own JSON
outputs, and aborts mid-prefill and mid-decode, on a pool small enough to evict all along.
"""

from __future__ import annotations

import gc
import json
import random
from typing import Any

import pytest
from vllm.sampling_params import StructuredOutputsParams
from vllm.v1.request import RequestStatus

from radix_plugin.cache_manager.core.policies.workflow import AGENTS_KEY, MAX_NODE_AGENTS
from radix_plugin.cache_manager.core.registry import eviction_policy_names
from radix_plugin.config import JUMP_FORWARD_PROPOSER
from radix_plugin.logits.engine_core import jump_forward_drafts
from radix_plugin.logits.grammar import builder, satisfiable
from radix_plugin.testing.scheduler import build_scheduler, make_request, step

BLOCKS = 64
MAX_SESSIONS = 32
REQUESTS = 2000  # per policy: 14,000 in all
IN_FLIGHT = 12
SPEC = {"method": "custom_class", "model": JUMP_FORWARD_PROPOSER, "num_speculative_tokens": 4}
SYSTEM = list(range(10_000, 10_064))  # two blocks every agent prompt shares
CHOICES = [["alpha beta gamma", "delta"], ["yes", "no", "maybe"], ["north", "south"]]
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
PER_REQUEST = (
    "hints",
    "drafter_modes",
    "draft_caps",
    "forced_now",
    "wait_steps",
    "lookup_memo",
    "pins_pending",
    "watchdog_requests",
    "session_turns",
)
"""Structures keyed by live requests: empty once every request has ended."""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _request(i: int, rng: random.Random) -> Any:
    kind = rng.choice(["session", "session", "workflow", "pin", "grammar", "json", "plain"])
    rid = f"{kind}-{i}"
    tail = [rng.randrange(5000) for _ in range(rng.randrange(1, 40))]
    extra: dict[str, Any] = {}
    params: dict[str, Any] = {"temperature": 0.0}
    max_tokens = rng.randrange(1, 12)
    if kind == "session":
        session = rng.randrange(80)  # more sessions than MAX_SESSIONS: the LRU trims them
        turn = [20_000 + session * 100 + t for t in range(rng.randrange(8, 90))]
        extra = {"session_id": f"s{session}", "radix_session_end": rng.random() < 0.3}
        prompt = turn + tail
    elif kind == "workflow":
        agent = f"agent{rng.randrange(300)}"  # past MAX_NODE_AGENTS on the shared prefix
        extra = {"radix_workflow": f"wf{rng.randrange(1200)}", "radix_agent": agent}
        if rng.random() < 0.3:
            extra["radix_steps"] = json.dumps({agent: 0, f"agent{rng.randrange(300)}": 1})
        prompt = SYSTEM + tail
    elif kind == "pin":
        base = 30_000 + rng.randrange(6) * 100
        extra = {"radix_unpin": True} if rng.random() < 0.1 else {"radix_pin": True}
        if "radix_pin" in extra:
            extra["radix_pin_ttl"] = rng.choice([1.0, 5.0, 30.0])
        prompt = list(range(base, base + 40)) + tail
    elif kind == "grammar":
        extra = {"radix_choice": rng.choice(CHOICES)}
        prompt = tail
        max_tokens = 16
    elif kind == "json":
        params["structured_outputs"] = StructuredOutputsParams(json=SCHEMA)
        prompt = tail
        max_tokens = 16
    else:
        params["temperature"] = rng.choice([0.0, 0.8])
        prompt = tail
    return make_request(rid, prompt, extra, max_tokens=max_tokens, **params)


def _drive(s: Any, clock: Clock, rng: random.Random) -> int:
    """REQUESTS requests, IN_FLIGHT at a time, some aborted; returns the steps taken."""
    added = steps = 0
    while added < REQUESTS or s.has_unfinished_requests():
        while added < REQUESTS and len(s.requests) < IN_FLIGHT:
            s.add_request(_request(added, rng))
            added += 1
        step(s, masked=True)
        steps += 1
        clock.now += 0.1
        if rng.random() < 0.05 and s.requests:
            victim = rng.choice(sorted(s.requests))  # waiting, prefilling or decoding
            s.finish_requests(victim, RequestStatus.FINISHED_ABORTED)
        assert steps < 60 * REQUESTS, "requests stopped finishing"
    return steps


def _max_node_agents(s: Any) -> int:
    tree = s.kv_cache_manager.block_pool.tree
    return max((len(n.meta(AGENTS_KEY, ())) for n in tree.iter_nodes()), default=0)


@pytest.mark.parametrize("eviction", eviction_policy_names(include_offline=False))
def test_every_structure_returns_to_its_bound(eviction: str) -> None:
    options = {"max_sessions": MAX_SESSIONS} if eviction == "session" else {}
    s = build_scheduler(
        radix={"eviction": eviction, "eviction_options": options, "watchdog": True},
        speculative_config=SPEC,
        blocks=BLOCKS,
    )
    clock = Clock()
    s.radix_pins.clock = clock
    rng = random.Random(eviction)
    _drive(s, clock, rng)
    clock.now += 60  # every TTL is up: the next step's expiry releases the pins
    step(s)
    sizes = s.radix_state_sizes()
    assert {k: sizes[k] for k in PER_REQUEST if k in sizes} == dict.fromkeys(
        (k for k in PER_REQUEST if k in sizes), 0
    )
    assert sizes["pin_table_nodes"] == 0
    pins = s.radix_pin_stats()  # the pinned policy's own pins on hot leaves stay in budget
    assert pins.pinned_blocks <= (pins.budget_blocks if eviction == "pinned" else 0)
    assert not s.requests
    free = s.kv_cache_manager.block_pool.get_num_free_blocks()
    assert free == BLOCKS - 1 - pins.pinned_blocks, (free, pins)
    assert sizes["workflow_tracker"] <= 1024 and sizes["workflow_learner_workflows"] <= 1024
    assert sizes["workflow_learner_agents"] <= 1024
    if eviction == "workflow":
        assert sizes["workflow_tracker"] > 0  # workflows were fed
        assert _max_node_agents(s) == MAX_NODE_AGENTS  # 300 agents shared the prefix
    if eviction == "session":
        assert 0 < sizes["session_sessions"] <= MAX_SESSIONS
        assert sizes["session_prompt_ends"] <= MAX_SESSIONS
        assert sizes["session_pending_turns"] <= 4 * MAX_SESSIONS
        assert 0 < sizes["session_shadow_lru_pages"] <= BLOCKS - 1
        assert sizes["session_shadow_tree_blocks"] <= BLOCKS - 1
        assert sizes["session_new_paths"] <= BLOCKS - 1
    drafter = s.radix_drafter
    assert drafter.jump_forward and drafter.state_sizes()["drafter_modes"] == 0
    assert builder._build_grammar_cached.cache_info().currsize <= 256
    assert satisfiable.analyse.cache_info().currsize <= 256
    gc.collect()
    assert len(jump_forward_drafts._FINISHES) == 0  # weak: gone with the requests


def test_a_new_session_policy_sizes_its_shadows_like_the_pool() -> None:
    """Before the cache's first eviction the shadows already hold at most the pool."""
    s = build_scheduler(radix={"eviction": "session"}, blocks=BLOCKS)
    for i in range(200):  # distinct prompts aborted before any prefill: never cached
        s.add_request(make_request(f"r{i}", list(range(i * 1000, i * 1000 + 96))))
        s.finish_requests(f"r{i}", RequestStatus.FINISHED_ABORTED)
    sizes = s.radix_state_sizes()
    assert sizes["session_shadow_lru_pages"] == BLOCKS - 1
    assert sizes["session_shadow_tree_blocks"] <= BLOCKS - 1
    assert sizes["hints"] == sizes["session_turns"] == 0
