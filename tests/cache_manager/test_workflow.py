"""Agent Step Graph hints, their server-side merge, and the workflow eviction order."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radix_plugin.cache_manager.core.policies.workflow import WorkflowPolicy, tag_agent
from radix_plugin.cache_manager.core.radix_tree import RadixTree
from radix_plugin.cache_manager.core.registry import make_eviction_policy
from radix_plugin.cache_manager.core.workflow import (
    AgentStepGraph,
    WorkflowHintError,
    WorkflowTracker,
)
from radix_plugin.cache_manager.core.workflow.graph import parse_steps_hint
from radix_plugin.simulator.generators import agent_pipeline, multi_agent
from radix_plugin.simulator.replay import footprint_blocks, run_policy


def test_steps_to_execution_linear_and_looping() -> None:
    g = AgentStepGraph.from_steps(["plan", ["code", "test"], "review", "code"])
    assert g.steps_to_execution(0) == {"plan": 0, "code": 1, "test": 1, "review": 2}
    assert g.steps_to_execution(2) == {"review": 0, "code": 1}
    looping = AgentStepGraph.from_steps(["plan", ["code", "test"], "review"], loop=True)
    assert looping.steps_to_execution(2) == {"review": 0, "plan": 1, "code": 2, "test": 2}


def test_hints_are_flat_vllm_xargs() -> None:
    g = AgentStepGraph.from_steps(["a", "b"])
    hints = g.hints("wf-1", 0, "a")
    assert hints["radix_workflow"] == "wf-1" and hints["radix_agent"] == "a"
    assert parse_steps_hint(hints["radix_steps"]) == {"a": 0, "b": 1}
    assert all(isinstance(v, str) for v in hints.values())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: AgentStepGraph.from_steps([]), "at least one step"),
        (lambda: AgentStepGraph.from_steps(["a", []]), "step 1 must name at least one agent"),
        (lambda: AgentStepGraph.from_steps(["a"]).steps_to_execution(3), "outside"),
        (lambda: AgentStepGraph.from_steps(["a", "b"]).hints("w", 0, "b"), "does not run at"),
        (lambda: parse_steps_hint("{not json"), "not JSON"),
        (lambda: parse_steps_hint(json.dumps({"a": -1})), "integers from 0"),
        (lambda: parse_steps_hint([1, 2]), "must be an object"),
        (lambda: parse_steps_hint({"a": 0, "b": True}), r"radix_steps values.*'b': True"),
        (lambda: parse_steps_hint('{"a": false}'), r"radix_steps values.*'a': False"),
        (lambda: AgentStepGraph.from_steps(["a", "b"]).hints("w", 2, "a"), "outside"),
        (lambda: AgentStepGraph.from_steps(["a", "b"]).hints("w", -1, "b"), "outside"),
        (lambda: AgentStepGraph.from_steps(["a"], loop=True).hints("w", -1, "a"), "negative"),
    ],
)
def test_bad_workflow_input_is_named(call, message: str) -> None:
    with pytest.raises(WorkflowHintError, match=message):
        call()


def test_loop_graphs_count_steps_across_rounds() -> None:
    looping = AgentStepGraph.from_steps(["plan", "act"], loop=True)
    assert looping.hints("w", 5, "act") == looping.hints("w", 1, "act")
    assert looping.steps_to_execution(4) == {"plan": 0, "act": 1}


def test_tracker_takes_the_minimum_over_workflows_and_forgets_the_stalest() -> None:
    t = WorkflowTracker(max_workflows=2)
    t.update("w1", {"a": 3, "b": 0})
    t.update("w2", {"a": 1})
    assert t.agent_steps() == {"a": 1, "b": 0}
    t.update("w2", {"a": 4})  # the workflow moved on: its latest map replaces the old one
    assert t.agent_steps() == {"a": 3, "b": 0}
    t.update("w3", {"c": 0})  # over capacity: the stalest (w1) is forgotten
    assert t.agent_steps() == {"a": 4, "c": 0}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["w1", "w2", "w3", "w4", "w5"]),
            st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 6), max_size=4),
        ),
        max_size=40,
    ),
    st.integers(1, 4),
)
def test_tracker_merge_equals_the_minimum_over_the_maps_it_keeps(
    updates: list[tuple[str, dict[str, int]]], capacity: int
) -> None:
    """The merge is kept incrementally; it always equals the plain minimum over the
    ``capacity`` most recently updated workflows' latest maps."""
    t = WorkflowTracker(max_workflows=capacity)
    latest: dict[str, dict[str, int]] = {}
    for workflow, steps in updates:
        t.update(workflow, steps)
        latest.pop(workflow, None)
        latest[workflow] = steps
        kept = list(latest.values())[-capacity:]
        expected: dict[str, int] = {}
        for m in kept:
            for agent, s in m.items():
                expected[agent] = min(s, expected.get(agent, s))
        assert t.agent_steps() == expected
        assert len(t) == len(kept)


def test_workflow_policy_evicts_the_agent_needed_last_not_first() -> None:
    policy = make_eviction_policy("workflow")
    assert isinstance(policy, WorkflowPolicy)
    tree = RadixTree(block_size=1, policy=policy, token_ids=True)
    for agent, tokens, blocks in (("soon", [1, 2], [10, 11]), ("late", [5, 6], [20, 21])):
        _, node = tree.insert(tokens, blocks)
        tree.touch(node)  # reused once: an agent prompt, not a one-off tail
        tag_agent(tree, node, agent)
    tree.insert([9, 9], [30, 31])  # untagged: unknown agent = far
    policy.update_steps({"soon": 0, "late": 5})
    assert tree.evict(2) == [31, 30]  # unknown first
    assert tree.evict(2) == [21, 20]  # then the agent furthest from running
    policy.update_steps({"soon": 7, "late": 1})
    _, again = tree.insert([5, 6], [40, 41])
    tree.touch(again)
    tag_agent(tree, again, "late")
    assert tree.evict(2) == [11, 10]


def test_shared_prefix_is_protected_by_its_nearest_agent() -> None:
    policy = make_eviction_policy("workflow")
    tree = RadixTree(block_size=1, policy=policy, token_ids=True)
    _, a = tree.insert([1, 2, 3], [10, 11, 12])
    _, b = tree.insert([1, 2, 4], [10, 11, 13])
    for node, agent in ((a, "a"), (b, "b")):
        tree.touch(node)
        tag_agent(tree, node, agent)
    policy.update_steps({"a": 9, "b": 0})
    assert tree.evict(1) == [12]  # a's own leaf goes first ...
    _, c = tree.insert([7], [14])
    tree.touch(c)
    tag_agent(tree, c, "c")
    policy.update_steps({"b": 0, "c": 4})
    # ... and the shared [1, 2] stays while b (due now) still needs it.
    assert tree.evict(1) == [14]


@pytest.mark.parametrize(
    ("trace", "fraction"),
    [
        (agent_pipeline(concurrent_workflows=1), 0.3),
        (agent_pipeline(concurrent_workflows=16, workflows=64), 0.3),
        (multi_agent(workflows=60, agents=12), 0.3),
    ],
    ids=["pipeline", "pipeline_x16", "multi_agent"],
)
def test_workflow_eviction_recomputes_less_than_lru_in_simulation(trace, fraction: float) -> None:
    cap = int(footprint_blocks(trace, 512) * fraction)
    lru = run_policy("lru", trace, 512, cap, concurrency=4)
    workflow = run_policy("workflow", trace, 512, cap, concurrency=4)
    assert workflow.recomputed_tokens < lru.recomputed_tokens
