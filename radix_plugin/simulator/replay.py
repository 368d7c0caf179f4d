"""Replay a trace through a cache driver with ``concurrency`` requests in flight."""

from __future__ import annotations

import bisect
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from radix_plugin.cache_manager.core.policies.builtin import BeladyPolicy
from radix_plugin.cache_manager.core.policies.session import SessionPolicy
from radix_plugin.cache_manager.core.policies.workflow import WorkflowPolicy, tag_agent
from radix_plugin.cache_manager.core.radix_tree import RadixNode
from radix_plugin.cache_manager.core.registry import make_eviction_policy
from radix_plugin.cache_manager.core.workflow import AgentStepGraph, WorkflowTracker
from radix_plugin.simulator.drivers import CacheDriver, RadixDriver, VllmDriver, request_pages
from radix_plugin.simulator.sessions import ClientHints
from radix_plugin.simulator.trace import TraceRequest


@dataclass(frozen=True, slots=True)
class ReplayResult:
    policy: str
    capacity_blocks: int
    requests: int
    prompt_tokens: int
    hit_tokens: int
    rejected: int
    manager_seconds: float

    @property
    def hit_ratio(self) -> float:
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def recomputed_tokens(self) -> int:
        return self.prompt_tokens - self.hit_tokens

    @property
    def us_per_request(self) -> float:
        return 1e6 * self.manager_seconds / max(1, self.requests)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            hit_ratio=self.hit_ratio,
            recomputed_tokens=self.recomputed_tokens,
            us_per_request=self.us_per_request,
        )
        return d


class TraceTooLargeError(ValueError):
    """A single request needs more blocks than the whole cache has."""


def replay(
    trace: Sequence[TraceRequest],
    driver: CacheDriver,
    block_size: int,
    concurrency: int = 1,
    clock: list[int] | None = None,
    on_admit: Callable[[int, TraceRequest], None] | None = None,
    on_arrival: Callable[[int, TraceRequest], None] | None = None,
    progress: Callable[[], None] | None = None,
) -> ReplayResult:
    """Admit requests in trace order, finishing the oldest when full; count hit tokens.

    A request that does not fit while others are in flight waits for the oldest to finish,
    as a real engine would queue it. ``clock[0]`` is set to the index being admitted (the
    Belady oracle reads it). ``on_arrival`` sees each request before its admission (where an
    engine's scheduler sees a new request), ``on_admit`` after it; ``progress`` is called
    once per request (a progress bar).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    in_flight: deque[int] = deque()
    prompt_tokens = hit_tokens = rejected = 0
    spent = 0.0
    for index, req in enumerate(trace):
        if clock is not None:
            clock[0] = index
        t0 = time.perf_counter()
        if on_arrival is not None:
            on_arrival(index, req)
        while len(in_flight) >= concurrency:
            driver.finish(in_flight.popleft())
        hit = driver.admit(index, req)
        while hit is None and in_flight:
            driver.finish(in_flight.popleft())
            hit = driver.admit(index, req)
        spent += time.perf_counter() - t0
        prompt_tokens += req.input_length
        if progress is not None:
            progress()
        if hit is None:
            rejected += 1
            continue
        hit_tokens += hit
        in_flight.append(index)
        if on_admit is not None:
            on_admit(index, req)
    t0 = time.perf_counter()
    while in_flight:
        driver.finish(in_flight.popleft())
    spent += time.perf_counter() - t0
    leaked = driver.leaked_blocks()
    if leaked:
        raise AssertionError(f"{driver.name}: {leaked} blocks leaked after replay")
    return ReplayResult(
        policy=driver.name,
        capacity_blocks=getattr(driver, "capacity", 0),
        requests=len(trace),
        prompt_tokens=prompt_tokens,
        hit_tokens=hit_tokens,
        rejected=rejected,
        manager_seconds=spent,
    )


def belady_oracle(trace: Sequence[TraceRequest], block_size: int, clock: list[int]):
    """``next_use(node)``: the first request index >= now whose prompt has the node's last
    page (with its prefix, since the page key is the tree path's last page). The policy
    ranks one page at a time (``rank_per_block``), so this is every block's own next use."""
    uses: dict[Any, list[int]] = defaultdict(list)
    for index, req in enumerate(trace):
        for page in request_pages(index, req, block_size)[0]:
            uses[page].append(index)

    def next_use(node: RadixNode) -> float:
        times = uses.get(node.pages[-1])
        if not times:
            return float("inf")
        j = bisect.bisect_left(times, clock[0])
        return float(times[j]) if j < len(times) else float("inf")

    return next_use


def run_policy(
    name: str,
    trace: Sequence[TraceRequest],
    block_size: int,
    capacity_blocks: int,
    concurrency: int = 1,
    hints: Sequence[ClientHints] | None = None,
    progress: Callable[[], None] | None = None,
) -> ReplayResult:
    """Replay ``trace`` under policy ``name`` (``vllm`` = vLLM's own manager).

    ``hints`` (one per request) are the session hints a client sends; a session policy
    without them infers conversations from the prompts alone. ``progress`` is called once
    per request."""
    if name == "vllm":
        max_len = max(r.input_length + r.output_length for r in trace) + block_size
        driver = VllmDriver(capacity_blocks, block_size, max_len)
        return replay(trace, driver, block_size, concurrency, progress=progress)
    policy = make_eviction_policy(name)
    clock = [0]
    if isinstance(policy, BeladyPolicy):
        policy.set_oracle(belady_oracle(trace, block_size, clock))
    driver = RadixDriver(capacity_blocks, block_size, policy)
    on_admit = on_arrival = None
    if isinstance(policy, WorkflowPolicy):
        on_admit = workflow_hints(trace, driver, policy)
    if isinstance(policy, SessionPolicy):
        on_arrival, on_admit = session_hints(driver, policy, hints)
    return replay(trace, driver, block_size, concurrency, clock, on_admit, on_arrival, progress)


def workflow_hints(
    trace: Sequence[TraceRequest], driver: RadixDriver, policy: WorkflowPolicy
) -> Callable[[int, TraceRequest], None]:
    """What a KVFlow client sends: each workflow's Agent Step Graph is its own sequence of
    agents (declared up front), looping because the application runs the same workflow
    again; at every step the server learns that workflow's steps-to-execution and which
    agent the admitted prompt belongs to."""
    plans: dict[Any, dict[int, str]] = defaultdict(dict)
    for r in trace:
        if "workflow" in r.extra:
            plans[r.extra["workflow"]][r.extra["step"]] = str(r.extra["agent"])
    graphs = {
        w: AgentStepGraph.from_steps([plan[s] for s in sorted(plan)], loop=True)
        for w, plan in plans.items()
    }
    tracker = WorkflowTracker()

    def on_admit(index: int, req: TraceRequest) -> None:
        w = req.extra.get("workflow")
        if w is None:
            return
        tracker.update(str(w), graphs[w].steps_to_execution(req.extra["step"]))
        policy.update_steps(tracker.agent_steps())
        tag_agent(driver.tree, driver.node_of(index), str(req.extra["agent"]))

    return on_admit


def session_hints(
    driver: RadixDriver, policy: SessionPolicy, hints: Sequence[ClientHints] | None
) -> tuple[Callable[[int, TraceRequest], None], Callable[[int, TraceRequest], None]]:
    """What the engine does with a request's session hints: note them when it arrives, tag
    its cached prompt as the session's tail once admitted."""
    bs = driver.block_size

    def on_arrival(index: int, req: TraceRequest) -> None:
        h = hints[index] if hints is not None else None
        policy.note_request(
            index,
            h.session if h is not None else None,
            request_pages(index, req, bs)[0],
            session_end=h.session_end if h is not None else None,
        )

    def on_admit(index: int, req: TraceRequest) -> None:
        policy.tag(index, driver.node_of(index))
        policy.forget_request(index)

    return on_arrival, on_admit


def footprint_blocks(trace: Sequence[TraceRequest], block_size: int) -> int:
    """Distinct full prompt blocks in the trace: the cache size at which nothing is evicted
    (outputs aside)."""
    seen: set[tuple[int, ...]] = set()
    for r in trace:
        full = r.input_length // block_size
        for i in range(1, full + 1):
            seen.add(r.hash_ids[:i])
    return len(seen)


def run_all(
    policies: Sequence[str],
    trace: Sequence[TraceRequest],
    block_size: int,
    capacity_blocks: int,
    concurrency: int = 1,
) -> list[ReplayResult]:
    return [run_policy(p, trace, block_size, capacity_blocks, concurrency) for p in policies]


__all__ = ["ReplayResult", "TraceTooLargeError", "footprint_blocks", "replay", "run_all"]
