"""Two plugin replicas behind vllm-router's `kv_aware` policy, routed by vLLM's KV events.

Proves, on the real processes (vLLM OpenAI servers with RadixScheduler, the Rust router):
requests sharing a prefix land on the replica that holds it, distinct prefixes spread across
the replicas, the replicas' own /metrics show the resulting prefix hits, and when a replica is
killed mid-run the router and the survivor keep serving every request.
"""

from __future__ import annotations

import json
import random
import signal
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("vllm_router", reason="vllm-router is a dev dependency (make setup)")

from radix_plugin.testing.cluster import (
    BLOCK_SIZE,
    Replica,
    Router,
    kill,
    kv_lookups,
    metric,
    running_replicas,
    running_router,
    scrape,
)

pytestmark = pytest.mark.engine

NAME = "tiny"
PREFIX_BLOCKS = 4
NUM_PREFIXES = 4
REQUESTS_PER_PREFIX = 4
EVENT_WAIT_S = 0.5  # the router applies a replica's events within ~10 ms of each engine step


def _post(url: str, body: dict, timeout: float = 120) -> dict:
    req = urllib.request.Request(
        url + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def _counters(replicas: list[Replica]) -> list[tuple[float, float]]:
    """Per replica: (requests finished, prefix-cache hit tokens), from its own /metrics."""
    texts = [scrape(r.url) for r in replicas]
    return [
        (metric(t, "vllm:request_success_total"), metric(t, "vllm:prefix_cache_hits_total"))
        for t in texts
    ]


def _prefix(seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(10, 4000) for _ in range(PREFIX_BLOCKS * BLOCK_SIZE)]


@pytest.fixture(scope="module")
def cluster(
    tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Replica], Router]]:
    logs = tmp_path_factory.mktemp("scale_out")
    with (
        running_replicas(
            tiny_model_path, 2, plugin=True, kv_blocks=64, served_name=NAME, log_dir=logs,
            extra=["--max-num-seqs", "4"],
        ) as replicas,
        running_router("kv_aware", replicas, served_name=NAME, log=logs / "router.log") as router,
    ):  # fmt: skip
        yield replicas, router


def test_shared_prefixes_stick_and_distinct_prefixes_spread(cluster) -> None:
    replicas, router = cluster
    # First turns arrive together: nothing is cached yet, so the router spreads them by
    # its own count of in-flight prefill work.
    with ThreadPoolExecutor(NUM_PREFIXES) as pool:
        list(
            pool.map(
                lambda p: _post(
                    router.url, {"model": NAME, "prompt": [*_prefix(p), 1], "max_tokens": 16}
                ),
                range(NUM_PREFIXES),
            )
        )
    time.sleep(EVENT_WAIT_S)

    # Later turns, one at a time: each must land where its prefix is cached, and hit it.
    hits_before = kv_lookups(router)["hit"]
    placement: dict[int, list[int]] = {}
    for turn in range(1, REQUESTS_PER_PREFIX):
        for p in range(NUM_PREFIXES):
            before = _counters(replicas)
            _post(router.url, {"model": NAME, "prompt": [*_prefix(p), 7 + turn], "max_tokens": 2})
            after = _counters(replicas)
            landed = [i for i in range(len(replicas)) if after[i][0] > before[i][0]]
            assert len(landed) == 1, (before, after)
            hit_tokens = after[landed[0]][1] - before[landed[0]][1]
            assert hit_tokens >= PREFIX_BLOCKS * BLOCK_SIZE, (p, turn, hit_tokens)
            placement.setdefault(p, []).append(landed[0])
            time.sleep(EVENT_WAIT_S)

    for p, where in placement.items():
        assert len(set(where)) == 1, f"prefix {p} moved between replicas: {where}"
    assert {where[0] for where in placement.values()} == {0, 1}, placement

    # The router's own view agrees: its KV index found every later turn's prefix.
    assert kv_lookups(router)["hit"] - hits_before == NUM_PREFIXES * (REQUESTS_PER_PREFIX - 1)


def test_chat_requests_are_rendered_by_the_replicas(cluster) -> None:
    """Text needs no client-side tokenizer: the router asks each replica's
    `/v1/chat/completions/render` (vLLM 0.32) for the token ids it then looks up."""
    replicas, router = cluster
    system = " ".join(f"rule {i}: answer briefly and cite source {i * 7}." for i in range(40))
    where = []
    for question in ("What is two plus two?", "Name a colour.", "Say hi."):
        before = _counters(replicas)
        body = {
            "model": NAME,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ],
            "max_tokens": 2,
        }
        req = urllib.request.Request(
            router.url + "/v1/chat/completions",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=120).read()
        after = _counters(replicas)
        where += [i for i in range(len(replicas)) if after[i][0] > before[i][0]]
        time.sleep(EVENT_WAIT_S)
    assert len(set(where)) == 1 and len(where) == 3, where
    rendered = metric(
        scrape(router.metrics_url), "vllm_router_kv_routing_inputs_total", result="render"
    )
    assert rendered >= 3


def test_killed_replica_loses_no_request(cluster) -> None:
    replicas, router = cluster
    victim = replicas[0]
    prompts = [[*_prefix(100 + i % 3), i, 1, 2] for i in range(24)]

    def send(i: int) -> dict:
        if i == 8:
            kill(victim.proc)
        return _post(router.url, {"model": NAME, "prompt": prompts[i], "max_tokens": 8})

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, range(len(prompts))))
    assert all(r["choices"][0]["text"] is not None for r in results)
    assert victim.proc.wait(timeout=30) == -signal.SIGKILL

    # The survivor serves what follows; the router keeps answering.
    before = _counters(replicas[1:])[0][0]
    for i in range(4):
        _post(router.url, {"model": NAME, "prompt": [*_prefix(200 + i), 3], "max_tokens": 2})
    assert _counters(replicas[1:])[0][0] - before == 4
