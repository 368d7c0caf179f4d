"""Scheduler role of the host tier: what to save, what to load, what to prefetch.

* Save: every block the radix pool evicts is queued for a copy to a host slot (one copy per
  content: a block hash already on the host is only touched).
* Demand load: a new request whose prompt continues past its device hit with blocks held on
  the host gets them loaded into its new blocks asynchronously (``(n, True)``); it waits in
  ``WAITING_FOR_REMOTE_KVS`` while the rest of the batch runs.
* Status-aware skip (KVFlow): a request whose next block is still being loaded gets
  ``None`` ("ask again"), so vLLM skips it this step instead of recomputing or loading it
  twice, and never stalls the batch for it.
* Prefetch (KVFlow): agents due within ``load_ahead_steps`` steps (from the workflow policy's
  steps-to-execution) get the host-held part of their last prompt loaded into free device
  blocks before their request arrives; the blocks only ever come from free blocks whose
  eviction the workflow order allows, and join the prefix cache once loaded.
* KV events (when vLLM's are on): host copies are reported on the ``CPU`` medium, prefetched
  blocks on the device pool's medium (``kv_events``), through the connector's
  ``take_events``, which vLLM publishes after the device pool's events of the same step.
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_events import MEDIUM_CPU, KVCacheEvent
from vllm.v1.core.kv_cache_utils import KVCacheBlock, make_block_hash_with_group_id

from radix_plugin.cache_manager.connector.metadata import (
    HostTierMetadata,
    HostTierWorkerMetadata,
    LoadJob,
)
from radix_plugin.cache_manager.core.hints import HintError, parse_hints
from radix_plugin.cache_manager.core.host_index import HostIndex
from radix_plugin.cache_manager.core.policies.workflow import WorkflowPolicy, tag_agent
from radix_plugin.cache_manager.engine_core.block_pool import RadixBlockPool
from radix_plugin.cache_manager.engine_core.kv_events import (
    StoredBlock,
    parents_first,
    removed_event,
    stored_events,
)

if TYPE_CHECKING:
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

MAX_REMEMBERED_AGENTS = 4096


class HostTierSetupError(RuntimeError):
    """The host tier is configured in a way it cannot work; the message says the fix."""


@dataclass
class _Prefetch:
    agent: Hashable
    steps: int
    device_path: list[KVCacheBlock]
    blocks: list[KVCacheBlock]
    keys: list[Any]
    job: LoadJob
    done_workers: int = 0
    waited: bool = False
    """A request looked its blocks up while they were still loading (a late prefetch)."""


@dataclass
class HostTierStats:
    """Cumulative counts (never reset; /metrics shows most of them)."""

    saved_blocks: int = 0
    skipped_saves: int = 0
    loaded_blocks: int = 0
    hit_tokens: int = 0
    """Tokens of requests' prompts found on the host, past their device hit."""
    prefetched_blocks: int = 0
    prefetch_in_time_blocks: int = 0
    prefetch_late_blocks: int = 0
    prefetch_wasted_blocks: int = 0
    status_skips: int = 0
    failed_loads: int = 0


class HostTierScheduler:
    def __init__(
        self,
        *,
        block_size: int,
        num_slots: int,
        prefetch: bool,
        load_ahead_steps: int,
        num_workers: int,
        block_bytes: int,
    ) -> None:
        self.block_size = block_size
        self.block_bytes = block_bytes
        self.index = HostIndex(num_slots, on_drop=self._on_host_drop)
        self.prefetch = prefetch
        self.load_ahead_steps = load_ahead_steps
        self.num_workers = num_workers
        self.stats = HostTierStats()
        self._pool: RadixBlockPool | None = None
        self._saves: list[tuple[int, int]] = []
        self._loads: dict[str, LoadJob] = {}
        self._lookups: dict[str, tuple[int, list[Any], list[int]]] = {}
        self._demand: dict[str, tuple[LoadJob, list[Any]]] = {}
        self._prefetches: dict[str, _Prefetch] = {}
        self._loading: dict[Any, str] = {}
        self._agent_paths: OrderedDict[Hashable, list[Any]] = OrderedDict()
        # Prefetched blocks on the device that no request has hit yet (block hash -> None),
        # oldest first; bounded by the device pool (see ``_count_adopted``).
        self._unused_prefetched: OrderedDict[Any, None] = OrderedDict()
        self._job_ids = itertools.count()
        # With KV events on: each host copy's payload, and the events not yet taken.
        self._events_on = False
        self._announced: dict[Any, StoredBlock] = {}
        self._unannounced: dict[Any, StoredBlock] = {}  # saved since the last take_events
        self._events: list[KVCacheEvent] = []

    # --- wiring --------------------------------------------------------------------------

    def bind(self, block_pool: Any) -> None:
        if not isinstance(block_pool, RadixBlockPool):
            raise HostTierSetupError(
                "the radix host tier needs the radix prefix cache: start vLLM with "
                "--scheduler-cls radix_plugin.RadixScheduler and prefix caching on "
                f"(got a {type(block_pool).__name__})"
            )
        self._pool = block_pool
        self._events_on = block_pool.enable_kv_cache_events
        block_pool.add_eviction_listener(self.on_evicted)
        block_pool.add_reset_listener(self._on_pool_reset)

    @property
    def pool(self) -> RadixBlockPool:
        if self._pool is None:
            raise HostTierSetupError("the radix host tier was never bound to a block pool")
        return self._pool

    # --- saves ---------------------------------------------------------------------------

    def on_evicted(self, blocks: list[KVCacheBlock]) -> None:
        """Queue copies of evicted blocks to host slots (in eviction order, leaf first, so
        a deeper block's host copy is the older one and is reused first)."""
        unused = self._unused_prefetched
        for block in blocks:
            key = block.block_hash
            if unused and key in unused:
                del unused[key]
                self.stats.prefetch_wasted_blocks += 1
            if key is None or key in self._loading:
                continue
            if key in self.index:
                self.index.touch(key)
                continue
            announced = self.pool.stored_block(block.block_id)
            if self._events_on and announced is None:
                # Never announced on the device: a host copy routers cannot be told about.
                self.stats.skipped_saves += 1
                continue
            slot = self.index.store(key)
            if slot is None:
                self.stats.skipped_saves += 1
                continue
            self._saves.append((block.block_id, slot))
            self.stats.saved_blocks += 1
            if announced is not None:
                self._announced[key] = announced
                self._unannounced[key] = announced

    # --- KV events -----------------------------------------------------------------------

    def _on_host_drop(self, key: Any) -> None:
        announced = self._announced.pop(key, None)
        if self._unannounced.pop(key, None) is None and announced is not None:
            self._events.append(removed_event(announced, MEDIUM_CPU))

    def _on_pool_reset(self) -> None:
        """The device pool queued ``AllBlocksCleared``, which vLLM publishes before this
        tier's events and which clears every medium of the replica: announce the host
        copies again, replacing the events not yet taken (the snapshot covers them)."""
        self.stats.prefetch_wasted_blocks += len(self._unused_prefetched)
        self._unused_prefetched.clear()
        if self._events_on:
            self._events = stored_events(parents_first(self._announced.values()), MEDIUM_CPU)
            self._unannounced.clear()

    def take_events(self) -> list[KVCacheEvent]:
        """This step's host-tier events: removals (and a reset's snapshot), then the new
        copies, parents first. vLLM publishes the device pool's events of the step first,
        so a chain evicted over several allocations must not reach a consumer child first."""
        stored = stored_events(parents_first(self._unannounced.values()), MEDIUM_CPU)
        events, self._events = [*self._events, *stored], []
        self._unannounced.clear()
        return events

    # --- demand loads --------------------------------------------------------------------

    def on_new_request(self, request: Request) -> None:
        """Remember each agent's latest prompt path: what to prefetch when it is due."""
        try:
            agent = parse_hints(request.sampling_params.extra_args).agent
        except (HintError, AttributeError):
            return
        if agent is None:
            return
        n = request.num_prompt_tokens // self.block_size
        self._agent_paths[agent] = list(request.block_hashes[:n])
        self._agent_paths.move_to_end(agent)
        while len(self._agent_paths) > MAX_REMEMBERED_AGENTS:
            self._agent_paths.popitem(last=False)

    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        start = num_computed_tokens // self.block_size
        if self._unused_prefetched:
            self._count_prefetch_hits(request.block_hashes[:start])
        # At least one prompt token is always computed, so the last block is never loaded.
        end = min(len(request.block_hashes), (request.num_tokens - 1) // self.block_size)
        keys: list[Any] = []
        slots: list[int] = []
        for i in range(start, end):
            key = make_block_hash_with_group_id(request.block_hashes[i], 0)
            job_id = self._loading.get(key)
            if job_id is not None:
                self.stats.status_skips += 1
                prefetch = self._prefetches.get(job_id)
                if prefetch is not None:
                    prefetch.waited = True
                return None, False
            slot = self.index.get(key)
            if slot is None:
                break
            keys.append(key)
            slots.append(slot)
        if not keys:
            return 0, False
        self.index.protect(slots)
        self._lookups[request.request_id] = (start, keys, slots)
        self.stats.hit_tokens += len(keys) * self.block_size
        return len(keys) * self.block_size, True

    def _count_prefetch_hits(self, device_hit: Sequence[Any]) -> None:
        """A request's device hit covers prefetched blocks nobody used yet: in time."""
        unused = self._unused_prefetched
        for block_hash in device_hit:
            key = make_block_hash_with_group_id(block_hash, 0)
            if key in unused:
                del unused[key]
                self.stats.prefetch_in_time_blocks += 1

    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> None:
        lookup = self._lookups.pop(request.request_id, None)
        if lookup is None or num_external_tokens == 0:
            return
        start, keys, slots = lookup
        n = num_external_tokens // self.block_size
        block_ids = blocks.get_block_ids()[0][start : start + n]
        job = LoadJob(tuple(slots[:n]), tuple(block_ids))
        self._start_load(request.request_id, job, keys[:n])
        self._demand[request.request_id] = (job, keys[:n])
        self.stats.loaded_blocks += n

    def _start_load(self, job_id: str, job: LoadJob, keys: Sequence[Any]) -> None:
        self.index.acquire(job.slots)
        for key in keys:
            self.index.touch(key)
            self._loading[key] = job_id
        self._loads[job_id] = job

    def request_finished(self, request: Request) -> bool:
        """True keeps the request's blocks until its load in flight is reported done, so a
        request aborted mid-load never frees blocks the load still writes."""
        self._lookups.pop(request.request_id, None)
        return request.request_id in self._demand

    # --- step boundary -------------------------------------------------------------------

    def build_meta(self) -> HostTierMetadata:
        if self.prefetch:
            self._plan_prefetches()
        meta = HostTierMetadata(saves=self._saves, loads=self._loads)
        self._saves, self._loads = [], {}
        self.index.end_step()
        return meta

    def on_output(self, output: KVConnectorOutput) -> None:
        for job_id in output.finished_recving or ():
            done = self._demand.pop(job_id, None)
            if done is not None:
                self._end_load(job_id, *done)
        meta = output.kv_connector_worker_meta
        if isinstance(meta, HostTierWorkerMetadata):
            self._on_prefetch_results(meta.finished, ok=True)
            self._on_prefetch_results(meta.failed, ok=False)

    def _end_load(self, job_id: str, job: LoadJob, keys: Sequence[Any]) -> None:
        self.index.release(job.slots)
        for key in keys:
            if self._loading.get(key) == job_id:
                del self._loading[key]

    # --- prefetch ------------------------------------------------------------------------

    def _plan_prefetches(self) -> None:
        """Prefetch due agents, soonest first, while their prompts still fit.

        What must stay on the device until an agent at ``s`` steps runs is what is in use now
        plus the prompts of the agents due at 1..``s`` steps; past the pool (less a reserve),
        a prefetch would only be evicted again by a sooner agent's request before its own
        arrives, so planning stops there. Agents due now (0 steps) are in use or arriving.
        """
        pool = self.pool
        policy = pool.tree.policy
        if not isinstance(policy, WorkflowPolicy):
            return
        usable = pool.num_gpu_blocks - 1 - self._reserve()
        needed = pool.num_gpu_blocks - 1 - pool.get_num_free_blocks()
        for steps, agent in policy.agents_due_within(self.load_ahead_steps):
            path = self._agent_paths.get(agent)
            if not path:
                continue
            if steps > 0:
                needed += len(path)
            if needed > usable:
                return
            self._prefetch(agent, steps, path, policy)

    def _reserve(self) -> int:
        """Free blocks a prefetch never takes: room for running requests to grow."""
        return max(1, self.pool.num_gpu_blocks // 10)

    def _prefetch(
        self, agent: Hashable, steps: int, path: list[Any], policy: WorkflowPolicy
    ) -> None:
        pool = self.pool
        device_path = pool.longest_cached_prefix(path, len(path))
        keys: list[Any] = []
        slots: list[int] = []
        for block_hash in path[len(device_path) :]:
            key = make_block_hash_with_group_id(block_hash, 0)
            slot = self.index.get(key)
            if key in self._loading or slot is None:
                break
            keys.append(key)
            slots.append(slot)
        if not keys:
            return
        budget = min(len(keys), pool.get_num_free_blocks() - self._reserve())
        if budget <= 0:
            return
        self.index.protect(slots)  # evictions below save into host slots; not these
        pool.hold_blocks(device_path)
        blocks = pool.take_blocks_for_prefetch(
            budget, may_evict=lambda node: policy.node_steps(node) > steps
        )
        if not blocks:
            pool.free_blocks(device_path)
            return
        n = len(blocks)
        job_id = f"radix-prefetch-{next(self._job_ids)}"
        job = LoadJob(tuple(slots[:n]), tuple(b.block_id for b in blocks), prefetch=True)
        self._start_load(job_id, job, keys[:n])
        self._prefetches[job_id] = _Prefetch(agent, steps, device_path, blocks, keys[:n], job)
        self.stats.prefetched_blocks += n

    def _on_prefetch_results(self, counts: Counter[str], *, ok: bool) -> None:
        for job_id, workers in counts.items():
            prefetch = self._prefetches.get(job_id)
            if prefetch is None:
                continue
            prefetch.done_workers += workers
            if ok and prefetch.done_workers < self.num_workers:
                continue
            del self._prefetches[job_id]
            self._end_load(job_id, prefetch.job, prefetch.keys)
            self._adopt(prefetch) if ok else self._discard(prefetch)

    def _adopt(self, prefetch: _Prefetch) -> None:
        pool = self.pool
        parent = None
        if prefetch.device_path:
            parent = pool.node_of_block(prefetch.device_path[-1].block_id)
            if parent is None:  # the prefix it continues left the index: nothing to attach to
                self.stats.prefetch_wasted_blocks += len(prefetch.blocks)
                pool.free_blocks(prefetch.blocks)
                pool.free_blocks(prefetch.device_path)
                return
        first = len(prefetch.device_path)
        announce = None
        if self._events_on:
            announce = [self._announced[key] for key in prefetch.keys]
        last = pool.adopt_loaded_blocks(parent, prefetch.blocks, prefetch.keys, first, announce)
        if last is not None:
            tag_agent(pool.tree, last, prefetch.agent)
        pool.free_blocks(prefetch.device_path)
        self._count_adopted(prefetch)

    def _count_adopted(self, prefetch: _Prefetch) -> None:
        """Blocks a request cached meanwhile were loaded for nothing; those of a prefetch a
        request already waited for are late; the others wait for a hit (or an eviction)."""
        pool, stats = self.pool, self.stats
        indexed = [
            key
            for block, key in zip(prefetch.blocks, prefetch.keys, strict=True)
            if pool.node_of_block(block.block_id) is not None
        ]
        stats.prefetch_wasted_blocks += len(prefetch.blocks) - len(indexed)
        if prefetch.waited:
            stats.prefetch_late_blocks += len(indexed)
            return
        unused = self._unused_prefetched
        for key in indexed:
            unused[key] = None
        # Each entry is a cached device block; entries an invalidation left behind age out.
        while len(unused) > pool.num_gpu_blocks:
            unused.popitem(last=False)
            stats.prefetch_wasted_blocks += 1

    def _discard(self, prefetch: _Prefetch) -> None:
        self.stats.failed_loads += 1
        self.stats.prefetch_wasted_blocks += len(prefetch.blocks)
        self.pool.free_blocks(prefetch.blocks)
        self.pool.free_blocks(prefetch.device_path)

    # --- reset ---------------------------------------------------------------------------

    def reset(self) -> bool:
        self.index.clear()
        return True

    def resident_bytes(self) -> int:
        """Bytes of KV the host holds now (O(1))."""
        return len(self.index) * self.block_bytes

    def capacity_bytes(self) -> int:
        return self.index.num_slots * self.block_bytes

    def state_sizes(self) -> dict[str, int]:
        """Entries of this tier's per-request and per-agent structures (O(1))."""
        return {
            "host_lookups": len(self._lookups),
            "host_demand_loads": len(self._demand),
            "host_prefetches": len(self._prefetches),
            "host_loading_blocks": len(self._loading),
            "host_agent_paths": len(self._agent_paths),
            "host_unused_prefetched": len(self._unused_prefetched),
        }

    def has_prefetches_in_flight(self) -> bool:
        return bool(self._prefetches)

    def loads_in_flight(self) -> dict[str, LoadJob]:
        """Demand and prefetch loads not yet reported done (for tests and introspection)."""
        jobs = {rid: job for rid, (job, _) in self._demand.items()}
        jobs.update({job_id: p.job for job_id, p in self._prefetches.items()})
        return jobs
