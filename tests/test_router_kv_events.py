"""vllm-router's `kv_aware` index fed by vLLM's own ZMQ publisher, configured as our replicas are.

No engine: vLLM's `ZmqEventPublisher` publishes vLLM's event classes exactly as an engine
would, the real Rust router consumes them, and two stub HTTP workers record where requests
land. This pins the contract the scale-out deployment depends on (see
`radix_plugin.testing.cluster`): the publisher binds, the topic is the router's (empty) one,
the block size matches, stores attract their prefix and removals release it.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("vllm_router", reason="vllm-router is a dev dependency (make setup)")

from vllm.distributed.kv_events import (
    BlockRemoved,
    BlockStored,
    KVEventBatch,
    ZmqEventPublisher,
)

from radix_plugin.testing.cluster import (
    BLOCK_SIZE,
    KV_EVENTS_CONFIG,
    Replica,
    metric,
    running_router,
    scrape,
)

NAME = "m"
BLOCKS = 4


class _Worker(BaseHTTPRequestHandler):
    """Answers health checks and completions; records each completion's prompt."""

    def log_message(self, *args) -> None:
        pass

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply({"object": "list", "data": [{"id": NAME, "object": "model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.prompts.append(body["prompt"])  # type: ignore[attr-defined]
        choice = {"index": 0, "text": "ok", "finish_reason": "length"}
        self._reply({"id": "c", "object": "text_completion", "model": NAME, "choices": [choice]})


class _Replica:
    def __init__(self, topic: str) -> None:
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _Worker)
        self.http.prompts = []  # type: ignore[attr-defined]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.publisher = ZmqEventPublisher(
            data_parallel_rank=0,
            endpoint=KV_EVENTS_CONFIG["endpoint"],
            replay_endpoint=KV_EVENTS_CONFIG["replay_endpoint"],
            topic=topic,
        )
        config = self.publisher.get_publisher_config()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.replica = Replica(self.url, config.endpoint, config.replay_endpoint, None)

    @property
    def prompts(self) -> list:
        return self.http.prompts  # type: ignore[attr-defined]

    def store(self, tokens: list[int], hashes: list[int]) -> None:
        event = BlockStored(
            block_hashes=hashes,
            parent_block_hash=None,
            token_ids=tokens,
            block_size=BLOCK_SIZE,
            lora_id=None,
            medium="GPU",
            lora_name=None,
            group_idx=0,
        )
        self.publisher.publish(KVEventBatch(ts=time.time(), events=[event]))

    def remove(self, hashes: list[int]) -> None:
        event = BlockRemoved(block_hashes=hashes, medium="GPU", group_idx=0)
        self.publisher.publish(KVEventBatch(ts=time.time(), events=[event]))

    def close(self) -> None:
        self.publisher.shutdown()
        self.http.shutdown()


@pytest.fixture
def replicas(request, monkeypatch) -> Iterator[list[_Replica]]:
    monkeypatch.setenv("VLLM_HOST_IP", "127.0.0.1")  # where vLLM binds `tcp://*:0`
    made = [_Replica(request.param) for _ in range(2)]
    yield made
    for r in made:
        r.close()


def _prefix(seed: int) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    tokens = [rng.randrange(10, 4000) for _ in range(BLOCKS * BLOCK_SIZE)]
    return tokens, [rng.getrandbits(63) for _ in range(BLOCKS)]


def _send(router_url: str, prompt: list[int]) -> None:
    body = json.dumps({"model": NAME, "prompt": prompt, "max_tokens": 1}).encode()
    req = urllib.request.Request(
        router_url + "/v1/completions", body, {"Content-Type": "application/json"}
    )
    urllib.request.urlopen(req, timeout=30).read()


def _settle() -> None:
    """Give the router's event reader time to apply what the replicas published (it reads
    their ZMQ streams on its own thread; 0.5 s was once too short on a loaded 2-core box)."""
    time.sleep(2.0)


def _landed(replicas: list[_Replica], prompt: list[int]) -> list[int]:
    return [i for i, r in enumerate(replicas) if prompt in r.prompts]


@pytest.mark.parametrize("replicas", [KV_EVENTS_CONFIG["topic"]], indirect=True)
def test_stores_attract_and_removals_release_prefixes(replicas: list[_Replica]) -> None:
    with running_router(
        "kv_aware", [r.replica for r in replicas], served_name=NAME, sync_kv=False
    ) as router:
        (a, a_hashes), (b, b_hashes) = _prefix(1), _prefix(2)
        replicas[0].store(a, a_hashes)
        replicas[1].store(b, b_hashes)
        _settle()
        for turn in range(3):
            _send(router.url, [*a, turn])
            _send(router.url, [*b, turn])
            assert _landed(replicas, [*a, turn]) == [0]
            assert _landed(replicas, [*b, turn]) == [1]

        # A moves: evicted on replica 0, computed on replica 1.
        replicas[0].remove(a_hashes)
        replicas[1].store(a, a_hashes)
        _settle()
        _send(router.url, [*a, 9])
        assert _landed(replicas, [*a, 9]) == [1]

        text = scrape(router.metrics_url)
        assert metric(text, "vllm_router_kv_placement_lookups_total", result="hit") == 7
        assert metric(text, "vllm_router_kv_placement_lookups_total", result="miss") == 0


@pytest.mark.parametrize("replicas", ["kv-events"], indirect=True)
def test_a_named_topic_is_silently_dropped(replicas: list[_Replica]) -> None:
    """Why a first try saw only misses: vLLM publishing under any topic but the router's."""
    with running_router(
        "kv_aware", [r.replica for r in replicas], served_name=NAME, sync_kv=False
    ) as router:
        a, a_hashes = _prefix(1)
        replicas[1].store(a, a_hashes)
        _settle()
        _send(router.url, [*a, 0])
        text = scrape(router.metrics_url)
        assert metric(text, "vllm_router_kv_placement_lookups_total", result="hit") == 0
        assert metric(text, "vllm_router_kv_placement_lookups_total", result="miss") == 1
