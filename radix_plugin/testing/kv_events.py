"""Consume a replica's KV-cache events as a router would, and compare them with the replica.

``KVEventIndex`` replays vLLM's events into what a router believes each medium holds (a
multiset: vLLM announces a duplicate block's hash once per copy); ``device_hashes`` and
``host_hashes`` read what the engine really holds. ``KVEventSubscriber`` receives the batches
from vLLM's ZMQ publisher (``--kv-events-config``) on a background thread, fills any gap from
the publisher's replay socket, and hands them back in sequence order.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import msgspec
import zmq
from vllm.distributed.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVCacheEvent,
    KVEventBatch,
)
from vllm.v1.core.kv_cache_utils import get_block_hash, maybe_convert_block_hash

END_OF_REPLAY = -1


class KVEventIndex:
    """Per medium, how many copies of each block hash the events say the replica holds."""

    def __init__(self) -> None:
        self.held: dict[str, Counter[Any]] = {}
        self.counts: Counter[tuple[str, str | None]] = Counter()
        """Blocks per (event type, medium); 1 per ``AllBlocksCleared``."""
        self.problems: list[str] = []
        self.orphans: list[str] = []
        """Blocks announced while no medium held their parent. vLLM itself does this after
        ``evict_blocks`` drops a prefix a running request still extends."""

    def medium(self, name: str) -> Counter[Any]:
        return +self.held.get(name, Counter())

    def apply(self, events: Iterable[KVCacheEvent]) -> None:
        for event in events:
            medium = getattr(event, "medium", None)
            self.counts[type(event).__name__, medium] += len(getattr(event, "block_hashes", [0]))
            if isinstance(event, AllBlocksCleared):
                self.held.clear()
            elif isinstance(event, BlockStored):
                self._check_stored(event)
                self.held.setdefault(event.medium, Counter()).update(event.block_hashes)
            elif isinstance(event, BlockRemoved):
                held = self.held.setdefault(event.medium, Counter())
                for h in event.block_hashes:
                    if held[h] <= 0:
                        self.problems.append(f"removed {h} never stored on {event.medium}")
                    held[h] -= 1

    def _check_stored(self, event: BlockStored) -> None:
        if len(event.token_ids) != event.block_size * len(event.block_hashes):
            self.problems.append(f"{len(event.token_ids)} token ids for {event!r}")
        parent = event.parent_block_hash
        if parent is not None and not any(c[parent] > 0 for c in self.held.values()):
            self.orphans.append(f"parent {parent} of {event.block_hashes[0]} not held")


def external_hash(key: Any) -> Any:
    """The hash vLLM's events carry for a block hash key (with its group id)."""
    return maybe_convert_block_hash(get_block_hash(key))


def device_hashes(block_pool: Any) -> Counter[Any]:
    """Every block hash cached in a vLLM block pool, counted once per block holding it."""
    return Counter(
        external_hash(b.block_hash) for b in block_pool.blocks if b.block_hash is not None
    )


def host_hashes(host_tier: Any) -> Counter[Any]:
    """Every block hash the radix host tier holds a copy of."""
    return Counter(external_hash(key) for key in host_tier.index)


class KVEventSubscriber:
    """A SUB socket on vLLM's KV-event publisher, read on a background thread."""

    def __init__(self, endpoint: str, replay_endpoint: str | None = None, topic: str = "") -> None:
        self._ctx = zmq.Context.instance()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._sub.connect(endpoint)
        self._replay_endpoint = replay_endpoint
        self._decoder = msgspec.msgpack.Decoder(type=KVEventBatch)
        self._batches: dict[int, KVEventBatch] = {}
        self.live = 0
        self.replayed = 0
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._receive, daemon=True, name="kv-sub")
        self._thread.start()

    def _receive(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sub, zmq.POLLIN)
        while self._running:
            if not poller.poll(100):
                continue
            _, seq, payload = self._sub.recv_multipart()
            with self._lock:
                self._batches[int.from_bytes(seq, "big")] = self._decoder.decode(payload)
                self.live += 1

    def batches(self, quiet_s: float = 0.5, timeout_s: float = 30.0) -> list[KVEventBatch]:
        """Every batch published so far, in order: waits until none arrived for ``quiet_s``
        (the engine must be idle), then fetches missing sequence numbers by replay."""
        deadline = time.monotonic() + timeout_s
        seen = -1
        while time.monotonic() < deadline:
            with self._lock:
                count = len(self._batches)
            if count == seen:
                break
            seen = count
            time.sleep(quiet_s)
        with self._lock:
            last = max(self._batches, default=-1)
            missing = [s for s in range(last + 1) if s not in self._batches]
        if missing:
            self._replay(missing[0])
        with self._lock:
            gaps = [s for s in range(last + 1) if s not in self._batches]
            if gaps:
                raise AssertionError(f"KV event batches lost: {gaps[:10]}")
            return [self._batches[s] for s in sorted(self._batches)]

    def _replay(self, start: int) -> None:
        if self._replay_endpoint is None:
            raise AssertionError(f"KV event batches from {start} missed and no replay endpoint")
        sock = self._ctx.socket(zmq.DEALER)
        sock.connect(self._replay_endpoint)
        try:
            sock.send_multipart([b"", start.to_bytes(8, "big")])
            while True:
                if not sock.poll(10_000):
                    raise AssertionError("the KV event replay socket did not answer")
                _, _, seq, payload = sock.recv_multipart()
                n = int.from_bytes(seq, "big", signed=True)
                if n == END_OF_REPLAY:
                    return
                with self._lock:
                    if n not in self._batches:
                        self._batches[n] = self._decoder.decode(payload)
                        self.replayed += 1
        finally:
            sock.close(linger=0)

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
        self._sub.close(linger=0)
