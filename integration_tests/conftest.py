"""Shared fixtures for tests that start a real vLLM engine on CPU.

Engine environment (VLLM_CPU_KVCACHE_SPACE, in-process engine, thread count) is set per
engine by `radix_plugin.testing.engine.cpu_llm_kwargs`, right before `LLM(...)`, because
vLLM reads it while building each engine's config; nothing session-wide is needed here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from radix_plugin.testing.cpu import cpu_report_lines
from radix_plugin.testing.models import get_model_path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Numerical results depend on the CPU's ISA: name it after every run (shown with -q too)."""
    terminalreporter.write_sep("-", "cpu")
    for line in cpu_report_lines():
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """The `tiny` test model, built into the user cache if `make setup` has not done so."""
    return get_model_path("tiny")
