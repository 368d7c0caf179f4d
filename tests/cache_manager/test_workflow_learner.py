"""The step-order learner: tags alone give the steps-to-execution an explicit graph would."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radix_plugin.cache_manager.core.hints import MAX_NAME_CHARS, HintError, parse_hints
from radix_plugin.cache_manager.core.workflow import AgentStepGraph, StepOrderLearner

_NAMES = st.text(alphabet="abcdefgh0123456789_-", min_size=1, max_size=6)
_PIPELINES = st.lists(_NAMES, min_size=1, max_size=12, unique=True)


def _round(learner: StepOrderLearner, workflow: str, agents: list[str]) -> None:
    for agent in agents:
        learner.observe(workflow, agent)


@settings(max_examples=200, deadline=None)
@given(agents=_PIPELINES)
def test_one_round_of_a_cyclic_pipeline_gives_the_explicit_graph(agents: list[str]) -> None:
    graph = AgentStepGraph.from_steps(agents, loop=True)
    learner = StepOrderLearner()
    _round(learner, "w", agents)
    assert learner.steps_to_execution("w") == graph.steps_to_execution(len(agents) - 1)
    for i, agent in enumerate(agents):  # the next round: every position as the graph says
        learner.observe("w", agent)
        assert learner.steps_to_execution("w") == graph.steps_to_execution(i)


@settings(max_examples=100, deadline=None)
@given(agents=_PIPELINES, instances=st.integers(1, 4))
def test_new_instances_are_predicted_from_earlier_ones(agents: list[str], instances: int) -> None:
    """Each workflow id runs the pipeline once (a fresh id per run): one earlier run is
    enough for the next id, including the wrap from the last agent to the next run's first."""
    graph = AgentStepGraph.from_steps(agents, loop=True)
    learner = StepOrderLearner()
    for n in range(instances):
        _round(learner, f"run{n}", agents)
    for i, agent in enumerate(agents):
        learner.observe("next", agent)
        assert learner.steps_to_execution("next") == graph.steps_to_execution(i)


@settings(max_examples=100, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=2, max_size=6))
def test_branches_keep_their_observed_frequencies(counts: list[int]) -> None:
    """A hub dispatching to spokes that return to it: a spoke taken with probability p is
    expected to have run 0.5 times after ceil(0.5 / p) rounds of two steps."""
    learner = StepOrderLearner(decay=1.0, min_mass=1e-9, horizon=10_000)
    spokes = [f"s{i}" for i in range(len(counts))]
    for spoke, count in zip(spokes, counts, strict=True):
        for _ in range(count):
            _round(learner, "w", ["hub", spoke])
    learner.observe("w", "hub")
    steps = learner.steps_to_execution("w")
    total = sum(counts)
    for spoke, count in zip(spokes, counts, strict=True):
        assert steps[spoke] == 2 * math.ceil(total / (2 * count) - 1e-9) - 1
    ranked = sorted(zip(counts, spokes, strict=True), reverse=True)
    for (c1, s1), (c2, s2) in itertools.pairwise(ranked):
        assert steps[s1] <= steps[s2], (c1, c2)


def test_a_loop_taken_most_of_the_time_keeps_its_agents_nearest() -> None:
    """plan -> act -> reflect, then back to act 3 times in 4, else a new plan."""
    learner = StepOrderLearner(decay=1.0)
    for _ in range(5):
        _round(learner, "w", ["plan", *["act", "reflect"] * 4])
    learner.observe("w", "plan")
    _round(learner, "w", ["act", "reflect"])
    # plan's expected runs from reflect: 1/4 at step 1, 3/16 at step 3, 1/16 at step 4.
    assert learner.steps_to_execution("w") == {"reflect": 0, "act": 1, "plan": 4}


@settings(max_examples=50, deadline=None)
@given(
    old=_PIPELINES.filter(lambda a: len(a) >= 3),
    data=st.data(),
    old_rounds=st.integers(1, 60),
)
def test_a_changed_pipeline_is_relearned(old: list[str], data, old_rounds: int) -> None:
    new = data.draw(st.permutations(old).filter(lambda p: p != old))
    graph = AgentStepGraph.from_steps(new, loop=True)
    learner = StepOrderLearner()
    for _ in range(old_rounds):
        _round(learner, "w", old)
    for _ in range(7):  # the new order's next agent is the likeliest one
        _round(learner, "w", new)
    for i, agent in enumerate(new):
        learner.observe("w", agent)
        steps = learner.steps_to_execution("w")
        assert steps[new[(i + 1) % len(new)]] == (1 if len(new) > 1 else 0)
    for _ in range(20):  # and then the whole order, as an explicit graph gives it
        _round(learner, "w", new)
    for i, agent in enumerate(new):
        learner.observe("w", agent)
        assert learner.steps_to_execution("w") == graph.steps_to_execution(i)


def test_repeated_calls_of_one_agent_are_one_step() -> None:
    learner = StepOrderLearner()
    _round(learner, "w", ["a", "a", "a", "b", "c", "c", "a", "a"])
    assert learner.steps_to_execution("w") == {"a": 0, "b": 1, "c": 2}


def test_unknown_workflow_predicts_nothing() -> None:
    assert StepOrderLearner().steps_to_execution("never-seen") == {}


@settings(max_examples=50, deadline=None)
@given(
    requests=st.lists(
        st.tuples(st.integers(0, 200), st.integers(0, 400)), min_size=1, max_size=600
    ),
    caps=st.tuples(st.integers(1, 8), st.integers(1, 16), st.integers(1, 4)),
)
def test_hostile_tags_cannot_grow_memory_or_time(requests, caps) -> None:
    max_workflows, max_agents, max_successors = caps
    learner = StepOrderLearner(
        max_workflows=max_workflows,
        max_agents=max_agents,
        max_successors=max_successors,
        horizon=16,
    )
    seen_agents: set[int] = set()
    for workflow, agent in requests:
        seen_agents.add(agent)
        learner.observe(f"w{workflow}", f"a{agent}")
        steps = learner.steps_to_execution(f"w{workflow}")
        assert steps[f"a{agent}"] == 0
        assert all(0 <= s <= learner.horizon + 1 for s in steps.values())
        assert {int(a[1:]) for a in steps} <= seen_agents
    assert learner.num_workflows <= max_workflows
    assert learner.num_agents <= max_agents
    assert learner.num_transitions() <= (max_agents + 1) * max_successors


@pytest.mark.parametrize("kwargs", [{"decay": 0}, {"decay": 1.5}, {"threshold": 0}, {"horizon": 0}])
def test_bad_learner_settings_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        StepOrderLearner(**kwargs)


@settings(max_examples=200)
@given(key=st.sampled_from(["radix_workflow", "radix_agent"]), name=st.text(max_size=300))
def test_tags_are_bounded_names_or_a_4xx_naming_the_key(key: str, name: str) -> None:
    """What reaches the learner is a 1-256 character name; anything else is refused (the API
    server turns the ``HintError``, a ``ValueError``, into HTTP 400) with the key named."""
    if 0 < len(name) <= MAX_NAME_CHARS:
        assert getattr(parse_hints({key: name}), key.removeprefix("radix_")) == name
    else:
        with pytest.raises(HintError, match=key):
            parse_hints({key: name})
