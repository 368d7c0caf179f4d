"""Worker role of the host tier: saves before the forward pass, loads in the background.

Saves run in ``handle_preemptions``, which vLLM calls before every forward pass (V1 and
Model Runner V2), because an evicted block is handed to a new owner in the same step and the
forward pass overwrites it. Loads run on one background thread (on GPU inside a side stream
it synchronises), so a load overlaps the forward passes of the rest of the batch; the
request it serves waits in ``WAITING_FOR_REMOTE_KVS`` until ``get_finished`` reports it.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from vllm.v1.kv_cache_interface import KVCacheConfig

from radix_plugin.host_tier.metadata import (
    HostTierMetadata,
    HostTierWorkerMetadata,
    LoadJob,
)
from radix_plugin.worker.host_store import HostStore, page_views

logger = logging.getLogger(__name__)


class HostTierWorker:
    def __init__(self, kv_cache_config: KVCacheConfig, num_slots: int) -> None:
        self._kv_cache_config = kv_cache_config
        self._num_slots = num_slots
        self._store: HostStore | None = None
        self._stream: torch.cuda.Stream | None = None  # loads' side stream, on GPU
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="radix-host-load")
        self._jobs: dict[str, tuple[LoadJob, Future[None]]] = {}
        self._load_errors: set[int] = set()

    def register_kv_caches(self, kv_caches: Mapping[str, torch.Tensor]) -> None:
        pages = page_views(kv_caches, self._kv_cache_config)
        self._store = HostStore(pages, self._num_slots)
        if self._store.device.type == "cuda":
            self._stream = torch.cuda.Stream(device=self._store.device)

    @property
    def store(self) -> HostStore:
        if self._store is None:
            raise RuntimeError("the host tier got no KV caches (register_kv_caches not called)")
        return self._store

    def save(self, meta: HostTierMetadata) -> None:
        if meta.saves:
            block_ids, slots = zip(*meta.saves, strict=True)
            self.store.save(block_ids, slots)

    def start_loads(self, meta: HostTierMetadata) -> None:
        for job_id, job in meta.loads.items():
            self._jobs[job_id] = (job, self._executor.submit(self._run_load, job))

    def _run_load(self, job: LoadJob) -> None:
        stream = self._stream
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            self.store.load(job.slots, job.block_ids)
        if stream is not None:
            stream.synchronize()

    def take_finished(self) -> tuple[set[str], HostTierWorkerMetadata | None]:
        """Finished demand loads (request ids) and finished or failed prefetches."""
        recving: set[str] = set()
        prefetched: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        for job_id, (job, future) in list(self._jobs.items()):
            if not future.done():
                continue
            del self._jobs[job_id]
            error = future.exception()
            if error is not None:
                logger.error("radix host tier: load %s failed: %s", job_id, error)
            if job.prefetch:
                (failed if error is not None else prefetched)[job_id] += 1
            else:
                if error is not None:
                    self._load_errors.update(job.block_ids)
                recving.add(job_id)
        meta = HostTierWorkerMetadata(prefetched, failed) if prefetched or failed else None
        return recving, meta

    def take_load_errors(self) -> set[int]:
        errors, self._load_errors = self._load_errors, set()
        return errors

    def shutdown(self) -> None:
        """Let loads in flight finish (their blocks are owned until reported), then stop."""
        self._executor.shutdown(wait=True)
