"""The scheduler and the tree at a GPU's scale: vLLM's ``Scheduler`` vs ``RadixScheduler``,
no model.

    python benchmarks/scheduler_scale.py [--blocks 100000,1000000] [--running 512]
        [--waiting 64] [--workloads shared_prefix,chat,workflow,structured]
        [--configs vanilla,lru/lpm,...] [--steps 300] [--profile DIR]
        [--name scheduler_scale] [--out benchmarks/results]

    quick (under a minute): --blocks 10000 --running 64 --steps 20 --configs vanilla,lru/lpm

Both schedulers are built directly, as vLLM's own unit tests build theirs: a real
``VllmConfig`` for the random-weight ``tiny`` test model (nothing is loaded or downloaded), a
``KVCacheConfig`` with one full-attention group of ``--blocks`` blocks of 16 tokens, a
``StructuredOutputManager``, and real ``Request`` objects hashed by vLLM's block hasher. Each
step runs ``schedule()`` and ``update_from_output()`` with a ``ModelRunnerOutput`` holding one
sampled token per scheduled request (none for a prefill chunk that does not finish its
prompt); the structured workload also runs ``get_grammar_bitmask()`` and, where drafts are
on, ``update_draft_token_ids()``, as vLLM's ``EngineCore.step`` does. What the model would
compute is emulated outside the timed region.

Every configuration runs in its own child process with the same seeded request stream: the
i-th request (prompt, hints and the 32 tokens the "model" answers) is the same for every
configuration; only when it arrives depends on the scheduler (the waiting queue is topped up
to ``--waiting`` after every step, so ``--running`` requests run at all times). The pool is
filled first (warm-up until every block has been handed out once), then ``--steps`` steps
are measured. At the end the run drains (no more arrivals) and checks that every request
finished with its expected output count, that no block is still referenced and that every
block is free again.

Workloads (``--workloads``):

* ``shared_prefix``: 64 system prompts of 1,024 tokens; a request is one of them + a unique
  256-token part, and answers 32 tokens. With the pool full, 17 of the 18 blocks a request
  allocates evict a cached block (the 18th is its partial last block, never cached).
* ``chat``: multi-turn sessions (``session_id`` in ``vllm_xargs``): 16 system prompts of 512
  tokens, 2-8 turns of a 128-token user message and a 32-token answer; a next turn's prompt
  is the previous prompt + answer + the new message. Twice as many sessions are open as run,
  each picked at random for its next turn.
* ``workflow``: agent workflows with KVFlow hints (``radix_workflow``, ``radix_agent``,
  ``radix_steps`` from ``AgentStepGraph.hints``): 16 agents with 1,024-token prompts; each
  workflow loops over 4 of them for 4-12 steps; a request is its agent's prompt + the
  workflow's 256-token context + a 128-token step part.
* ``structured``: ``shared_prefix`` with a JSON schema on every request (greedy, as
  jump-forward's drafts need on CPU); the emulated model picks each token among those the
  grammar bitmask allows and accepts every valid draft.

Configurations (``--configs``): ``vanilla`` (vLLM's scheduler), ``EVICTION/ORDERING`` for the
plugin (e.g. ``lru/lpm``, ``session/lpm``, ``lru/dfs``), and ``lru/lpm+jf``: the plugin with
jump-forward drafts (the no-op-proposer speculative config the plugin installs by default on
CPU). Jump-forward configurations only run on the ``structured`` workload. The plugin runs
as users get it by default, so its opt-in step watchdog is off; ``+wd`` (e.g. ``lru/lpm+wd``)
turns it on to show its cost.

Reported per configuration: step time (``schedule`` + ``update_from_output``) median, p99
and max over the measured steps, ``add_request`` time per request, memory per cached block
(tracemalloc of the scheduler build and the fill, and the RSS delta, over blocks cached),
the share of block allocations that evicted a cached block, and the prefix hit ratio.
``--profile DIR`` writes a cProfile of the measured steps and arrivals per configuration.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from results_io import machine, run_in_child, write_results

BLOCK = 16
MAX_BATCHED_TOKENS = 8192
MAX_MODEL_LEN = 4096
OUTPUT_TOKENS = 32
FIRST_TOKEN = 16  # below: the tiny model's special tokens
DRAFT_SLOTS = 16  # as radix_plugin.plugin.DRAFT_SLOTS
MIN_WARMUP_STEPS = 64
SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, "ok": {"type": "boolean"}},
    "required": ["id", "ok"],
    "additionalProperties": False,
}
WORKLOADS = ("shared_prefix", "chat", "workflow", "structured")
DEFAULT_CONFIGS = (
    "vanilla",
    "lru/lpm",
    "lfu/lpm",
    "priority/lpm",
    "adaptive/lpm",
    "workflow/lpm",
    "session/lpm",
    "lru/dfs",
    "lru/fcfs",
    "lru/lpm+jf",
)


# --- request streams ------------------------------------------------------------------------


class Spec:
    """One request of a stream: what a client sends and what the model will answer."""

    __slots__ = ("extra", "outputs", "prompt", "rid", "structured")

    def __init__(
        self,
        rid: str,
        prompt: list[int],
        outputs: list[int],
        extra: dict[str, Any] | None = None,
        structured: bool = False,
    ) -> None:
        self.rid, self.prompt, self.outputs = rid, prompt, outputs
        self.extra, self.structured = extra, structured


class Stream:
    """A seeded request stream: the i-th request is the same whoever asks for it."""

    def __init__(self, seed: int, vocab: int, concurrency: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.vocab = vocab
        self.concurrency = concurrency
        self.count = 0

    def tokens(self, n: int) -> list[int]:
        return self.rng.integers(FIRST_TOKEN, self.vocab, size=n).tolist()

    def next(self) -> Spec:
        self.count += 1
        return self._next(f"r{self.count - 1}")

    def _next(self, rid: str) -> Spec:
        raise NotImplementedError


class SharedPrefix(Stream):
    def __init__(self, seed: int, vocab: int, concurrency: int, structured: bool = False):
        super().__init__(seed, vocab, concurrency)
        self.prompts = [self.tokens(1024) for _ in range(64)]
        self.structured = structured

    def _next(self, rid: str) -> Spec:
        prompt = self.prompts[int(self.rng.integers(len(self.prompts)))] + self.tokens(256)
        return Spec(rid, prompt, self.tokens(OUTPUT_TOKENS), structured=self.structured)


class Chat(Stream):
    def __init__(self, seed: int, vocab: int, concurrency: int):
        super().__init__(seed, vocab, concurrency)
        self.systems = [self.tokens(512) for _ in range(16)]
        self.sessions: list[list[Any]] = [self._session(i) for i in range(2 * concurrency)]
        self.opened = len(self.sessions)

    def _session(self, n: int) -> list[Any]:
        system = self.systems[int(self.rng.integers(len(self.systems)))]
        # [session id, history, turns left]
        return [f"s{n}", list(system), int(self.rng.integers(2, 9))]

    def _next(self, rid: str) -> Spec:
        i = int(self.rng.integers(len(self.sessions)))
        sid, history, left = self.sessions[i]
        prompt = history + self.tokens(128)
        outputs = self.tokens(OUTPUT_TOKENS)
        if left > 1:
            self.sessions[i] = [sid, prompt + outputs, left - 1]
        else:
            self.sessions[i] = self._session(self.opened)
            self.opened += 1
        return Spec(rid, prompt, outputs, {"session_id": sid})


class Workflow(Stream):
    def __init__(self, seed: int, vocab: int, concurrency: int):
        super().__init__(seed, vocab, concurrency)
        from radix_plugin.cache_manager.core.workflow import AgentStepGraph

        self.graph_cls = AgentStepGraph
        self.agents = [f"agent{i}" for i in range(16)]
        self.agent_prompts = {a: self.tokens(1024) for a in self.agents}
        self.flows: list[list[Any]] = [self._flow(i) for i in range(2 * concurrency)]
        self.opened = len(self.flows)

    def _flow(self, n: int) -> list[Any]:
        order = [self.agents[int(a)] for a in self.rng.permutation(len(self.agents))[:4]]
        graph = self.graph_cls.from_steps(order, loop=True)
        # [workflow id, graph, agents in order, context, next step, steps left]
        return [f"wf{n}", graph, order, self.tokens(256), 0, int(self.rng.integers(4, 13))]

    def _next(self, rid: str) -> Spec:
        i = int(self.rng.integers(len(self.flows)))
        wid, graph, order, context, step, left = self.flows[i]
        agent = order[step % len(order)]
        prompt = self.agent_prompts[agent] + context + self.tokens(128)
        hints = graph.hints(wid, step, agent)
        if left > 1:
            self.flows[i] = [wid, graph, order, context, step + 1, left - 1]
        else:
            self.flows[i] = self._flow(self.opened)
            self.opened += 1
        return Spec(rid, prompt, self.tokens(OUTPUT_TOKENS), hints)


def make_stream(workload: str, seed: int, vocab: int, concurrency: int) -> Stream:
    if workload == "shared_prefix":
        return SharedPrefix(seed, vocab, concurrency)
    if workload == "structured":
        return SharedPrefix(seed, vocab, concurrency, structured=True)
    if workload == "chat":
        return Chat(seed, vocab, concurrency)
    if workload == "workflow":
        return Workflow(seed, vocab, concurrency)
    raise SystemExit(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")


# --- the schedulers ---------------------------------------------------------------------


def parse_config(name: str) -> tuple[dict[str, Any] | None, bool]:
    """``vanilla`` -> (None, False); ``lru/lpm+jf+wd`` -> ({eviction, schedule, ...}, True).

    Flags: ``+jf`` jump-forward drafts, ``+wd`` the (opt-in) step watchdog; without ``+wd``
    the plugin runs as users get it by default."""
    if name == "vanilla":
        return None, False
    base, *flags = name.split("+")
    eviction, _, schedule = base.partition("/")
    if not eviction or any(f not in ("jf", "wd") for f in flags):
        raise SystemExit(
            f"bad config {name!r}: vanilla, EVICTION/ORDERING, optionally +jf and/or +wd"
        )
    jump_forward = "jf" in flags
    radix = {
        "eviction": eviction,
        "schedule": schedule or "lpm",
        "jump_forward": jump_forward,
        "watchdog": "wd" in flags,
    }
    return radix, jump_forward


def watchdog_on(config: str) -> bool:
    radix, _ = parse_config(config)
    return bool(radix and radix["watchdog"])


def make_scheduler(config: str, blocks: int, running: int) -> Any:
    """vLLM's scheduler or the plugin's, over ``blocks`` KV blocks, as vLLM's tests build it."""
    from radix_plugin.config import JUMP_FORWARD_PROPOSER
    from radix_plugin.testing.scheduler import build_scheduler

    radix, jump_forward = parse_config(config)
    engine_args: dict[str, Any] = {
        "max_num_seqs": running,
        "max_num_batched_tokens": MAX_BATCHED_TOKENS,
    }
    if jump_forward:
        engine_args["speculative_config"] = {
            "method": "custom_class",
            "model": JUMP_FORWARD_PROPOSER,
            "num_speculative_tokens": DRAFT_SLOTS,
        }
    return build_scheduler(
        radix=radix,
        vanilla=radix is None,
        blocks=blocks,
        block_size=BLOCK,
        max_model_len=MAX_MODEL_LEN,
        **engine_args,
    )


# --- the emulated model -----------------------------------------------------------------


class Model:
    """What the worker would return: the stream's answer tokens, or for structured requests
    a token the grammar allows (and every valid draft accepted)."""

    def __init__(self, scheduler: Any, seed: int) -> None:
        self.scheduler = scheduler
        self.answers: dict[str, list[int]] = {}
        self.rng = np.random.default_rng(seed + 1)
        self.eos: int | None = None
        self.structural: np.ndarray | None = None
        self.blank: np.ndarray | None = None

    def learn_vocab(self) -> None:
        """Token classes the emulated model prefers: JSON punctuation and literals (so
        objects close within the token budget) over text, and anything over whitespace."""
        tokenizer = self.scheduler.structured_output_manager.tokenizer
        self.eos = tokenizer.eos_token_id
        vocab = self.scheduler.vllm_config.model_config.get_vocab_size()
        self.structural = np.zeros(vocab, dtype=bool)
        self.blank = np.zeros(vocab, dtype=bool)
        for i in range(vocab):
            text = tokenizer.decode([i])
            punct = bool(text) and all(c in '{}[]:,"' for c in text)
            self.structural[i] = punct or text in ("true", "false")
            self.blank[i] = not text.strip()

    def output(self, sched_out: Any, grammar: Any) -> Any:
        from vllm.v1.outputs import ModelRunnerOutput

        requests = self.scheduler.requests
        spec = sched_out.scheduled_spec_decode_tokens
        rows: dict[str, int] = {}
        if grammar is not None:
            row = 0
            for rid in grammar.structured_output_request_ids:
                rows[rid] = row
                row += 1 + len(spec.get(rid, ()))
        req_ids, sampled = [], []
        for rid in sched_out.num_scheduled_tokens:
            request = requests[rid]
            req_ids.append(rid)
            if request.is_prefill_chunk:
                sampled.append([])
            elif rid in rows:
                sampled.append(self._grammar_tokens(grammar.grammar_bitmask, rows[rid], spec, rid))
            else:
                sampled.append([self.answers[rid][request.num_output_tokens]])
        return ModelRunnerOutput(
            req_ids=req_ids,
            req_id_to_index={rid: i for i, rid in enumerate(req_ids)},
            sampled_token_ids=sampled,
        )

    def _grammar_tokens(self, bitmask: np.ndarray, row: int, spec: dict, rid: str) -> list[int]:
        out = []
        for draft in spec.get(rid, ()):
            if draft < 0 or not self._allowed(bitmask[row])[draft]:
                break
            out.append(draft)
            row += 1
        allowed = self._allowed(bitmask[row])
        if self.eos is not None and allowed[self.eos]:
            out.append(self.eos)
            return out
        assert self.structural is not None and self.blank is not None
        choices = np.flatnonzero(allowed & self.structural)
        if not len(choices) or self.rng.random() < 0.3:
            choices = np.flatnonzero(allowed & ~self.blank)
        if not len(choices):
            choices = np.flatnonzero(allowed)
        out.append(int(choices[self.rng.integers(len(choices))]))
        return out

    def _allowed(self, words: np.ndarray) -> np.ndarray:
        bits = np.unpackbits(words.view(np.uint8), bitorder="little").astype(bool)
        assert self.structural is not None
        return bits[: len(self.structural)]


# --- one configuration, in its own process ----------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def run_config(
    config: str,
    workload: str,
    blocks: int,
    running: int,
    waiting: int,
    steps: int,
    seed: int = 0,
    trace_memory: bool = True,
    profile_path: str | None = None,
    max_warmup_steps: int = 1_000_000,
) -> dict[str, Any]:
    """Build, fill, measure and drain one configuration; raises AssertionError when the
    drain finds a request or a block in the wrong state."""
    from vllm.sampling_params import SamplingParams, StructuredOutputsParams
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.outputs import DraftTokenIds
    from vllm.v1.request import Request, RequestStatus

    from radix_plugin.compat import mark_xgrammar_backend

    _, jump_forward = parse_config(config)
    if jump_forward and workload != "structured":
        raise SystemExit(f"{config} drafts only structured output: use --workloads structured")
    rss0 = rss_bytes()
    if trace_memory:
        tracemalloc.start()
    traced0 = tracemalloc.get_traced_memory()[0] if trace_memory else 0
    t_build = time.perf_counter()
    scheduler = make_scheduler(config, blocks, running)
    build_s = time.perf_counter() - t_build
    vocab = scheduler.vllm_config.model_config.get_vocab_size()
    stream = make_stream(workload, seed, vocab, running + waiting)
    model = Model(scheduler, seed)
    manager = scheduler.structured_output_manager
    structured = workload == "structured"
    if structured:
        model.learn_vocab()
    hash_fn = get_hash_fn_by_name("sha256")
    init_none_hash(hash_fn)
    hasher = get_request_block_hasher(BLOCK, hash_fn)
    pool = scheduler.kv_cache_manager.block_pool
    drafts_on = getattr(scheduler, "num_spec_tokens", 0) > 0

    # Block accounting (outside the timed calls; the wrapper is the same on both sides).
    used = bytearray(blocks)
    used[0] = 1  # the null block
    counts = {"allocated": 0, "evicted": 0}
    get_new_blocks = pool.get_new_blocks
    maybe_evict = pool._maybe_evict_cached_block

    def counting_get_new_blocks(n: int) -> list[Any]:
        out = get_new_blocks(n)
        counts["allocated"] += len(out)
        for b in out:
            used[b.block_id] = 1
        return out

    def counting_evict(block: Any) -> bool:
        evicted = maybe_evict(block)
        counts["evicted"] += evicted
        return evicted

    pool.get_new_blocks = counting_get_new_blocks
    pool._maybe_evict_cached_block = counting_evict

    live: dict[str, Request] = {}
    expected: dict[str, int] = {}
    # finished requests; prompt and cached tokens of admitted ones
    finished = {
        "n": 0,
        "prompt_tokens": 0,
        "cached_tokens": 0,
        "output_tokens": 0,
        "stopped": 0,
        "drafts": 0,
        "sampled": 0,
    }
    add_times: list[float] = []
    measuring = {"on": False}
    profiler = None
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()

    def add(n: int) -> None:
        for _ in range(n):
            spec = stream.next()
            params = SamplingParams(
                max_tokens=len(spec.outputs),
                ignore_eos=not spec.structured,
                temperature=0.0 if structured else 1.0,
                extra_args=spec.extra,
                structured_outputs=StructuredOutputsParams(json=SCHEMA)
                if spec.structured
                else None,
            )
            if spec.structured:  # what vLLM's input processor does
                mark_xgrammar_backend(params.structured_outputs)
                params.update_from_generation_config({}, eos_token_id=model.eos)
            request = Request(spec.rid, spec.prompt, params, None, block_hasher=hasher)
            if request.use_structured_output:
                manager.grammar_init(request)  # the engine core's preprocessing
            model.answers[spec.rid] = spec.outputs
            live[spec.rid] = request
            expected[spec.rid] = len(spec.outputs)
            if measuring["on"]:
                if profiler is not None:
                    profiler.enable()
                t0 = time.perf_counter_ns()
                scheduler.add_request(request)
                add_times.append(time.perf_counter_ns() - t0)
                if profiler is not None:
                    profiler.disable()
            else:
                scheduler.add_request(request)

    step_cpu_ns: list[int] = []  # the same spans in this thread's CPU time

    def step() -> int:
        """One engine step; returns its scheduler time in ns (the model's is not counted)."""
        if measuring["on"] and profiler is not None:
            profiler.enable()
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        out = scheduler.schedule()
        grammar = scheduler.get_grammar_bitmask(out) if structured else None
        t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
        if measuring["on"] and profiler is not None:
            profiler.disable()
        finished["drafts"] += sum(len(t) for t in out.scheduled_spec_decode_tokens.values())
        for new in out.scheduled_new_reqs:  # first admission: its prefix-cache hit
            finished["prompt_tokens"] += len(live[new.req_id].prompt_token_ids)
            finished["cached_tokens"] += new.num_computed_tokens
        runner_out = model.output(out, grammar)
        finished["sampled"] += sum(len(t) for t in runner_out.sampled_token_ids)
        if measuring["on"] and profiler is not None:
            profiler.enable()
        c2, t2 = time.thread_time_ns(), time.perf_counter_ns()
        results = scheduler.update_from_output(out, runner_out)
        if drafts_on and out.total_num_scheduled_tokens > 0:
            # EngineCore.post_step: the no-op proposer's empty drafts for the batch
            scheduler.update_draft_token_ids(
                DraftTokenIds(runner_out.req_ids, [[] for _ in runner_out.req_ids])
            )
        t3, c3 = time.perf_counter_ns(), time.thread_time_ns()
        if measuring["on"] and profiler is not None:
            profiler.disable()
        step_cpu_ns.append((c1 - c0) + (c3 - c2))
        for engine_outputs in results.values():
            for o in engine_outputs.outputs:
                if o.finish_reason is None:
                    continue
                request = live.pop(o.request_id)
                n_out = request.num_output_tokens
                want = expected.pop(o.request_id)
                if request.use_structured_output:
                    assert 1 <= n_out <= want, (o.request_id, n_out, want)
                else:
                    assert n_out == want, (o.request_id, n_out, want)
                model.answers.pop(o.request_id)
                finished["n"] += 1
                finished["output_tokens"] += n_out
                finished["stopped"] += request.status == RequestStatus.FINISHED_STOPPED
        return (t1 - t0) + (t3 - t2)

    def top_up(limit: int) -> None:
        """Keep ``waiting`` requests waiting (and the batch full), up to ``limit`` in all."""
        in_flight = len(scheduler.running) + len(scheduler.waiting)
        short = max(waiting - len(scheduler.waiting), running + waiting - in_flight)
        add(max(0, min(short, limit - in_flight)))

    # Fill: every block handed out once, and at least MIN_WARMUP_STEPS steps. Arrivals ramp
    # up at the steady-state rate (a batch started at once would finish at once, and stay
    # in lockstep: one step admitting hundreds, the next none).
    ramp = max(1, math.ceil(running / OUTPUT_TOKENS))
    add(waiting)
    warmup_steps = 0
    while warmup_steps < MIN_WARMUP_STEPS or not all(used):
        if warmup_steps >= max_warmup_steps:
            raise SystemExit(
                f"pool of {blocks} blocks not filled after {warmup_steps} warm-up steps"
            )
        step()
        warmup_steps += 1
        top_up(waiting + ramp * warmup_steps)
    if structured:  # grammars compile asynchronously; steady state has them ready
        time.sleep(0.1)
    cached_blocks = sum(1 for b in pool.blocks if b.block_hash is not None)
    traced = tracemalloc.get_traced_memory()[0] - traced0 if trace_memory else 0
    trace_overhead = tracemalloc.get_tracemalloc_memory() if trace_memory else 0
    rss_fill = rss_bytes() - rss0 - trace_overhead
    if trace_memory:
        tracemalloc.stop()
    gc.collect()
    gc_tracked = len(gc.get_objects())  # what every full collection walks

    # Measure.
    gc_pauses: list[float] = []
    gc_start = {"t": 0.0}

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_start["t"] = time.perf_counter()
        elif info.get("generation") == 2:
            gc_pauses.append(time.perf_counter() - gc_start["t"])

    before = dict(counts)
    finished_before = dict(finished)
    step_ns: list[int] = []
    step_cpu_ns.clear()
    running_seen: list[int] = []
    waiting_seen: list[int] = []
    measuring["on"] = True
    gc.callbacks.append(on_gc)
    t_measure = time.perf_counter()
    for _ in range(steps):
        running_seen.append(len(scheduler.running))
        waiting_seen.append(len(scheduler.waiting))
        step_ns.append(step())
        top_up(running + waiting)
    measure_s = time.perf_counter() - t_measure
    gc.callbacks.remove(on_gc)
    measuring["on"] = False
    finished_measured = finished["n"] - finished_before["n"]
    output_tokens = finished["output_tokens"] - finished_before["output_tokens"]
    stopped = finished["stopped"] - finished_before["stopped"]
    drafts = finished["drafts"] - finished_before["drafts"]
    sampled = finished["sampled"] - finished_before["sampled"]
    allocated = counts["allocated"] - before["allocated"]
    evicted = counts["evicted"] - before["evicted"]
    prompt_tokens = finished["prompt_tokens"] - finished_before["prompt_tokens"]
    cached_tokens = finished["cached_tokens"] - finished_before["cached_tokens"]
    if profiler is not None:
        profiler.dump_stats(profile_path)

    # Drain and check.
    drain_steps = 0
    while live:
        step()
        drain_steps += 1
        assert drain_steps < 100_000, f"{len(live)} requests never finished"
    assert not expected, f"{len(expected)} requests finished without output"
    assert not scheduler.requests, f"{len(scheduler.requests)} requests left in the scheduler"
    referenced = [b.block_id for b in pool.blocks if not b.is_null and b.ref_cnt > 0]
    assert not referenced, f"{len(referenced)} blocks still referenced, e.g. {referenced[:5]}"
    free = pool.get_num_free_blocks()
    assert free == pool.num_gpu_blocks - 1, f"{free} of {pool.num_gpu_blocks - 1} blocks free"
    tree_free = None
    if hasattr(pool, "tree"):
        stats = pool.tree.stats()
        assert stats.protected_blocks == stats.pinned_blocks, stats
        tree_free = stats.evictable_blocks

    ms = [t / 1e6 for t in step_ns]
    cpu_ms = [t / 1e6 for t in step_cpu_ns[:steps]]
    return {
        "config": config,
        "workload": workload,
        "blocks": blocks,
        "running": running,
        "waiting": waiting,
        "steps": steps,
        "warmup_steps": warmup_steps,
        "build_s": round(build_s, 3),
        "measure_s": round(measure_s, 3),
        "step_ms_median": statistics.median(ms),
        "step_ms_p99": percentile(ms, 0.99),
        "step_ms_max": max(ms),
        "step_ms_mean": statistics.fmean(ms),
        "step_cpu_ms_median": statistics.median(cpu_ms),
        "step_cpu_ms_p99": percentile(cpu_ms, 0.99),
        "add_request_ms": statistics.fmean(add_times) / 1e6 if add_times else None,
        "add_request_ms_p99": percentile([t / 1e6 for t in add_times], 0.99) if add_times else None,
        "add_request_ms_per_step": sum(add_times) / 1e6 / steps,
        "requests_added_measured": len(add_times),
        "requests_finished_measured": finished_measured,
        "requests_total": stream.count,
        "mean_output_tokens": output_tokens / finished_measured if finished_measured else 0.0,
        "stopped_share": stopped / finished_measured if finished_measured else 0.0,
        "draft_tokens_scheduled": drafts,
        "output_tokens_per_step": sampled / steps,
        "mean_running": statistics.fmean(running_seen),
        "mean_waiting": statistics.fmean(waiting_seen),
        "cached_blocks": cached_blocks,
        "traced_bytes": traced,
        "traced_bytes_per_cached_block": traced / cached_blocks if trace_memory else None,
        "rss_bytes": rss_fill,
        "rss_bytes_per_cached_block": rss_fill / cached_blocks,
        "allocated_blocks": allocated,
        "evicting_share": evicted / allocated if allocated else 0.0,
        "hit_ratio": cached_tokens / prompt_tokens if prompt_tokens else 0.0,
        "gc_tracked_objects": gc_tracked,
        "gc_gen2_collections": len(gc_pauses),
        "gc_gen2_ms_total": sum(gc_pauses) * 1e3,
        "gc_gen2_ms_max": max(gc_pauses) * 1e3 if gc_pauses else 0.0,
        "drain_steps": drain_steps,
        "drain_ok": True,
        "tree_evictable_after_drain": tree_free,
    }


# --- the parent: matrix, table, files -------------------------------------------------------


def cases(args: argparse.Namespace) -> list[tuple[str, str, int, int]]:
    out = []
    for workload in args.workloads:
        for running in args.running:
            for blocks in args.blocks:
                for config in args.configs:
                    _, jf = parse_config(config)
                    if jf and workload != "structured":
                        continue
                    out.append((workload, config, blocks, running))
    return out


def child_side(workload: str, config: str, blocks: int, running: int) -> str:
    return f"{workload}|{config}|{blocks}|{running}"


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[dict[str, Any]]) -> str:
    header = (
        "| workload | blocks | running | config | median ms | p99 ms | max ms | x vanilla "
        "(median) | p99 x vanilla | CPU ms median | x vanilla (CPU) | add_request ms "
        "| arrivals ms/step | traced B/block | RSS B/block "
        "| evicting | hit ratio | tokens/step | gen2 GCs |\n|" + "---|" * 19
    )
    rows = [header]
    base = {
        (r["workload"], r["blocks"], r["running"]): r for r in results if r["config"] == "vanilla"
    }
    for r in results:
        v = base.get((r["workload"], r["blocks"], r["running"]))
        ratio = r["step_ms_median"] / v["step_ms_median"] if v else None
        p99_ratio = r["step_ms_p99"] / v["step_ms_p99"] if v else None
        cpu = r.get("step_cpu_ms_median")
        cpu_ratio = cpu / v["step_cpu_ms_median"] if v and cpu is not None else None
        rows.append(
            f"| {r['workload']} | {r['blocks']:,} | {r['running']} | {r['config']} "
            f"| {fmt(r['step_ms_median'])} | {fmt(r['step_ms_p99'])} | {fmt(r['step_ms_max'])} "
            f"| {fmt(ratio)} | {fmt(p99_ratio)} | {fmt(cpu)} | {fmt(cpu_ratio)} "
            f"| {fmt(r['add_request_ms'], 3)} "
            f"| {fmt(r['add_request_ms_per_step'])} "
            f"| {fmt(r['traced_bytes_per_cached_block'], 0)} "
            f"| {fmt(r['rss_bytes_per_cached_block'], 0)} | {r['evicting_share']:.1%} "
            f"| {r['hit_ratio']:.1%} | {r['output_tokens_per_step']:.0f} "
            f"| {r['gc_gen2_collections']} |"
        )
    return "\n".join(rows)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["workload"], r["running"]) for r in results})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, (workload, running) in zip(axes[0], panels, strict=True):
        mine = [r for r in results if r["workload"] == workload and r["running"] == running]
        for config in dict.fromkeys(r["config"] for r in mine):
            pts = sorted((r["blocks"], r["step_ms_median"]) for r in mine if r["config"] == config)
            style = {"color": "black", "linewidth": 2.5} if config == "vanilla" else {}
            ax.plot(*zip(*pts, strict=True), marker="o", label=config, **style)
        ax.set_xscale("log")
        ax.set_xlabel("KV pool (blocks of 16 tokens)")
        ax.set_ylabel("median schedule+update_from_output (ms)")
        ax.set_title(f"{workload}, {running} running")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(float(x)) for x in text.split(",") if x]

    def names(text: str) -> list[str]:
        return [x for x in text.split(",") if x]

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", type=ints, default=[100_000, 1_000_000])
    p.add_argument("--running", type=ints, default=[512], help="max_num_seqs, kept running")
    p.add_argument("--waiting", type=int, default=64, help="waiting queue kept topped up")
    p.add_argument("--workloads", type=names, default=list(WORKLOADS[:3]))
    p.add_argument("--configs", type=names, default=list(DEFAULT_CONFIGS))
    p.add_argument("--steps", type=int, default=300, help="measured steady-state steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-tracemalloc", action="store_true", help="RSS only (faster fill)")
    p.add_argument("--profile", default=None, help="directory for one cProfile per config")
    p.add_argument("--name", default="scheduler_scale")
    p.add_argument(
        "--append",
        action="store_true",
        help="merge into an existing --name result (re-run cases replace theirs)",
    )
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def profile_file(directory: str, workload: str, config: str, blocks: int, running: int) -> str:
    safe = config.replace("/", "_").replace("+", "_")
    return str(Path(directory) / f"{workload}_{blocks}_{running}_{safe}.prof")


def case_key(r: dict[str, Any]) -> tuple[str, str, int, int]:
    return (r["workload"], r["config"], r["blocks"], r["running"])


def sort_key(r: dict[str, Any]) -> tuple[Any, ...]:
    configs = list(DEFAULT_CONFIGS)
    order = configs.index(r["config"]) if r["config"] in configs else len(configs)
    workload = WORKLOADS.index(r["workload"]) if r["workload"] in WORKLOADS else len(WORKLOADS)
    return (workload, -r["running"], r["blocks"], order, r["config"])


def save(args: argparse.Namespace, results: list[dict[str, Any]], commands: list[str]) -> None:
    """Write the JSON, markdown and plot of every result so far."""
    results = sorted(results, key=sort_key)
    where = machine()
    payload = {
        "machine": where,
        "commands": commands,
        "block_size": BLOCK,
        "max_num_batched_tokens": MAX_BATCHED_TOKENS,
        "seed": args.seed,
        "results": results,
    }
    runs = "\n".join(f"    {c}" for c in commands)
    text = (
        "# Scheduler at scale: vLLM's Scheduler vs RadixScheduler (no model)\n\n"
        f"Machine: {where}. One run per configuration, each in its own process; the "
        "2 cores may have been shared with other work, so the CPU-time columns (this "
        "thread's CPU time over the same spans) give the ratio that contention cannot "
        "move.\n\n"
        f"{runs}\n\n"
        "Step = `schedule()` + `update_from_output()` (+ `get_grammar_bitmask()` and "
        "`update_draft_token_ids()` for structured output), over the measured steady-state "
        f"steps after the pool was filled; block size {BLOCK}, max_num_batched_tokens "
        f"{MAX_BATCHED_TOKENS}. add_request: per request (not in the step time); arrivals: "
        "add_request time per step. B/block: memory of the scheduler build and fill over "
        "cached blocks (tracemalloc; RSS delta). evicting: share of block allocations that "
        "evicted a cached block. gen2 GCs: full collections during the measured steps. Every "
        "run drained and passed the end checks (all requests finished with their output "
        "count, no block referenced, every block free).\n\n"
        f"{table(results)}\n"
    )
    out = write_results(args.out, args.name, payload, text)
    plot(results, out / f"{args.name}.png")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child is not None:
        workload, config, blocks, running = args.child.split("|")
        prof = None
        if args.profile:
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            prof = profile_file(args.profile, workload, config, int(blocks), int(running))
        result = run_config(
            config,
            workload,
            int(blocks),
            int(running),
            args.waiting,
            args.steps,
            seed=args.seed,
            trace_memory=not args.no_tracemalloc,
            profile_path=prof,
        )
        print(json.dumps(result))
        return 0
    command = "python benchmarks/scheduler_scale.py " + " ".join(argv)
    results: list[dict[str, Any]] = []
    commands: list[str] = []
    previous = Path(args.out) / f"{args.name}.json"
    if args.append and previous.exists():
        old = json.loads(previous.read_text())
        results, commands = old["results"], old["commands"]
    commands.append(command)
    for workload, config, blocks, running in cases(args):
        t0 = time.perf_counter()
        side = child_side(workload, config, blocks, running)
        r = run_in_child(__file__, side, argv, watchdog=watchdog_on(config))
        key = (workload, config, blocks, running)
        results = [x for x in results if case_key(x) != key] + [r]
        print(
            f"{workload:13s} {blocks:>9,} x{running:<4} {config:14s} median "
            f"{r['step_ms_median']:7.2f} ms  p99 {r['step_ms_p99']:7.2f}  max "
            f"{r['step_ms_max']:7.2f}  cpu {r['step_cpu_ms_median']:7.2f}  "
            f"add {fmt(r['add_request_ms'], 3)} ms  "
            f"evicting {r['evicting_share']:.0%}  hit {r['hit_ratio']:.0%}  "
            f"({time.perf_counter() - t0:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
        save(args, results, commands)  # a long matrix keeps what it measured so far
    print(table(sorted(results, key=sort_key)))
    print(f"wrote {Path(args.out) / args.name}.{{json,md,png}}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
