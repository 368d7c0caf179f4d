"""KV-cache events of the radix pool and the host tier, replayed as a router would, equal
what the pool and the host tier hold after every operation (vLLM's real KVCacheManager)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_block_pool import admit, make_manager, pool_of, request
from vllm.distributed.kv_events import BlockStored
from vllm.v1.outputs import KVConnectorOutput

from radix_plugin.cache_manager.connector.metadata import HostTierWorkerMetadata
from radix_plugin.cache_manager.core.errors import PinBudgetExceeded
from radix_plugin.cache_manager.engine_core.host_tier import HostTierScheduler
from radix_plugin.cache_manager.engine_core.kv_events import split_stored, stored_events
from radix_plugin.testing.kv_events import KVEventIndex, device_hashes, host_hashes

AGENTS = ("a", "b", "c")
OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                *["admit"] * 3,
                "free",
                "invalidate",
                "prefetch",
                "pin",
                "unpin",
                "reset",
                "reset_host",
            ]
        ),
        st.integers(0, 2),  # prompt family / agent
        st.integers(0, 40),  # suffix length or a pick
    ),
    min_size=1,
    max_size=40,
)


class Replica:
    """A radix pool with a bound host tier, its event stream replayed after every step."""

    def __init__(self, num_blocks: int, host_slots: int) -> None:
        self.manager = make_manager(num_blocks, policy="workflow")
        self.pool = pool_of(self.manager)
        self.host = HostTierScheduler(
            block_size=4,
            num_slots=host_slots,
            prefetch=True,
            load_ahead_steps=2,
            num_workers=1,
            block_bytes=1024,
        )
        self.host.bind(self.pool)
        self.pool.tree.max_pinned_blocks = 6
        self.index = KVEventIndex()
        self.running: list[Any] = []
        self.pinned: list[Any] = []

    def step(self) -> None:
        """What vLLM does at the end of a step: pool events, then the connector's."""
        self.host.build_meta()
        self.index.apply(self.manager.take_events())
        self.index.apply(self.host.take_events())
        assert not self.index.problems, self.index.problems
        assert self.index.medium("GPU") == device_hashes(self.pool)
        assert self.index.medium("CPU") == host_hashes(self.host)

    @staticmethod
    def prompt(family: int, suffix: int) -> list[int]:
        return [1000 * (family + 1) + i for i in range(12)] + [7 + family] * suffix + [3]

    def pin(self, family: int, suffix: int) -> None:
        """radix_pin's effect: the cached prefix of a prompt resists eviction."""
        n, node = self.pool.cached_prefix_node(request(self.prompt(family, suffix)).block_hashes)
        if n:
            try:
                self.pool.pin_prefix(node)
            except PinBudgetExceeded:
                return
            self.pinned.append(node)

    def unpin(self, pick: int) -> None:
        """A pin released or expired (its time-to-live): its blocks become victims again."""
        if self.pinned:
            node = self.pinned.pop(pick % len(self.pinned))
            if node.pin_count:
                self.pool.unpin_prefix(node)

    def admit(self, family: int, suffix: int) -> None:
        prompt = self.prompt(family, suffix)
        usable = self.pool.get_num_free_blocks()
        if len(prompt) // 4 + 1 > usable:
            return
        req, _ = admit(self.manager, prompt, extra={"radix_agent": AGENTS[family]})
        self.host.on_new_request(req)
        self.running.append(req)

    def prefetch(self, agent: int) -> None:
        self.pool.tree.policy.update_steps({AGENTS[agent]: 1})
        meta = self.host.build_meta()
        done = Counter({job: 1 for job, load in meta.loads.items() if load.prefetch})
        self.index.apply(self.manager.take_events())
        self.index.apply(self.host.take_events())
        self.host.on_output(
            KVConnectorOutput(kv_connector_worker_meta=HostTierWorkerMetadata(finished=done))
        )


@settings(max_examples=60, deadline=None)
@given(ops=OPS, host_slots=st.integers(1, 12))
def test_replayed_events_equal_the_pool_and_the_host_tier(ops: list, host_slots: int) -> None:
    replica = Replica(num_blocks=14, host_slots=host_slots)
    for op, which, n in ops:
        if op == "admit":
            replica.admit(which, n)
        elif op == "free" and replica.running:
            replica.manager.free(replica.running.pop(n % len(replica.running)))
        elif op == "invalidate":
            # vLLM's evict_blocks (a KV connector reporting bad blocks): hashes go, with events.
            cached = [b.block_id for b in replica.pool.blocks if b.block_hash is not None]
            if cached:
                replica.pool.evict_blocks({cached[n % len(cached)]})
        elif op == "prefetch":
            replica.prefetch(which)
        elif op == "pin":
            replica.pin(which, n)
        elif op == "unpin":
            replica.unpin(n)
        elif op == "reset" and replica.manager.reset_prefix_cache():  # refused while in use
            replica.pinned.clear()  # a reset drops the pins with the tree
        elif op == "reset_host":
            replica.host.reset()
        replica.step()


def test_every_eviction_path_is_reported_and_prefetched_blocks_come_back_as_gpu() -> None:
    replica = Replica(num_blocks=14, host_slots=8)
    replica.admit(0, 16)  # 7 full blocks of the 13 usable
    replica.manager.free(replica.running.pop())
    replica.step()
    for family in (1, 2):  # 14 more: 9 cached blocks evicted to an 8-slot host tier
        replica.admit(family, 16)
        replica.manager.free(replica.running.pop())
        replica.step()
    counts = replica.index.counts
    assert counts["BlockRemoved", "GPU"] >= 5
    assert counts["BlockStored", "CPU"] >= 5
    assert counts["BlockRemoved", "CPU"] >= 1, "an 8-slot host tier must have reused a slot"
    before = counts["BlockStored", "GPU"]
    replica.prefetch(0)  # agent a's host-held blocks come back
    replica.step()
    assert replica.host.stats.prefetched_blocks > 0
    assert counts["BlockStored", "GPU"] > before
    assert replica.manager.reset_prefix_cache()
    replica.step()  # AllBlocksCleared, then the host copies announced again
    assert len(replica.index.medium("CPU")) == len(replica.host.index) > 0
    assert not replica.index.orphans, replica.index.orphans


def test_payloads_round_trip_through_vllms_event_shape() -> None:
    event = BlockStored(
        block_hashes=[11, 12, 13],
        parent_block_hash=10,
        token_ids=list(range(12)),
        block_size=4,
        lora_id=None,
        medium="GPU",
        lora_name=None,
        extra_keys=[("salt",), None, None],
        group_idx=0,
    )
    blocks = split_stored(event)
    assert [b.parent_hash for b in blocks] == [10, 11, 12]
    assert stored_events(blocks, "GPU") == [event]
    (cpu,) = stored_events(blocks[1:], "CPU")
    assert (cpu.parent_block_hash, cpu.token_ids, cpu.medium) == (11, list(range(4, 12)), "CPU")
    assert len(stored_events([blocks[2], blocks[0]], "CPU")) == 2  # not a chain
