"""Unit tests run Triton kernels through the interpreter (no GPU here). Triton decides
compile-vs-interpret when a kernel is decorated, so the flag must be set before any test
module imports Triton, vLLM or our kernels; engine tests live in integration_tests/ and run
in their own pytest process without it."""

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest

from radix_plugin.testing.cpu import cpu_report_lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Kernel tolerances depend on the CPU's ISA: name it after every run (shown with -q too)."""
    terminalreporter.write_sep("-", "cpu")
    for line in cpu_report_lines():
        terminalreporter.write_line(line)
