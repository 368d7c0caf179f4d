"""Shared fixtures for tests that start a real vLLM engine on CPU.

Engine environment (VLLM_CPU_KVCACHE_SPACE, in-process engine, thread count) is set per
engine by `radix_plugin.testing.engine.cpu_llm_kwargs`, right before `LLM(...)`, because
vLLM reads it while building each engine's config; nothing session-wide is needed here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from radix_plugin.testing.models import get_model_path


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """The `tiny` test model, built into the user cache if `make setup` has not done so."""
    return get_model_path("tiny")
