"""`vllm serve` with the KVFlow host tier: the connector loads from its module path in the
production process layout, evicted prompts come back from host memory with the same
completion, and vLLM's external-hit metrics count them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from test_serve import _get, _metric, _post, serve_for_module

from radix_plugin.cache_manager.core.workflow import AgentStepGraph
from radix_plugin.testing.models import get_model_path
from radix_plugin.testing.server import free_port, server_command

HOST_TIER = {
    "kv_connector": "RadixHostTierConnector",
    "kv_connector_module_path": "radix_plugin.cache_manager.connector",
    "kv_role": "kv_both",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    flags = [
        # Float32: warm and cold answers must match across batch shapes, and bf16 rounding
        # (which differs per CPU ISA) could flip a near-tie.
        "--dtype",
        "float32",
        "--max-num-seqs",
        "4",
        "--scheduler-cls",
        "radix_plugin.RadixScheduler",
        "--additional-config",
        json.dumps({"radix_plugin": {"eviction": "workflow"}}),
        "--kv-transfer-config",
        json.dumps(HOST_TIER),
    ]
    cmd = server_command(get_model_path("tiny"), port, flags, kv_blocks=80, max_model_len=2048)
    yield from serve_for_module(tmp_path_factory, cmd, port)


def test_evicted_prompt_comes_back_from_host_memory(server: str) -> None:
    model = json.loads(_get(server + "/v1/models"))["data"][0]["id"]
    graph = AgentStepGraph.from_steps(["a", "b", "c"])
    # ~1,000-token prompts: three of them overflow the 79-block device pool.
    prompts = {
        agent: " ".join(f"{agent}{i} fact {i * 7 % 13}." for i in range(180))
        for agent in ("a", "b", "c")
    }

    def ask(agent: str, step: int) -> dict:
        body = {
            "model": model,
            "prompt": prompts[agent],
            "max_tokens": 8,
            "temperature": 0,
            "vllm_xargs": graph.hints("wf", step, agent),
        }
        return _post(server + "/v1/completions", body)

    before = _metric(_get(server + "/metrics"), "vllm:external_prefix_cache_hits_total")
    cold = ask("a", 0)
    assert cold["usage"]["prompt_tokens"] > 800
    ask("b", 1)
    ask("c", 2)
    warm = ask("a", 0)
    after = _metric(_get(server + "/metrics"), "vllm:external_prefix_cache_hits_total")
    assert after - before >= 32, "no prompt tokens came back from the host tier"
    assert warm["choices"][0]["text"] == cold["choices"][0]["text"]
