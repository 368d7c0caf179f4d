"""Prefix-sharing workloads driven through a real in-process vLLM engine.

Prompts are token ids (random, seeded), so both engines see byte-identical inputs with no
tokenizer round trip. A workload is a set of sessions; a session's turns run one after the
other (the next prompt extends the previous prompt and its generated answer, as a chat client
re-sends history), and sessions run concurrently.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FIRST_ID = 16  # stay clear of special tokens


@dataclass
class Turn:
    new_tokens: list[int]
    max_tokens: int


@dataclass
class Session:
    prefix: list[int]
    turns: list[Turn]
    children: list[Session] = field(default_factory=list)
    """Sessions started when this one finishes, extending its last prompt and answer
    (tree-of-thought branches)."""


@dataclass
class Workload:
    name: str
    sessions: list[Session]
    concurrency: int
    kv_blocks: int | None = None
    note: str = ""


@dataclass
class RunStats:
    wall_s: float
    requests: int
    prompt_tokens: int
    output_tokens: int
    hit_tokens: int
    ttft_s: list[float]

    @property
    def throughput(self) -> float:
        """Processed tokens (prompt + output) per second."""
        return (self.prompt_tokens + self.output_tokens) / self.wall_s

    @property
    def hit_ratio(self) -> float:
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def ttft_mean(self) -> float:
        return statistics.fmean(self.ttft_s)

    @property
    def ttft_p99(self) -> float:
        xs = sorted(self.ttft_s)
        return xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "wall_s": self.wall_s,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "hit_tokens": self.hit_tokens,
            "throughput_tok_s": self.throughput,
            "hit_ratio": self.hit_ratio,
            "ttft_mean_s": self.ttft_mean,
            "ttft_p99_s": self.ttft_p99,
        }


def _ids(rng: random.Random, n: int, vocab: int) -> list[int]:
    return [rng.randrange(FIRST_ID, vocab) for _ in range(n)]


def count_requests(workload: Workload) -> int:
    """Requests ``run`` will send: every turn of every session, branches included."""
    todo, total = list(workload.sessions), 0
    while todo:
        session = todo.pop()
        total += len(session.turns)
        todo.extend(session.children)
    return total


def run(llm: Any, workload: Workload, on_finish: Callable[[int], None] | None = None) -> RunStats:
    """Run every session of ``workload`` to completion on ``llm``; greedy decoding.
    ``on_finish`` gets the number of requests finished so far, after each one."""
    from vllm import SamplingParams

    engine = llm.llm_engine
    pending = list(workload.sessions)
    state: dict[str, tuple[Session, int, list[int], float]] = {}
    ttft: list[float] = []
    first_seen: set[str] = set()
    stats = {"prompt": 0, "output": 0, "hits": 0, "requests": 0}
    counter = 0

    def submit(session: Session, turn: int, history: list[int]) -> None:
        nonlocal counter
        prompt = history + session.turns[turn].new_tokens
        rid = f"{workload.name}-{counter}"
        counter += 1
        params = SamplingParams(
            temperature=0.0, max_tokens=session.turns[turn].max_tokens, ignore_eos=True
        )
        engine.add_request(rid, {"prompt_token_ids": prompt}, params)
        state[rid] = (session, turn, prompt, time.perf_counter())

    def start_next() -> None:
        while pending and len(state) < workload.concurrency:
            s = pending.pop(0)
            submit(s, 0, list(s.prefix))

    t0 = time.perf_counter()
    start_next()
    while state:
        for out in engine.step():
            rid = out.request_id
            if rid not in state:
                continue
            session, turn, prompt, t_add = state[rid]
            if rid not in first_seen and out.outputs and out.outputs[0].token_ids:
                first_seen.add(rid)
                ttft.append(time.perf_counter() - t_add)
            if not out.finished:
                continue
            del state[rid]
            generated = list(out.outputs[0].token_ids)
            stats["requests"] += 1
            stats["prompt"] += len(prompt)
            stats["output"] += len(generated)
            stats["hits"] += out.num_cached_tokens or 0
            if on_finish is not None:
                on_finish(stats["requests"])
            history = prompt + generated
            if turn + 1 < len(session.turns):
                submit(session, turn + 1, history)
            else:
                for child in session.children:
                    child.prefix = history + child.prefix
                pending[:0] = session.children
        start_next()
    return RunStats(
        wall_s=time.perf_counter() - t0,
        requests=stats["requests"],
        prompt_tokens=stats["prompt"],
        output_tokens=stats["output"],
        hit_tokens=stats["hits"],
        ttft_s=ttft,
    )


# --- the workloads --------------------------------------------------------------------


def shared_system_prompt(vocab: int, seed: int = 0, scale: float = 1.0) -> Workload:
    rng = random.Random(seed)
    system = _ids(rng, int(1536 * scale), vocab)
    sessions = [Session(system, [Turn(_ids(rng, 64, vocab), 16)]) for _ in range(int(48 * scale))]
    return Workload("shared_system_prompt", sessions, concurrency=len(sessions))


def multi_turn_chat(vocab: int, seed: int = 0, scale: float = 1.0) -> Workload:
    rng = random.Random(seed)
    system = _ids(rng, 512, vocab)
    sessions = [
        Session(system, [Turn(_ids(rng, 192, vocab), 32) for _ in range(4)])
        for _ in range(int(12 * scale))
    ]
    return Workload("multi_turn_chat", sessions, concurrency=len(sessions))


def few_shot(vocab: int, seed: int = 0, scale: float = 1.0) -> Workload:
    rng = random.Random(seed)
    shots = [_ids(rng, 1024, vocab) for _ in range(3)]
    sessions = [
        Session(shots[i % 3], [Turn(_ids(rng, 96, vocab), 16)]) for i in range(int(36 * scale))
    ]
    return Workload("few_shot", sessions, concurrency=12)


def tree_of_thought(vocab: int, seed: int = 0, scale: float = 1.0) -> Workload:
    rng = random.Random(seed)

    def branch(depth: int) -> Session:
        kids = [branch(depth - 1) for _ in range(3)] if depth else []
        return Session([], [Turn(_ids(rng, 128, vocab), 32)], kids)

    roots = []
    for _ in range(max(1, int(4 * scale))):
        root = branch(2)
        root.prefix = _ids(rng, 768, vocab)
        roots.append(root)
    return Workload("tree_of_thought", roots, concurrency=12)


def prefix_groups_kv_pressure(
    vocab: int,
    seed: int = 0,
    scale: float = 1.0,
    *,
    prefix_tokens: int = 1024,
    siblings: int = 6,
    kv_blocks: int = 140,
) -> Workload:
    """Many prefix groups arriving interleaved into a pool that holds a few groups: whether
    siblings run back to back (and hit) depends on the scheduler's order. The default pool
    of 140 blocks x 32 tokens holds about 4 groups of 1024-token prefixes."""
    rng = random.Random(seed)
    groups = int(12 * scale)
    prefixes = [_ids(rng, prefix_tokens, vocab) for _ in range(groups)]
    sessions = [
        Session(prefixes[g], [Turn(_ids(rng, 64, vocab), 16)])
        for _ in range(siblings)
        for g in range(groups)
    ]
    held = kv_blocks * 32 // (prefix_tokens + 64 + 16)
    return Workload(
        "prefix_groups_kv_pressure",
        sessions,
        concurrency=len(sessions),
        kv_blocks=kv_blocks,
        note=f"KV pool of {kv_blocks} blocks x 32 tokens holds about {held} prefix groups",
    )


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "shared_system_prompt": shared_system_prompt,
    "multi_turn_chat": multi_turn_chat,
    "few_shot": few_shot,
    "tree_of_thought": tree_of_thought,
    "prefix_groups_kv_pressure": prefix_groups_kv_pressure,
}
