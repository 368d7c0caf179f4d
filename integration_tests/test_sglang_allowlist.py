"""A VLLM_PLUGINS value that leaves out one of radix-plugin's entry points stops the server at
start-up with a message naming it (vLLM itself would skip it silently)."""

from __future__ import annotations

import subprocess

import pytest

from radix_plugin.testing.models import get_model_path
from radix_plugin.testing.server import free_port, server_command, server_env

START_TIMEOUT_S = 400


@pytest.mark.parametrize(
    ("allowlist", "missing"),
    [
        # The scheduler refuses in EngineCore: the general plugin did not load.
        ("radix_sglang", "radix_plugin"),
        # The endpoint refuses when vLLM builds the app: the pin gauges would be dropped.
        ("radix_plugin,radix_sglang", "radix_pins"),
    ],
)
def test_a_missing_entry_point_stops_the_server(allowlist: str, missing: str) -> None:
    flags = ["--scheduler-cls", "radix_plugin.RadixScheduler", "--max-num-seqs", "2"]
    cmd = server_command(get_model_path("tiny"), free_port(), flags, kv_blocks=64)
    env = dict(server_env(), VLLM_PLUGINS=allowlist)
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert f"leaves out radix-plugin's {missing}" in log, log[-3000:]
    assert "VLLM_PLUGINS=radix_plugin,radix_pins,radix_sglang" in log
