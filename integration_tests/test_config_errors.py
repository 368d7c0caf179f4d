"""A bad ``--additional-config`` fails in the user's process, before weights load, with our
message naming every bad value (not vLLM's "Engine core initialization failed")."""

from __future__ import annotations

import time

import pytest

from radix_plugin.config import RadixConfigError
from radix_plugin.testing.engine import cpu_llm_kwargs

BAD = {"radix_plugin": {"eviction": "mru", "max_wait_steps": 0}}


@pytest.mark.parametrize("in_process", [True, False])
def test_llm_raises_our_message_with_every_bad_value(in_process: bool) -> None:
    from vllm import LLM

    kwargs = cpu_llm_kwargs(
        "tiny",
        in_process=in_process,
        scheduler_cls="radix_plugin.RadixScheduler",
        additional_config=BAD,
    )
    start = time.monotonic()
    with pytest.raises(RadixConfigError) as info:
        LLM(**kwargs)
    assert "unknown eviction policy 'mru'" in str(info.value)
    assert "max_wait_steps must be >= 1, got 0" in str(info.value)
    assert time.monotonic() - start < 30  # no engine core was started
