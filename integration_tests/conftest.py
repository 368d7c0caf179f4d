"""Shared fixtures for tests that start a real vLLM engine on CPU.

Engine environment (VLLM_CPU_KVCACHE_SPACE, in-process engine, thread count) is set per
engine by `radix_plugin.testing.engine.cpu_llm_kwargs`, right before `LLM(...)`, because
vLLM reads it while building each engine's config; nothing session-wide is needed here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from radix_plugin.testing.cpu import cpu_report_lines
from radix_plugin.testing.models import get_model_path


def _bind_this_worker_to_its_own_core() -> None:
    """Under pytest-xdist (`make test` runs two workers) every engine a test starts would
    bind its OpenMP threads to the same core (vLLM's "auto" binding picks the first one
    here), so both workers would share one core while the other idles. Each worker's
    engines and servers get their own core instead, unless the user chose a binding."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        cpus = sorted(os.sched_getaffinity(0))
        index = int(worker.removeprefix("gw")) % len(cpus)
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = str(cpus[index])


_bind_this_worker_to_its_own_core()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Numerical results depend on the CPU's ISA: name it after every run (shown with -q too)."""
    terminalreporter.write_sep("-", "cpu")
    for line in cpu_report_lines():
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """The `tiny` test model, built into the user cache if `make setup` has not done so."""
    return get_model_path("tiny")
