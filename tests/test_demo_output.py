"""`make demo` prints only its status lines and tables: a child side's output, whoever writes
it (vLLM's logger, tqdm, a raw write to fd 2, a grandchild process), goes to the log file.

Runs the demo's own machinery (``benchmarks/quiet_child.py``) on a small child script that
imports vLLM's real logger, not the full demo."""

from __future__ import annotations

import io
import sys
import textwrap
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from quiet_child import SideFailed, run_quiet  # noqa: E402

CHILD = textwrap.dedent(
    """
    import os, subprocess, sys
    sys.path.insert(0, BENCHMARKS)
    from quiet_child import Reporter

    report = Reporter()
    report.progress("loading the engine", 0, 1, "engine")
    from tqdm import tqdm
    from vllm.config.logging import LoggingConfig
    from vllm.logger import configure_logging, init_logger

    configure_logging(LoggingConfig())  # what LLMEngine does on start-up

    init_logger("vllm.demo_test").info("ENGINE-INFO-LINE")
    init_logger("vllm.demo_test").warning("ENGINE-WARNING-LINE")
    print("PYTHON-STDOUT-LINE")
    print("PYTHON-STDERR-LINE", file=sys.stderr)
    os.write(2, b"RAW-FD2-LINE\\n")  # as C++ kernels and oneDNN write
    subprocess.run([sys.executable, "-c", "print('GRANDCHILD-LINE')"], check=True)
    for _ in tqdm(range(3), desc="TQDM-BAR"):
        report.progress("work", _ + 1, 3)
    report.result({"answer": 42})
    sys.exit(int(os.environ.get("CHILD_EXIT", "0")))
    """
)
ENGINE_LINES = (
    "ENGINE-INFO-LINE",
    "ENGINE-WARNING-LINE",
    "PYTHON-STDOUT-LINE",
    "PYTHON-STDERR-LINE",
    "RAW-FD2-LINE",
    "GRANDCHILD-LINE",
)


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _child(tmp_path: Path) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD.replace("BENCHMARKS", repr(str(BENCHMARKS))))
    return [sys.executable, str(script)]


def test_engine_output_goes_to_the_log_not_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "demo.log"
    terminal = io.StringIO()
    result = run_quiet(_child(tmp_path), log, "vanilla vLLM", out=terminal)
    assert result == {"answer": 42}
    # Not a TTY: exactly one line for the side, naming it and its elapsed time.
    lines = terminal.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("  vanilla vLLM   done in "), lines
    # Nothing reached this process's own file descriptors 1 and 2 either.
    leaked = capfd.readouterr()
    assert not any(s in leaked.out + leaked.err for s in ENGINE_LINES), leaked
    text = log.read_text()
    for line in ENGINE_LINES:
        assert line in text, (line, text)
    assert "TQDM-BAR" not in text  # tqdm is off in the children


def test_tty_status_line_is_redrawn_in_place(tmp_path: Path) -> None:
    terminal = FakeTty()
    run_quiet(_child(tmp_path), tmp_path / "demo.log", "plugin", out=terminal, summarize=str)
    shown = terminal.getvalue()
    assert shown.count("\n") == 1 and shown.endswith("\n")  # one terminal line per side
    assert "work: 3/3 requests" in shown
    assert "{'answer': 42} in " in shown.rsplit("\r", 1)[-1]
    assert not any(s in shown for s in ENGINE_LINES)


def test_failed_side_names_the_log_and_shows_its_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHILD_EXIT", "3")
    log = tmp_path / "demo.log"
    terminal = io.StringIO()
    with pytest.raises(SideFailed, match="exit 3") as failed:
        run_quiet(_child(tmp_path), log, "plugin", out=terminal)
    assert str(log) in str(failed.value) and "GRANDCHILD-LINE" in str(failed.value)
    assert "FAILED (exit 3)" in terminal.getvalue()
