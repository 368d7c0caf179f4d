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


def _served(replicas: list[Replica]) -> list[float]:
    return [metric(scrape(r.url), "vllm:request_success_total") for r in replicas]


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
    placement: dict[int, list[int]] = {}
    hits_before = sum(metric(scrape(r.url), "vllm:prefix_cache_hits_total") for r in replicas)
    for turn in range(REQUESTS_PER_PREFIX):
        for p in range(NUM_PREFIXES):
            before = _served(replicas)
            prompt = [*_prefix(p), 7 + turn, 8 + p, 9]
            _post(router.url, {"model": NAME, "prompt": prompt, "max_tokens": 2})
            after = _served(replicas)
            landed = [i for i in range(len(replicas)) if after[i] > before[i]]
            assert len(landed) == 1, (before, after)
            placement.setdefault(p, []).append(landed[0])
            time.sleep(EVENT_WAIT_S)

    # Every request of a prefix went where its first request computed it.
    for p, where in placement.items():
        assert len(set(where)) == 1, f"prefix {p} moved between replicas: {where}"
    # Distinct prefixes used both replicas.
    homes = {where[0] for where in placement.values()}
    assert homes == {0, 1}, placement

    # Each replica's own counters: every repeat hit the whole shared prefix.
    hits = sum(metric(scrape(r.url), "vllm:prefix_cache_hits_total") for r in replicas)
    repeats = NUM_PREFIXES * (REQUESTS_PER_PREFIX - 1)
    assert hits - hits_before >= repeats * PREFIX_BLOCKS * BLOCK_SIZE

    router_metrics = scrape(router.metrics_url)
    assert metric(router_metrics, "vllm_router_kv_placement_lookups_total", result="hit") >= (
        repeats
    )


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
    before = _served(replicas[1:])[0]
    for i in range(4):
        _post(router.url, {"model": NAME, "prompt": [*_prefix(200 + i), 3], "max_tokens": 2})
    assert _served(replicas[1:])[0] - before == 4
