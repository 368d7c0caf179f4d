"""RadixScheduler on a real vLLM engine, side by side with vanilla vLLM (both prefix-caching).

One vanilla and one plugin engine for the whole module, both with a small KV pool and a small
token budget, so chunked prefill, eviction and preemption all happen in these tests.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import pytest
from vllm import LLM, SamplingParams

from radix_plugin.testing.engine import cpu_llm_kwargs, running_llm

BLOCK = 32
NUM_BLOCKS = 80  # 2,560 tokens of KV: a few long requests fill it
ENGINE_ARGS = dict(
    # Float32: greedy tokens are compared across batch and chunk shapes, and bf16 rounding
    # (which differs per CPU ISA) could flip a near-tie between them.
    dtype="float32",
    max_model_len=1024,
    block_size=BLOCK,
    num_kv_blocks=NUM_BLOCKS,
    max_num_seqs=8,
    enable_prefix_caching=True,
    enable_chunked_prefill=True,
    max_num_batched_tokens=256,
)
PLUGIN = {
    "scheduler_cls": "radix_plugin.RadixScheduler",
    "additional_config": {"radix_plugin": {"eviction": "lru", "schedule": "lpm"}},
}
GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module")
def vanilla() -> Iterator[LLM]:
    with running_llm("tiny", **ENGINE_ARGS) as llm:
        yield llm


@pytest.fixture(scope="module")
def radix() -> Iterator[LLM]:
    with running_llm("tiny", **ENGINE_ARGS, **PLUGIN) as llm:
        yield llm


def _scheduler(llm: LLM) -> Any:
    return llm.llm_engine.engine_core.engine_core.scheduler


def _hit_tokens(outputs: list[Any]) -> int:
    """Prefix-cache hit tokens as vLLM reports them per request (what its metrics sum)."""
    return sum(o.num_cached_tokens or 0 for o in outputs)


@contextlib.contextmanager
def _count_preemptions(llm: LLM) -> Iterator[list[int]]:
    """Count calls of the scheduler's real ``_preempt_request`` (instrumentation, no mock).

    Prometheus counters are process-global, so with two engines in one process they cannot
    tell the engines apart."""
    scheduler = _scheduler(llm)
    original = scheduler._preempt_request
    count = [0]

    def counting(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return original(*args, **kwargs)

    scheduler._preempt_request = counting
    try:
        yield count
    finally:
        del scheduler._preempt_request


def _words(rng: random.Random, n: int) -> str:
    vocab = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "zeta", "theta"]
    return " ".join(rng.choice(vocab) + str(rng.randrange(100)) for _ in range(n))


def _shared_prefix_batch(seed: int, groups: int, per_group: int, prefix_words: int) -> list[str]:
    rng = random.Random(seed)
    prefixes = [_words(rng, prefix_words) for _ in range(groups)]
    prompts = [p + " Q: " + _words(rng, 6) for p in prefixes for _ in range(per_group)]
    rng.shuffle(prompts)
    return prompts


def _tokens(outputs: list[Any]) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in outputs]


def test_plugin_scheduler_and_pool_are_in_charge(radix: LLM, vanilla: LLM) -> None:
    from radix_plugin.cache_manager.engine_core.block_pool import RadixBlockPool
    from radix_plugin.cache_manager.engine_core.scheduler import RadixSchedulerMixin

    assert isinstance(_scheduler(radix), RadixSchedulerMixin)
    assert isinstance(_scheduler(radix).kv_cache_manager.block_pool, RadixBlockPool)
    assert not isinstance(_scheduler(vanilla), RadixSchedulerMixin)


def test_greedy_tokens_identical_on_shared_prefixes_with_chunked_prefill(
    radix: LLM, vanilla: LLM
) -> None:
    # Prefixes of ~300 tokens exceed the 256-token step budget: prefill is chunked.
    prompts = _shared_prefix_batch(seed=1, groups=3, per_group=4, prefix_words=120)
    expected = _tokens(vanilla.generate(prompts, GREEDY, use_tqdm=False))
    got = _tokens(radix.generate(prompts, GREEDY, use_tqdm=False))
    assert got == expected
    # Run again: now mostly served from cache, still identical.
    assert _tokens(radix.generate(prompts, GREEDY, use_tqdm=False)) == expected


def test_greedy_tokens_identical_under_preemption(radix: LLM, vanilla: LLM) -> None:
    # 8 requests x (~450 prompt + 200 output tokens) do not fit 2,560 tokens of KV at once.
    rng = random.Random(7)
    prompts = [_words(rng, 180) for _ in range(8)]
    params = SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True)
    expected = _tokens(vanilla.generate(prompts, params, use_tqdm=False))
    with _count_preemptions(radix) as preemptions:
        got = _tokens(radix.generate(prompts, params, use_tqdm=False))
    assert preemptions[0] > 0, "workload did not preempt"
    assert got == expected


def test_small_pool_completes_everything_leaks_nothing_and_hits_at_least_vanilla(
    radix: LLM, vanilla: LLM
) -> None:
    prompts = _shared_prefix_batch(seed=3, groups=6, per_group=5, prefix_words=90)
    rng = random.Random(4)
    prompts += [_words(rng, 60) for _ in range(10)]  # one-off prompts
    rng.shuffle(prompts)
    hits = {}
    for name, llm in (("vanilla", vanilla), ("radix", radix)):
        assert llm.reset_prefix_cache()
        outs = llm.generate(prompts, GREEDY, use_tqdm=False)
        assert len(outs) == len(prompts)
        assert all(o.finished and len(o.outputs[0].token_ids) == 12 for o in outs)
        hits[name] = _hit_tokens(outs)
    assert hits["radix"] >= hits["vanilla"] > 0

    scheduler = _scheduler(radix)
    pool = scheduler.kv_cache_manager.block_pool
    assert not scheduler.running and not scheduler.waiting
    assert radix.reset_prefix_cache()
    assert pool.get_num_free_blocks() == NUM_BLOCKS - 1  # all but vLLM's null block
    assert pool.tree.stats().cached_blocks == 0
    assert sorted(b.block_id for b in pool.free_block_queue.get_all_free_blocks()) == list(
        range(1, NUM_BLOCKS)
    )


def test_cache_salt_separates_prefixes(radix: LLM) -> None:
    prompt = _words(random.Random(11), 150)
    assert radix.reset_prefix_cache()

    def hits_for(salt: str) -> int:
        request = {"prompt": prompt, "cache_salt": salt}
        return _hit_tokens(radix.generate(request, GREEDY, use_tqdm=False))

    assert hits_for("tenant-a") == 0
    assert hits_for("tenant-a") > 0
    assert hits_for("tenant-b") == 0


def test_aborted_requests_release_their_blocks(radix: LLM) -> None:
    engine = radix.llm_engine
    rng = random.Random(5)
    params = SamplingParams(temperature=0.0, max_tokens=300, ignore_eos=True)
    ids = [f"abort-{i}" for i in range(4)]
    for rid in ids:
        engine.add_request(rid, _words(rng, 100), params)
    for _ in range(3):
        engine.step()
    engine.abort_request(ids)
    while engine.has_unfinished_requests():
        engine.step()
    pool = _scheduler(radix).kv_cache_manager.block_pool
    assert radix.reset_prefix_cache()
    assert pool.get_num_free_blocks() == NUM_BLOCKS - 1


@pytest.mark.parametrize("schedule", ["fcfs", "dfs", "lpm"])
def test_every_schedule_gives_vanillas_tokens(radix: LLM, vanilla: LLM, schedule: str) -> None:
    from radix_plugin.cache_manager.core.registry import make_ordering

    prompts = _shared_prefix_batch(seed=9, groups=3, per_group=3, prefix_words=60)
    expected = _tokens(vanilla.generate(prompts, GREEDY, use_tqdm=False))
    scheduler = _scheduler(radix)
    configured = scheduler.radix_order.ordering
    # Swap the policy on the live engine: one engine per module (extra in-process engines
    # cannot be torn down without tearing down the others' process groups).
    scheduler.radix_order.ordering = make_ordering(schedule)
    try:
        assert radix.reset_prefix_cache()
        assert _tokens(radix.generate(prompts, GREEDY, use_tqdm=False)) == expected
    finally:
        scheduler.radix_order.ordering = configured


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"evction": "lru"}, r"unknown radix_plugin setting\(s\) 'evction'; valid settings: "),
        ({"eviction": "mru"}, r"unknown eviction policy 'mru'; valid choices: adaptive, lfu"),
        ({"eviction": "belady"}, r"unknown eviction policy 'belady'"),
        ({"schedule": "sjf"}, r"unknown scheduling policy 'sjf'; valid choices: dfs, fcfs, lpm"),
        ({"max_wait_steps": "10"}, r"radix_plugin.max_wait_steps must be int, got str '10'"),
    ],
)
def test_bad_config_fails_at_start_with_clear_message(section: dict, message: str) -> None:
    from radix_plugin.config import RadixConfigError

    with pytest.raises(RadixConfigError, match=message):
        LLM(
            **cpu_llm_kwargs(
                "tiny",
                **ENGINE_ARGS,
                scheduler_cls="radix_plugin.RadixScheduler",
                additional_config={"radix_plugin": section},
            )
        )
