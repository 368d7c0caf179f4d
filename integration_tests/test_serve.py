"""The OpenAI server with the plugin's flags: it serves, counts prefix hits, rejects bad config.

The server runs as `python -m vllm.entrypoints.openai.api_server` with the flags `vllm serve`
takes (see radix_plugin.testing.server for why).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from radix_plugin.testing.models import get_model_path
from radix_plugin.testing.server import free_port, running_server, server_command, server_env

STARTUP_TIMEOUT_S = 240


def _server_cmd(model: Path, port: int, radix_config: dict) -> list[str]:
    plugin = [
        "--max-num-seqs",
        "4",
        "--scheduler-cls",
        "radix_plugin.RadixScheduler",
        "--additional-config",
        json.dumps({"radix_plugin": radix_config}),
    ]
    return server_command(model, port, plugin)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def serve_for_module(
    tmp_path_factory: pytest.TempPathFactory, cmd: list[str], port: int
) -> Iterator[str]:
    """Run a server for a test module; a failed start fails with the tail of its log."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with open(log, "w") as fh:
        try:
            with running_server(cmd, port, fh, STARTUP_TIMEOUT_S) as base:
                yield base
        except RuntimeError as exc:
            pytest.fail(f"{exc}\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    cmd = _server_cmd(get_model_path("tiny"), port, {"eviction": "lru", "schedule": "lpm"})
    yield from serve_for_module(tmp_path_factory, cmd, port)


def test_completions_hit_the_prefix_cache_and_metrics_show_it(server: str) -> None:
    model = json.loads(_get(server + "/v1/models"))["data"][0]["id"]
    prompt = "The radix tree keeps every shared prefix once. " * 20
    before = _metric(_get(server + "/metrics"), "vllm:prefix_cache_hits_total")
    first = _post(
        server + "/v1/completions",
        {"model": model, "prompt": prompt + "First?", "max_tokens": 8, "temperature": 0},
    )
    second = _post(
        server + "/v1/completions",
        {"model": model, "prompt": prompt + "Second?", "max_tokens": 8, "temperature": 0},
    )
    assert first["choices"][0]["text"] and second["choices"][0]["text"]
    metrics = _get(server + "/metrics")
    assert _metric(metrics, "vllm:prefix_cache_hits_total") - before >= 32 * 4
    assert _metric(metrics, "vllm:prefix_cache_queries_total") > 0


def test_metrics_show_the_pins_until_unpinned(server: str) -> None:
    model = json.loads(_get(server + "/v1/models"))["data"][0]["id"]
    prompt = "A pinned system prompt stays in the KV cache until released. " * 16
    body = {"model": model, "prompt": prompt, "max_tokens": 4, "temperature": 0}
    bad = {**body, "vllm_xargs": {"radix_pin": True, "radix_pin_ttl": "never"}}
    code, reply = _post_status(server + "/v1/completions", bad)
    assert code == 400 and "radix_pin_ttl must be a number" in reply
    _post(server + "/v1/completions", {**body, "vllm_xargs": {"radix_pin": True}})
    metrics = _get(server + "/metrics")
    assert _metric(metrics, "radix_plugin:pinned_kv_blocks") >= 4
    assert _metric(metrics, "radix_plugin:pinned_prefixes") == 1
    assert _metric(metrics, "radix_plugin:pin_budget_kv_blocks") == int(127 * 0.25)
    _post(server + "/v1/completions", {**body, "vllm_xargs": {"radix_unpin": True}})
    metrics = _get(server + "/metrics")
    assert _metric(metrics, "radix_plugin:pinned_kv_blocks") == 0
    assert _metric(metrics, "radix_plugin:pinned_prefixes") == 0


def test_chat_completions(server: str) -> None:
    model = json.loads(_get(server + "/v1/models"))["data"][0]["id"]
    reply = _post(
        server + "/v1/chat/completions",
        {
            "model": model,
            "messages": [{"role": "user", "content": "Say something."}],
            "max_tokens": 8,
            "temperature": 0,
        },
    )
    assert reply["choices"][0]["message"]["content"]
    assert reply["usage"]["completion_tokens"] == 8


def _post_status(url: str, body: dict) -> tuple[int, str]:
    try:
        return 200, json.dumps(_post(url, body))
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_bad_grammar_and_bad_hints_get_400_while_good_requests_complete(server: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    model = json.loads(_get(server + "/v1/models"))["data"][0]["id"]
    url = server + "/v1/completions"
    good = {
        "model": model,
        "prompt": "A record:",
        "max_tokens": 64,
        "temperature": 0,
        "vllm_xargs": {"radix_choice": ["alpha", "beta"]},
    }
    bad_schema = {**good, "vllm_xargs": {"radix_json_schema": '{"type": "objekt"}'}}
    bad_hint = {**good, "vllm_xargs": {"radix_priority": "high"}}
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(_post_status, url, body) for body in (good, bad_schema, bad_hint)]
        (ok_code, ok_body), (schema_code, schema_body), (hint_code, hint_body) = (
            f.result() for f in futures
        )
    assert ok_code == 200
    assert json.loads(ok_body)["choices"][0]["text"] in ("alpha", "beta")
    assert schema_code == 400 and "radix_json_schema" in schema_body
    assert hint_code == 400 and "radix_priority must be an integer" in hint_body


def test_bad_config_exits_before_the_engine_starts_with_every_bad_value_last() -> None:
    start = time.monotonic()
    proc = subprocess.run(
        _server_cmd(get_model_path("tiny"), free_port(), {"eviction": "mru", "max_wait_steps": 0}),
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=STARTUP_TIMEOUT_S,
    )
    assert proc.returncode != 0
    last = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()][-1]
    assert "unknown eviction policy 'mru'; valid choices: adaptive, lfu, lru, pinned" in last
    assert "max_wait_steps must be >= 1, got 0" in last
    assert time.monotonic() - start < 60  # the engine core never started
