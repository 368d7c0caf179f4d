"""Agents without a graph on a real vLLM engine: tags alone (``radix_workflow`` +
``radix_agent``, no ``radix_steps``) make workflow eviction keep what the pipeline needs next.

One vanilla and one plugin engine (workflow eviction) for the module: tiny model, float32, and
a KV pool that holds about four of the six agents' prompts, so a cyclic pipeline overflows it.
Least recently used is then always the agent due next: vanilla vLLM gets no hits at all.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from vllm import LLM, SamplingParams

from radix_plugin.cache_manager.core.workflow import AgentStepGraph
from radix_plugin.testing.engine import running_llm

BLOCK = 32
NUM_BLOCKS = 56  # 55 usable: about four agents' prompts with their per-step context
AGENTS = [f"agent{i}" for i in range(6)]
PROMPT_TOKENS = 320  # 10 blocks per agent prompt
CONTEXT_TOKENS = 40  # per-step context after it
ROUNDS = 3
ENGINE_ARGS = dict(
    # Float32: the two engines' greedy tokens are compared, and bf16 rounding (per CPU ISA)
    # could flip a near-tie between batch shapes.
    dtype="float32",
    max_model_len=1024,
    block_size=BLOCK,
    num_kv_blocks=NUM_BLOCKS,
    max_num_seqs=4,
    enable_prefix_caching=True,
    max_num_batched_tokens=512,
)
PLUGIN = {
    "scheduler_cls": "radix_plugin.RadixScheduler",
    "additional_config": {"radix_plugin": {"eviction": "workflow"}},
}


@pytest.fixture(scope="module")
def vanilla() -> Iterator[LLM]:
    with running_llm("tiny", **ENGINE_ARGS) as llm:
        yield llm


@pytest.fixture(scope="module")
def plugin() -> Iterator[LLM]:
    with running_llm("tiny", **ENGINE_ARGS, **PLUGIN) as llm:
        yield llm


def _policy(llm: LLM) -> Any:
    return llm.llm_engine.engine_core.engine_core.scheduler.kv_cache_manager.block_pool.tree.policy


def _prompts() -> dict[str, list[int]]:
    rng = random.Random(0)
    return {a: [rng.randrange(16, 4000) for _ in range(PROMPT_TOKENS)] for a in AGENTS}


def _run_pipeline(llm: LLM, workflow: str, hints: str) -> list[list[Any]]:
    """``ROUNDS`` rounds of the six agents in order, one request at a time; per round the
    outputs. ``hints``: "none", "tags" (workflow + agent) or "graph" (tags + radix_steps)."""
    assert llm.reset_prefix_cache()
    prompts = _prompts()
    graph = AgentStepGraph.from_steps(AGENTS, loop=True)
    rng = random.Random(1)
    rounds = []
    for _ in range(ROUNDS):
        outputs = []
        for step, agent in enumerate(AGENTS):
            xargs: dict[str, Any] | None = None
            if hints == "graph":
                xargs = graph.hints(workflow, step, agent)
            elif hints == "tags":
                xargs = {"radix_workflow": workflow, "radix_agent": agent}
            context = [rng.randrange(16, 4000) for _ in range(CONTEXT_TOKENS)]
            params = SamplingParams(
                temperature=0.0, max_tokens=4, ignore_eos=True, extra_args=xargs
            )
            (out,) = llm.generate(
                {"prompt_token_ids": prompts[agent] + context}, params, use_tqdm=False
            )
            outputs.append(out)
        rounds.append(outputs)
    return rounds


def _hits(outputs: list[Any]) -> int:
    return sum(o.num_cached_tokens or 0 for o in outputs)


def test_tags_alone_get_hits_after_the_first_round_where_vanilla_gets_none(
    vanilla: LLM, plugin: LLM
) -> None:
    base = _run_pipeline(vanilla, "w-tags", "none")
    tags = _run_pipeline(plugin, "w-tags", "tags")
    later = slice(1, None)  # the first round is cold everywhere
    assert _hits([o for r in base[later] for o in r]) == 0, "the pool is not small enough"
    assert _hits(tags[0]) == 0
    later_tags = [o for r in tags[later] for o in r]
    # From the second round on, most agents find their whole prompt cached.
    full = [o for o in later_tags if (o.num_cached_tokens or 0) >= PROMPT_TOKENS // BLOCK * BLOCK]
    assert len(full) >= len(later_tags) // 2, [o.num_cached_tokens for o in later_tags]
    for b, t in zip(base, tags, strict=True):
        assert [o.outputs[0].token_ids for o in b] == [o.outputs[0].token_ids for o in t]


def test_tags_alone_match_the_explicit_graph(plugin: LLM) -> None:
    """The learned steps make the same eviction choices the explicit graph does."""
    tags = _run_pipeline(plugin, "w-learned", "tags")
    graph = _run_pipeline(plugin, "w-graph", "graph")
    for r in range(1, ROUNDS):
        assert [o.num_cached_tokens for o in tags[r]] == [o.num_cached_tokens for o in graph[r]]


def test_an_explicit_graph_wins_over_the_learned_order(plugin: LLM) -> None:
    """A request with ``radix_steps`` uses them, though its workflow's order was learned."""
    _run_pipeline(plugin, "w-explicit", "tags")
    xargs = {
        "radix_workflow": "w-explicit",
        "radix_agent": "agent0",
        "radix_steps": '{"agent0": 0, "reviewer": 1}',  # an agent the learner never saw
    }
    params = SamplingParams(temperature=0.0, max_tokens=1, extra_args=xargs)
    plugin.generate({"prompt_token_ids": _prompts()["agent0"]}, params, use_tqdm=False)
    assert _policy(plugin).steps_of("reviewer") == 1
