"""``radix_pin`` on a real engine: idle KV usage is exactly the pinned blocks, and returns to
zero once the pins expire (``radix_pin_ttl``) or are released (``radix_unpin``)."""

from __future__ import annotations

from typing import Any

from vllm import LLM, SamplingParams

from radix_plugin.testing.engine import cpu_llm_kwargs, shutdown_llm

PROMPTS = [
    f"Document {name}: " + f"the {name} pipeline keeps its context cached for later turns. " * 12
    for name in ("alpha", "beta", "gamma", "delta")
]


def _params(**xargs: Any) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=4, extra_args=xargs or None)


def _used_blocks(scheduler: Any) -> int:
    """Blocks vLLM itself counts as used (what ``vllm:kv_cache_usage_perc`` reports)."""
    pool = scheduler.kv_cache_manager.block_pool
    return round(scheduler.kv_cache_manager.usage * (pool.num_gpu_blocks - 1))


def test_idle_usage_is_the_pinned_blocks_until_expiry_and_unpin() -> None:
    llm = LLM(
        **cpu_llm_kwargs(
            "tiny",
            max_model_len=512,
            block_size=32,
            num_kv_blocks=48,
            max_num_seqs=4,
            enable_prefix_caching=True,
            scheduler_cls="radix_plugin.RadixScheduler",
            additional_config={"radix_plugin": {"pin_share": 0.5}},
        )
    )
    try:
        scheduler = llm.llm_engine.engine_core.engine_core.scheduler
        clock = [0.0]
        scheduler.radix_pins.clock = lambda: clock[0]
        params = [
            _params(radix_pin=True, radix_pin_ttl=30),
            _params(radix_pin=True),
            _params(),
            _params(),
        ]
        llm.generate(PROMPTS, params, use_tqdm=False)
        pins = scheduler.radix_pin_stats()
        assert pins.pinned_prefixes == 2 and pins.pinned_blocks >= 8
        assert _used_blocks(scheduler) == pins.pinned_blocks  # idle: only the pins hold blocks

        clock[0] = 31.0  # past the TTL: the next step releases the first pin
        llm.generate(["Hi"], _params(), use_tqdm=False)
        after = scheduler.radix_pin_stats()
        assert after.pinned_prefixes == 1 and 0 < after.pinned_blocks < pins.pinned_blocks
        assert _used_blocks(scheduler) == after.pinned_blocks

        llm.generate([PROMPTS[1]], _params(radix_unpin=True), use_tqdm=False)
        assert scheduler.radix_pin_stats().pinned_blocks == 0
        assert _used_blocks(scheduler) == 0

        # A request that finishes in its prefill step (SGLang's max_new_tokens 0 runs as
        # max_tokens 1) still pins: it is freed before the post-step pin pass.
        one_step = SamplingParams(temperature=0.0, max_tokens=1, extra_args={"radix_pin": True})
        llm.generate([PROMPTS[2]], one_step, use_tqdm=False)
        assert scheduler.radix_pin_stats().pinned_prefixes == 1
        assert _used_blocks(scheduler) == scheduler.radix_pin_stats().pinned_blocks >= 4
    finally:
        shutdown_llm(llm)
