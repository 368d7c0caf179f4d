"""A decode row that comes back with no token, in a real CPU engine (tiny model).

vLLM 0.32's scheduler skips such a request forever (every position computed, no sample
pending); the plugin recomputes its last token, and the worker follows: the output is the
one an undisturbed run gives, token for token. With the watchdog on, the engine fails
instead, naming the request. The fault is injected where a worker's empty row would enter
the scheduler (``update_from_output``); the worker itself sampled the token, so this also
exercises its re-alignment to the scheduler's token count.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from radix_plugin.config import WATCHDOG_ENV
from radix_plugin.testing.engine import cpu_llm_kwargs, shutdown_llm

pytestmark = [pytest.mark.engine, pytest.mark.timeout(300)]

PROMPT = "The cache server keeps every prefix once"
MAX_TOKENS = 24


def _engine(model: Path, watchdog: bool) -> Any:
    from vllm import LLM

    radix = {"eviction": "lru", "watchdog": watchdog}
    return LLM(
        **cpu_llm_kwargs(
            model,
            scheduler_cls="radix_plugin.RadixScheduler",
            additional_config={"radix_plugin": radix},
            enable_prefix_caching=True,
        )
    )


@pytest.fixture(scope="module")
def llm(tiny_model_path: Path) -> Iterator[Any]:
    engine = _engine(tiny_model_path, watchdog=False)
    yield engine
    shutdown_llm(engine)


def _params() -> Any:
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)


def _drop_one_sample(scheduler: Any, at_call: int) -> list[int]:
    """From the ``at_call``-th step on, empty the first decode row once; returns how many
    rows were emptied (a one-element list, filled in as it happens)."""
    original = scheduler.update_from_output
    calls, dropped = [0], [0]

    def faulty(scheduler_output: Any, output: Any) -> Any:
        calls[0] += 1
        rows = output.sampled_token_ids
        if calls[0] >= at_call and not dropped[0] and rows and rows[0]:
            rows[0] = []
            dropped[0] += 1
        return original(scheduler_output, output)

    scheduler.update_from_output = faulty
    return dropped


def test_an_empty_decode_row_is_recomputed_and_the_output_is_unchanged(llm: Any) -> None:
    reference = list(llm.generate([PROMPT], _params(), use_tqdm=False)[0].outputs[0].token_ids)
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    dropped = _drop_one_sample(scheduler, at_call=6)
    try:
        out = llm.generate([PROMPT], _params(), use_tqdm=False)[0]
    finally:
        del scheduler.update_from_output
    assert dropped == [1]
    assert list(out.outputs[0].token_ids) == reference
    assert out.outputs[0].finish_reason == "length"


def test_with_the_watchdog_the_engine_fails_naming_the_request(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WATCHDOG_ENV, raising=False)
    engine = _engine(tiny_model_path, watchdog=True)
    try:
        _drop_one_sample(engine.llm_engine.engine_core.engine_core.scheduler, at_call=6)
        with pytest.raises(Exception, match="every position computed") as caught:
            engine.generate([PROMPT], _params(), use_tqdm=False)
        assert '"status": "RUNNING"' in str(caught.value)
    finally:
        shutdown_llm(engine)
