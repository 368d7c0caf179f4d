"""Synthetic Mooncake-format traces for the four prefix-sharing patterns we care about.

Every generator is deterministic in its seed. Hash ids are allocated so that equal ids mean
equal content and equal prefix: a shared prefix reuses the ids of its blocks, anything new
gets fresh ids. ``extra`` carries ``workflow``/``agent`` tags for workflow-aware policies.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import statistics
from collections.abc import Callable

from radix_plugin.simulator.trace import TraceRequest


class _Ids:
    def __init__(self) -> None:
        self._next = itertools.count(1)

    def fresh(self, n: int) -> list[int]:
        return [next(self._next) for _ in range(n)]


def _request(
    ts: float, prefix_ids: list[int], tail_tokens: int, out: int, bs: int, ids: _Ids, **extra
) -> tuple[TraceRequest, list[int]]:
    """A request whose prompt is the full blocks ``prefix_ids`` plus ``tail_tokens`` new
    tokens; returns it and the ids of its *full* blocks (what a follow-up can share)."""
    n_in = len(prefix_ids) * bs + tail_tokens
    tail_ids = ids.fresh(-(-tail_tokens // bs))
    all_ids = prefix_ids + tail_ids
    full = all_ids[: n_in // bs]
    return TraceRequest(int(ts), n_in, out, tuple(all_ids), dict(extra)), full


def multi_turn_chat(
    *,
    conversations: int = 60,
    turns: int = 6,
    system_blocks: int = 4,
    num_system_prompts: int = 3,
    user_tokens: tuple[int, int] = (200, 1200),
    output_tokens: tuple[int, int] = (100, 600),
    think_ms: tuple[int, int] = (2_000, 60_000),
    block_size: int = 512,
    seed: int = 0,
) -> list[TraceRequest]:
    """Chat sessions arriving over time; each turn re-sends the whole history.

    The previous answer is part of the next prompt (as a chat client sends it); it gets fresh
    ids because the engine's generated blocks are unique, as the simulator's outputs are.
    """
    rng, ids, bs = random.Random(seed), _Ids(), block_size
    systems = [ids.fresh(system_blocks) for _ in range(num_system_prompts)]
    events: list[tuple[float, int, int]] = []
    for c in range(conversations):
        t = rng.uniform(0, conversations * 2_000)
        for turn in range(turns):
            events.append((t, c, turn))
            t += rng.uniform(*think_ms)
    events.sort()
    history: dict[int, list[int]] = {}
    out: list[TraceRequest] = []
    for ts, c, _turn in events:
        prefix = history.get(c) or list(rng.choice(systems))
        # Previous answer + new user message, as new content after the shared history.
        tail = rng.randint(*user_tokens) + (rng.randint(*output_tokens) if c in history else 0)
        req, full = _request(ts, prefix, tail, rng.randint(*output_tokens), bs, ids, session=c)
        history[c] = full
        out.append(req)
    return out


CONTINUE_BY_TURN = (0.41, 0.36, 0.44, 0.52, 0.61, 0.64, 0.68, 0.75, 0.80)
"""P(a next turn | k turns so far) on the Mooncake conversation trace (sessions derived from
its hash-id chains): short chats mostly stop, long ones mostly go on."""
PACE_CORRELATION = 0.36
"""Correlation of consecutive log inter-turn gaps within a session on the same trace: a
user (or a client program) keeps its pace."""


def chat_sessions(
    *,
    conversations: int = 6000,
    continue_by_turn: tuple[float, ...] = CONTINUE_BY_TURN,
    max_turns: int = 12,
    gap_requests: tuple[int, int] = (100, 2000),
    pace_correlation: float = PACE_CORRELATION,
    system_blocks: int = 2,
    num_system_prompts: int = 4,
    user_tokens: tuple[int, int] = (300, 1500),
    output_tokens: tuple[int, int] = (100, 500),
    block_size: int = 512,
    seed: int = 0,
) -> list[TraceRequest]:
    """Chat traffic as served traces show it: most conversations stop after one or two turns
    (turn ``k`` gets a next one with ``continue_by_turn[k]``), and a next turn arrives
    100-2,000 requests later (log-uniform), far past what LRU keeps under pressure.

    Each conversation keeps a pace: its gaps' log-uniform quantiles are correlated by
    ``pace_correlation`` (a Gaussian copula, so every gap is still log-uniform). Time is
    counted in request slots, so gaps are in requests; ``extra["session"]`` names the
    conversation and ``extra["last"]`` marks its final turn.
    """
    if not 0.0 <= pace_correlation <= 1.0:
        raise ValueError(f"pace_correlation must be in [0, 1], got {pace_correlation}")
    rng, ids, bs = random.Random(seed), _Ids(), block_size
    systems = [ids.fresh(system_blocks) for _ in range(num_system_prompts)]
    turns = []
    for _ in range(conversations):
        n = 1
        while n < max_turns and rng.random() < continue_by_turn[min(n, len(continue_by_turn)) - 1]:
            n += 1
        turns.append(n)
    # Conversations start at a constant rate from ``lead`` before the window, so the window
    # sees a steady state (one request per time unit, some conversations already under way)
    # instead of a ramp up and down that would distort gaps counted in requests.
    lead = 2.0 * gap_requests[1]
    start, end = -lead, float(sum(turns)) - lead
    lo, hi = (math.log(g) for g in gap_requests)
    normal = statistics.NormalDist()
    own, fresh = math.sqrt(pace_correlation), math.sqrt(1.0 - pace_correlation)
    events: list[tuple[float, int, int]] = []
    for c, n in enumerate(turns):
        t = rng.uniform(start, end)
        pace = rng.gauss(0.0, 1.0)
        for turn in range(n):
            if 0.0 <= t < end:
                events.append((t, c, turn))
            u = normal.cdf(own * pace + fresh * rng.gauss(0.0, 1.0))
            t += math.exp(lo + (hi - lo) * u)
    events.sort()
    history: dict[int, list[int]] = {}
    out: list[TraceRequest] = []
    for ts, c, turn in events:
        prefix = history.get(c) or list(rng.choice(systems))
        tail = rng.randint(*user_tokens) + (rng.randint(*output_tokens) if c in history else 0)
        last = turn == turns[c] - 1
        req, full = _request(
            ts, prefix, tail, rng.randint(*output_tokens), bs, ids, session=c, last=last
        )
        history[c] = full
        out.append(req)
    return out


def few_shot(
    *,
    requests: int = 400,
    tasks: int = 12,
    instruction_blocks: tuple[int, int] = (4, 12),
    question_tokens: tuple[int, int] = (100, 700),
    output_tokens: tuple[int, int] = (20, 200),
    zipf_alpha: float = 1.1,
    block_size: int = 512,
    seed: int = 0,
) -> list[TraceRequest]:
    """Task-specific few-shot instructions shared by many one-off questions; task popularity
    is Zipf-distributed, so a few prefixes are hot and many are warm."""
    rng, ids, bs = random.Random(seed), _Ids(), block_size
    prompts = [ids.fresh(rng.randint(*instruction_blocks)) for _ in range(tasks)]
    weights = [1.0 / (k + 1) ** zipf_alpha for k in range(tasks)]
    out = []
    for i in range(requests):
        task = rng.choices(range(tasks), weights)[0]
        req, _ = _request(
            i * 500,
            prompts[task],
            rng.randint(*question_tokens),
            rng.randint(*output_tokens),
            bs,
            ids,
            task=task,
        )
        out.append(req)
    return out


def tree_of_thought(
    *,
    problems: int = 30,
    depth: int = 3,
    branching: int = 3,
    problem_tokens: tuple[int, int] = (1000, 3000),
    thought_tokens: tuple[int, int] = (300, 900),
    output_tokens: tuple[int, int] = (100, 400),
    concurrent_problems: int = 4,
    block_size: int = 512,
    seed: int = 0,
) -> list[TraceRequest]:
    """Breadth-first thought expansion: every child prompt extends its parent's prompt with
    one thought; several problems are explored at once, interleaved."""
    rng, ids, bs = random.Random(seed), _Ids(), block_size
    per_problem: list[list[TraceRequest]] = []
    for p in range(problems):
        reqs: list[TraceRequest] = []
        root, root_full = _request(
            0, [], rng.randint(*problem_tokens), rng.randint(*output_tokens), bs, ids, problem=p
        )
        reqs.append(root)
        frontier = [root_full]
        for _ in range(depth):
            nxt = []
            for parent in frontier:
                for _b in range(branching):
                    req, full = _request(
                        0,
                        parent,
                        rng.randint(*thought_tokens),
                        rng.randint(*output_tokens),
                        bs,
                        ids,
                        problem=p,
                    )
                    reqs.append(req)
                    nxt.append(full)
            frontier = rng.sample(nxt, min(branching, len(nxt)))  # beam: keep the best few
        per_problem.append(reqs)
    return _interleave(per_problem, concurrent_problems, rng)


def multi_agent(
    *,
    workflows: int = 24,
    agents: int = 6,
    steps: int = 12,
    agent_prompt_blocks: tuple[int, int] = (4, 16),
    context_tokens: tuple[int, int] = (200, 800),
    output_tokens: tuple[int, int] = (50, 300),
    concurrent_workflows: int = 4,
    random_start: bool = True,
    block_size: int = 512,
    seed: int = 0,
) -> list[TraceRequest]:
    """Agents with large fixed prompts called in a fixed cyclic order by each workflow; the
    request is the agent's prompt followed by the workflow's step-specific context. Each
    workflow starts at a random agent unless ``random_start`` is off (a fixed pipeline)."""
    rng, ids, bs = random.Random(seed), _Ids(), block_size
    agent_prompts = [ids.fresh(rng.randint(*agent_prompt_blocks)) for _ in range(agents)]
    order = list(range(agents))
    per_wf: list[list[TraceRequest]] = []
    for w in range(workflows):
        reqs = []
        start = rng.randrange(agents) if random_start else 0
        for s in range(steps):
            a = order[(start + s) % agents]
            req, _ = _request(
                0,
                agent_prompts[a],
                rng.randint(*context_tokens),
                rng.randint(*output_tokens),
                bs,
                ids,
                workflow=w,
                agent=a,
                step=s,
            )
            reqs.append(req)
        per_wf.append(reqs)
    return _interleave(per_wf, concurrent_workflows, rng)


def _interleave(
    streams: list[list[TraceRequest]], width: int, rng: random.Random
) -> list[TraceRequest]:
    """Run ``width`` streams at a time, each issuing its next request after a random delay;
    a finished stream is replaced by the next one. Timestamps are assigned here."""
    heap: list[tuple[float, int, int]] = []
    pending = iter(range(len(streams)))
    for _ in range(min(width, len(streams))):
        s = next(pending)
        heapq.heappush(heap, (rng.uniform(0, 1_000), s, 0))
    out: list[TraceRequest] = []
    while heap:
        t, s, k = heapq.heappop(heap)
        r = streams[s][k]
        out.append(TraceRequest(int(t), r.input_length, r.output_length, r.hash_ids, r.extra))
        if k + 1 < len(streams[s]):
            heapq.heappush(heap, (t + rng.uniform(500, 5_000), s, k + 1))
        else:
            nxt = next(pending, None)
            if nxt is not None:
                heapq.heappush(heap, (t + rng.uniform(0, 1_000), nxt, 0))
    return out


def agent_pipeline(
    *, workflows: int = 40, agents: int = 8, concurrent_workflows: int = 1, **kwargs
) -> list[TraceRequest]:
    """KVFlow's setting: every workflow runs the same agent pipeline front to back, one at a
    time (``concurrent_workflows=1``) or many at once."""
    return multi_agent(
        workflows=workflows,
        agents=agents,
        steps=agents,
        concurrent_workflows=concurrent_workflows,
        random_start=False,
        **kwargs,
    )


WORKLOADS: dict[str, Callable[..., list[TraceRequest]]] = {
    "multi_turn_chat": multi_turn_chat,
    "few_shot": few_shot,
    "tree_of_thought": tree_of_thought,
    "multi_agent": multi_agent,
    "agent_pipeline": agent_pipeline,
    "chat_sessions": chat_sessions,
}


def generate(name: str, **kwargs) -> list[TraceRequest]:
    gen = WORKLOADS.get(name)
    if gen is None:
        raise ValueError(f"unknown workload {name!r}; valid choices: {', '.join(WORKLOADS)}")
    return gen(**kwargs)
