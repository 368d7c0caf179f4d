"""Run one side of a demo in a child process whose output all goes to a log file.

The child's file descriptors 1 and 2 *are* the log file from the moment it is exec'd, so
vLLM's Python logs, messages from its C++ kernels and oneDNN, tqdm bars and anything a
grandchild process prints all land there, whatever library writes them and however. The
child talks to the parent only through a pipe of JSON lines (progress events, then its
result); the parent draws one status line per side: what runs, how far, elapsed time.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

PROGRESS_FD_ENV = "RADIX_DEMO_PROGRESS_FD"
QUIET_ENV = {
    # vLLM's own logger (the file keeps its INFO lines: they say what the engine did).
    "VLLM_LOGGING_LEVEL": "INFO",
    # tqdm honours this; a bar redrawn with carriage returns is noise in a log file.
    "TQDM_DISABLE": "1",
    "PYTHONUNBUFFERED": "1",
}


class SideFailed(RuntimeError):
    """A child side exited non-zero; the message ends with the tail of its log."""


class Reporter:
    """The child's end of the pipe: progress events and the final result."""

    def __init__(self) -> None:
        fd = int(os.environ[PROGRESS_FD_ENV])
        self._pipe = os.fdopen(fd, "w", buffering=1)

    def progress(self, step: str, done: int, total: int, unit: str = "requests") -> None:
        self._send({"step": step, "done": done, "total": total, "unit": unit})

    def result(self, value: Any) -> None:
        self._send({"result": value})

    def _send(self, event: dict[str, Any]) -> None:
        self._pipe.write(json.dumps(event) + "\n")
        self._pipe.flush()


class StatusLine:
    """One line per side on the terminal: redrawn in place on a TTY, printed once when the
    side ends otherwise (a piped or logged demo gets no carriage-return noise)."""

    def __init__(self, label: str, out: TextIO) -> None:
        self.label = label
        self.out = out
        self.tty = out.isatty()
        self.started = time.perf_counter()
        self.text = "starting"

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def show(self, event: dict[str, Any] | None = None) -> None:
        if event is not None:
            self.text = f"{event['step']}: {event['done']}/{event['total']} {event['unit']}"
        if self.tty:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            line = f"  {self.label:<14} {self.text}, {self.elapsed():.0f} s"
            self.out.write("\r\x1b[K" + line[:width])
            self.out.flush()

    def finish(self, summary: str) -> None:
        prefix = "\r\x1b[K" if self.tty else ""
        self.out.write(f"{prefix}  {self.label:<14} {summary} in {self.elapsed():.1f} s\n")
        self.out.flush()


def run_quiet(
    cmd: Sequence[str],
    log_path: Path,
    label: str,
    out: TextIO | None = None,
    summarize: Callable[[Any], str] = lambda _: "done",
) -> Any:
    """Run ``cmd`` with stdout and stderr appended to ``log_path``; draw its status line on
    ``out`` (default: this process's stdout) and return the result it reported, whose
    ``summarize`` ends the status line."""
    out = sys.stdout if out is None else out
    status = StatusLine(label, out)
    read_fd, write_fd = os.pipe()
    env = {**os.environ, **QUIET_ENV, PROGRESS_FD_ENV: str(write_fd)}
    with open(log_path, "ab") as log:
        log.write(f"\n===== {label}: {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            pass_fds=(write_fd,),
        )
    os.close(write_fd)
    result: Any = None
    buffer = b""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            status.show()
            ready, _, _ = select.select([pipe], [], [], 1.0)
            if not ready:
                continue
            chunk = pipe.read(65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                event = json.loads(line)
                if "result" in event:
                    result = event["result"]
                else:
                    status.show(event)
    code = proc.wait()
    if code != 0:
        status.finish(f"FAILED (exit {code})")
        raise SideFailed(f"{label} failed (exit {code}); end of {log_path}:\n{tail(log_path)}")
    status.finish(summarize(result))
    return result


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log, for a failure message."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
