"""Errors from vLLM's engine client on a real vLLM 0.32 server with the radix scheduler and
the SGLang endpoint: an overloaded engine is a 503 with ``Retry-After`` (JSON and
streaming), and a vLLM request only guidance could compile is a 400 (jump-forward pins the
backend to xgrammar) while radix grammars run on. The engine core serves on after each.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
import requests

from radix_plugin.testing.models import get_model_path
from radix_plugin.testing.server import (
    free_port,
    running_server,
    server_command,
    sglang_endpoint_env,
)

STARTUP_TIMEOUT_S = 300
QUEUE = 1  # --max-num-queued-reqs: one unfinished request, the next is refused


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    flags = [
        "--max-num-seqs",
        "4",
        "--scheduler-cls",
        "radix_plugin.RadixScheduler",
        "--max-num-queued-reqs",
        str(QUEUE),
    ]
    cmd = server_command(get_model_path("tiny"), port, flags, kv_blocks=64, max_model_len=512)
    log = tmp_path_factory.mktemp("sglang_errors") / "server.log"
    with open(log, "w") as fh:
        try:
            with running_server(cmd, port, fh, STARTUP_TIMEOUT_S, sglang_endpoint_env()) as base:
                yield base
        except RuntimeError as exc:
            pytest.fail(f"{exc}\n{log.read_text()[-4000:]}")


def _serves(server: str) -> None:
    body = {"text": "Hello", "sampling_params": {"max_new_tokens": 2, "temperature": 0}}
    r = requests.post(server + "/generate", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["meta_info"]["completion_tokens"] >= 1


def test_an_overloaded_engine_is_a_503_with_retry_after(server: str) -> None:
    """Two samples (``n``: one vLLM request each) on a queue of one: vLLM's admission check
    refuses the second while the first is unfinished (``QueueOverflowError``), so the
    request is a 503 with ``Retry-After`` (JSON and streaming) and its first sample is
    aborted."""
    two = {"text": "Hi", "sampling_params": {"max_new_tokens": 2, "n": 2, "temperature": 0.5}}
    for stream in (False, True):
        r = requests.post(server + "/generate", json={**two, "stream": stream}, timeout=60)
        assert r.status_code == 503, (stream, r.text)
        assert r.headers["Retry-After"] == "1"
        assert "busy" in r.json()["error"]["message"]
        _serves(server)


def test_a_request_xgrammar_rejects_is_a_400_and_radix_grammars_run_on(server: str) -> None:
    """Jump-forward pins the structured-output backend to xgrammar (one backend per
    engine): a schema only guidance could compile is vLLM's own 400 at admission, instead
    of latching guidance, on which the plugin's JSON grammar fails (a 500 on 0.32, every
    radix grammar refused on 0.33)."""
    model = requests.get(server + "/v1/models", timeout=30).json()["data"][0]["id"]
    body = {
        "model": model,
        "prompt": "A number: ",
        "max_tokens": 4,
        "structured_outputs": {"json": {"type": "integer", "multipleOf": 5}},
    }
    r = requests.post(server + "/v1/completions", json=body, timeout=120)
    assert r.status_code == 400, r.text
    assert "xgrammar" in r.json()["error"]["message"]
    schema = json.dumps({"type": "object", "properties": {"a": {"type": "string"}}})
    openai = {
        "model": model,
        "prompt": "JSON: ",
        "max_tokens": 24,
        "temperature": 0,
        "vllm_xargs": {"radix_json_schema": schema},
    }
    r = requests.post(server + "/v1/completions", json=openai, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["finish_reason"] in ("stop", "length"), r.json()
    sglang = {
        "text": "The code is ",
        "sampling_params": {"max_new_tokens": 8, "regex": "[0-9]{3}", "temperature": 0},
    }
    r = requests.post(server + "/generate", json=sglang, timeout=120)
    assert r.status_code == 200, r.text
    assert re.fullmatch("[0-9]{3}", r.json()["text"]), r.json()
    _serves(server)
