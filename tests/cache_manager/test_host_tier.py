"""Host tier pieces without an engine: the slot index, the layout-agnostic block copies, and
the scheduler side bound to vLLM's real KVCacheManager with the radix pool."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_block_pool import BS, admit, make_manager, pool_of, request
from vllm.v1.core.block_pool import BlockPool
from vllm.v1.core.kv_cache_utils import make_block_hash_with_group_id
from vllm.v1.kv_cache_interface import (
    FullAttentionSpec,
    KVCacheConfig,
    KVCacheGroupSpec,
    KVCacheTensor,
)

from radix_plugin.cache_manager.connector.metadata import HostTierMetadata, LoadJob
from radix_plugin.cache_manager.core.host_index import HostIndex
from radix_plugin.cache_manager.engine_core.host_tier import (
    HostTierScheduler,
    HostTierSetupError,
)
from radix_plugin.cache_manager.worker import host_tier as worker_side
from radix_plugin.cache_manager.worker.host_store import (
    HostStore,
    HostTierLayoutError,
    block_bytes,
    page_views,
)
from radix_plugin.cache_manager.worker.host_tier import HostTierWorker

# --- HostIndex ------------------------------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["store", "acquire", "release", "protect", "end_step", "touch"]),
        st.integers(0, 30),
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(num_slots=st.integers(1, 8), ops=OPS)
def test_host_index_never_reuses_a_slot_in_use(num_slots: int, ops: list) -> None:
    index = HostIndex(num_slots)
    held: list[int] = []  # slots acquired and not yet released
    protected: set[int] = set()
    for op, arg in ops:
        stored = {h: index.get(h) for h in range(31) if h in index}
        if op == "store" and arg not in index:
            slot = index.store(arg)
            busy = set(held) | protected
            if slot is None:
                assert len(stored) == num_slots and busy >= set(stored.values())
            else:
                assert slot not in busy or slot not in stored.values()
                for h, s in stored.items():
                    if s in busy:
                        assert index.get(h) == s, "a slot in use lost its content"
        elif op == "acquire" and arg in index:
            slot = index.get(arg)
            index.acquire([slot])
            held.append(slot)
        elif op == "release" and held:
            index.release([held.pop(arg % len(held))])
        elif op == "protect" and arg in index:
            index.protect([index.get(arg)])
            protected.add(index.get(arg))
        elif op == "end_step":
            index.end_step()
            protected.clear()
        elif op == "touch" and arg in index:
            index.touch(arg)
        slots = [index.get(h) for h in range(31) if h in index]
        assert len(slots) == len(set(slots)) <= num_slots


def test_host_index_reuses_the_least_recently_used_slot() -> None:
    index = HostIndex(2)
    a, b = index.store("a"), index.store("b")
    index.touch("a")
    c = index.store("c")
    assert c == b and "b" not in index and index.get("a") == a
    index.acquire([a])
    index.protect([c])
    assert index.store("d") is None  # every slot is read or promised
    with pytest.raises(ValueError, match="already"):
        index.store("a")


# --- HostStore ------------------------------------------------------------------------------


def _config(num_blocks: int, layers: int, page: int, layer_outermost: bool) -> KVCacheConfig:
    # page bytes = 2 (K, V) * block 4 * heads 1 * head_size * 2 bytes (fp16)
    spec = FullAttentionSpec(
        block_size=4, num_kv_heads=1, head_size=page // 16, dtype=torch.float16
    )
    assert spec.page_size_bytes == page
    names = [f"layer{i}" for i in range(layers)]
    if layer_outermost:
        layer_stride, block_stride = page * num_blocks, page
    else:
        layer_stride, block_stride = page, page * layers
    tensor = KVCacheTensor(
        size=page * num_blocks * layers,
        layers=names,
        layer_stride=layer_stride,
        block_stride=block_stride,
    )
    return KVCacheConfig(
        num_blocks=num_blocks,
        kv_cache_tensors=[tensor],
        kv_cache_groups=[KVCacheGroupSpec(names, spec)],
    )


def _caches(config: KVCacheConfig, layer_outermost: bool) -> dict[str, torch.Tensor]:
    """Per-layer tensors over one allocation, shaped as an attention backend might."""
    (tensor,) = config.kv_cache_tensors
    raw = torch.arange(tensor.size, dtype=torch.int64).remainder(251).to(torch.uint8)
    page = config.kv_cache_groups[0].kv_cache_spec.page_size_bytes
    n = config.num_blocks
    caches = {}
    for i, name in enumerate(tensor.layers):
        if layer_outermost:
            view = raw[i * tensor.layer_stride : (i + 1) * tensor.layer_stride]
            caches[name] = view.view(torch.float16).view(n, 2, 4, page // 16)
        else:
            strided = raw.as_strided((n, page), (tensor.block_stride, 1), i * page)
            caches[name] = strided.view(torch.float16)
    return caches


@pytest.mark.parametrize("layer_outermost", [True, False])
def test_host_store_round_trips_blocks_in_either_layout(layer_outermost: bool) -> None:
    config = _config(num_blocks=6, layers=3, page=64, layer_outermost=layer_outermost)
    caches = _caches(config, layer_outermost)
    pages = page_views(caches, config)
    assert block_bytes(config) == 3 * 64
    before = [p.clone() for p in pages]
    store = HostStore(pages, num_slots=4)
    store.save([1, 4], [3, 0])
    for p in pages:
        p[[1, 4]] = 0
    store.load([3, 0], [2, 5])  # back into other blocks
    for layer, p in enumerate(pages):
        assert torch.equal(p[2], before[layer][1]) and torch.equal(p[5], before[layer][4])
        assert not p[[1, 4]].any()
        untouched = [0, 3]
        assert torch.equal(p[untouched], before[layer][untouched])
    # The views alias the backend's tensors: the copy is visible through them.
    first = next(iter(caches.values()))
    assert torch.equal(first[2].reshape(-1).view(torch.uint8), before[0][1])


def test_host_store_rejects_a_layout_it_cannot_address() -> None:
    config = _config(num_blocks=6, layers=2, page=64, layer_outermost=True)
    caches = {name: t[:2].clone() for name, t in _caches(config, True).items()}  # too small
    with pytest.raises(HostTierLayoutError, match="overrun"):
        page_views(caches, config)


# --- scheduler side on vLLM's KVCacheManager ------------------------------------------------


def _host(manager, slots: int = 16) -> HostTierScheduler:
    host = HostTierScheduler(
        block_size=BS,
        num_slots=slots,
        prefetch=False,
        load_ahead_steps=2,
        num_workers=1,
        block_bytes=1024,
    )
    host.bind(manager.block_pool)
    return host


def test_binding_to_vllms_plain_pool_names_the_fix() -> None:
    host = HostTierScheduler(
        block_size=BS,
        num_slots=4,
        prefetch=True,
        load_ahead_steps=2,
        num_workers=1,
        block_bytes=1024,
    )
    with pytest.raises(HostTierSetupError, match=r"--scheduler-cls radix_plugin\.RadixScheduler"):
        host.bind(BlockPool(8, True, BS))


def test_evicted_blocks_are_saved_then_found_and_loading_blocks_make_requests_wait() -> None:
    m = make_manager(9)  # 8 usable blocks
    host = _host(m)
    first = list(range(100, 117))  # 4 full blocks + 1 token
    old, _ = admit(m, first)
    old_full_blocks = set(m.get_block_ids(old.request_id)[0][:4])
    m.free(old)
    other, _ = admit(m, list(range(200, 230)))  # 8 blocks: evicts the first chain
    saves = host.build_meta().saves
    assert {block for block, _ in saves} == old_full_blocks
    assert len({slot for _, slot in saves}) == 4 == len(host.index)
    m.free(other)
    again = request(first)
    _, hit, *_ = m.get_computed_blocks(again)
    assert hit == 0
    n, is_async = host.get_num_new_matched_tokens(again, 0)
    assert (n, is_async) == (4 * BS, True)
    blocks = m.allocate_slots(again, len(first), num_new_computed_tokens=0)
    host.update_state_after_alloc(again, blocks, n)
    meta = host.build_meta()
    (job,) = meta.loads.values()
    assert job.block_ids == tuple(blocks.get_block_ids()[0][:4])
    # A second request for the same prefix waits while the blocks are on their way.
    twin = request(first)
    assert host.get_num_new_matched_tokens(twin, 0) == (None, False)
    assert host.request_finished(again) is True  # an abort now must keep the blocks


def test_prefetch_only_evicts_what_is_needed_later_and_adopted_blocks_hit() -> None:
    m = make_manager(9, events=False)  # with events on, adopting needs payloads (test_kv_events)
    pool = pool_of(m)
    keep, _ = admit(m, list(range(100, 116)))  # 4 blocks
    m.free(keep)
    none = pool.take_blocks_for_prefetch(8, may_evict=lambda node: False)
    assert len(none) == 4  # only the uncached free blocks
    loaded_tokens = list(range(300, 308))
    donor = request([*loaded_tokens, 1])
    keys = [make_block_hash_with_group_id(h, 0) for h in donor.block_hashes[:2]]
    last = pool.adopt_loaded_blocks(None, none[:2], keys, 0)
    assert last is not None
    pool.free_blocks(none[2:])
    probe = request([*loaded_tokens, 1])
    _, hit, *_ = m.get_computed_blocks(probe)
    assert hit == 2 * BS
    assert pool.get_num_free_blocks() == 8


def test_prefetch_plans_due_agents_while_their_prompts_fit_and_adopts_loaded_blocks() -> None:
    from collections import Counter

    from vllm.v1.outputs import KVConnectorOutput

    from radix_plugin.cache_manager.connector.metadata import HostTierWorkerMetadata

    m = make_manager(13, policy="workflow", events=False)  # 12 usable, 1 kept as reserve
    pool = pool_of(m)
    host = HostTierScheduler(
        block_size=BS,
        num_slots=64,
        prefetch=True,
        load_ahead_steps=2,
        num_workers=1,
        block_bytes=1024,
    )
    host.bind(pool)
    prompts = {"x": list(range(100, 125)), "y": list(range(200, 225))}  # 6 full blocks each
    for agent, tokens in prompts.items():
        req, _ = admit(m, tokens, extra={"radix_agent": agent})
        host.on_new_request(req)
        m.free(req)
    filler, _ = admit(m, list(range(300, 348)))  # 12 blocks: both prompts go to the host
    m.free(filler)
    assert len(host.build_meta().saves) == 12
    pool.tree.policy.update_steps({"x": 1, "y": 2})
    meta = host.build_meta()
    # x fits (6 of 11 usable blocks); x and y together (12) do not, so y waits its turn.
    (job_id,) = meta.loads
    assert meta.loads[job_id].prefetch and len(meta.loads[job_id].block_ids) == 6
    assert len(meta.saves) == 6  # the filler blocks it displaced went to the host first
    assert host.has_prefetches_in_flight()
    _, hit, *_ = m.get_computed_blocks(request(prompts["x"]))
    assert hit == 0  # not usable until the load is reported done
    done = HostTierWorkerMetadata(finished=Counter({job_id: 1}))
    host.on_output(KVConnectorOutput(kv_connector_worker_meta=done))
    assert not host.has_prefetches_in_flight()
    _, hit, *_ = m.get_computed_blocks(request(prompts["x"]))
    assert hit == 6 * BS
    assert pool.get_num_free_blocks() == 12  # the prefetch's holds are all dropped


# --- worker side: stream ordering of loads --------------------------------------------------


class FakeEvent:
    """A stream event the test completes by hand."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.done = False

    def query(self) -> bool:
        return self.done


class FakeStreams:
    """Records every stream operation with the thread that issued it, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, bool]] = []  # (operation, event, on the main thread)
        self.events: list[FakeEvent] = []

    def _note(self, op: str, event: FakeEvent | None = None) -> None:
        main = threading.current_thread() is threading.main_thread()
        self.log.append((op, event.name if event else "", main))

    def _event(self, name: str) -> FakeEvent:
        self.events.append(FakeEvent(f"{name}{len(self.events)}"))
        return self.events[-1]

    def record_on_compute(self) -> FakeEvent:
        event = self._event("compute")
        self._note("record_on_compute", event)
        return event

    @contextlib.contextmanager
    def on_side(self) -> Iterator[None]:
        self._note("enter_side")
        yield
        self._note("exit_side")

    def side_waits(self, event: FakeEvent) -> None:
        self._note("side_waits", event)

    def record_on_side(self) -> FakeEvent:
        event = self._event("side")
        self._note("record_on_side", event)
        return event

    def compute_waits(self, event: FakeEvent) -> None:
        self._note("compute_waits", event)


def test_a_load_waits_for_the_compute_stream_and_compute_waits_for_the_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    streams = FakeStreams()

    class LoggingStore(HostStore):
        def load(self, slots: Sequence[int], block_ids: Sequence[int]) -> None:
            streams._note("copy")
            super().load(slots, block_ids)

    monkeypatch.setattr(worker_side, "HostStore", LoggingStore)
    config = _config(num_blocks=6, layers=2, page=64, layer_outermost=True)
    worker = HostTierWorker(config, num_slots=4, streams=streams)
    caches = _caches(config, True)
    worker.register_kv_caches(caches)
    before = [p.clone() for p in worker.store.pages]
    worker.save(HostTierMetadata(saves=[(1, 3), (4, 0)]))
    worker.start_loads(HostTierMetadata(loads={"r1": LoadJob((3, 0), (2, 5))}))
    deadline = time.monotonic() + 10
    while not any(op == "exit_side" for op, _, _ in streams.log):
        assert time.monotonic() < deadline, streams.log
        time.sleep(0.01)
    assert streams.log == [
        ("record_on_compute", "compute0", True),  # on the thread driving the compute stream
        ("enter_side", "", False),
        ("side_waits", "compute0", False),  # before any copy is enqueued
        ("copy", "", False),
        ("record_on_side", "side1", False),
        ("exit_side", "", False),
    ]
    assert worker.take_finished() == (set(), None)  # enqueued, not yet copied
    streams.events[1].done = True
    assert worker.take_finished() == ({"r1"}, None)
    assert streams.log[-1] == ("compute_waits", "side1", True)  # before anything uses it
    for layer, pages in enumerate(worker.store.pages):
        assert torch.equal(pages[2], before[layer][1]) and torch.equal(pages[5], before[layer][4])
    worker.shutdown()


def test_host_tier_refuses_sleep_mode_where_vllm_asks() -> None:
    """vLLM 0.33.0 refuses ``--enable-sleep-mode`` with a connector whose
    ``supports_sleep_mode(kv_transfer_config)`` is False (config/vllm.py:1254-1267; the
    class comes from the connector factory, as here). The host tier's views into KV memory
    would not survive sleep, so it says no, and keeps vLLM's no-op ``unregister_kv_caches``
    / ``restore_kv_caches`` (0.33.0 calls them only on sleep, wake-up and discard). 0.32.0
    has no sleep hooks for connectors."""
    from vllm.config import KVTransferConfig
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

    config = KVTransferConfig(
        kv_connector="RadixHostTierConnector",
        kv_connector_module_path="radix_plugin.cache_manager.connector",
        kv_role="kv_both",
    )
    connector_cls = KVConnectorFactory.get_connector_class(config)
    assert connector_cls.__name__ == "RadixHostTierConnector"
    assert connector_cls.supports_sleep_mode(config) is False
    for hook in ("unregister_kv_caches", "restore_kv_caches"):
        assert hook not in vars(connector_cls)
