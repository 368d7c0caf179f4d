"""Worker role of the host tier: saves before the forward pass, loads in the background.

Saves run in ``handle_preemptions``, which vLLM calls before every forward pass (V1 and
Model Runner V2), because an evicted block is handed to a new owner in the same step and the
forward pass overwrites it; they are enqueued on the compute stream ahead of that forward.
Loads run on one background thread and, on GPU, on a side stream, so a load overlaps the
forward passes of the rest of the batch; the request it serves waits in
``WAITING_FOR_REMOTE_KVS`` until ``get_finished`` reports it.

Stream order on GPU (:class:`CudaStreams`), which makes a load safe under async scheduling:

* the side stream waits on an event recorded on the compute stream when the load starts, so
  a load never writes a block that work already enqueued there (the previous forward, this
  step's saves) still reads or writes;
* the load records an event on the side stream; it is reported finished only once that
  event has completed, and the compute stream waits on it first, so no forward reads the
  blocks before the copy landed.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Protocol

import torch
from vllm.v1.kv_cache_interface import KVCacheConfig

from radix_plugin.cache_manager.connector.metadata import (
    HostTierMetadata,
    HostTierWorkerMetadata,
    LoadJob,
)
from radix_plugin.cache_manager.worker.host_store import HostStore, page_views

logger = logging.getLogger(__name__)


class StreamEvent(Protocol):
    def query(self) -> bool: ...


class Streams(Protocol):
    """The stream operations the host tier orders its copies with; isolated so the ordering
    logic runs (and is tested) without CUDA."""

    def record_on_compute(self) -> StreamEvent:
        """An event after everything enqueued so far on the calling thread's compute stream."""
        ...

    def on_side(self) -> AbstractContextManager[object]:
        """Make the side stream current for the copies enqueued inside."""
        ...

    def side_waits(self, event: StreamEvent) -> None: ...

    def record_on_side(self) -> StreamEvent: ...

    def compute_waits(self, event: StreamEvent) -> None: ...


class _Done:
    """An event that has always completed: copies on the CPU are synchronous."""

    def query(self) -> bool:
        return True


class HostStreams:
    """No streams (KV cache on the CPU): every copy is complete when it returns."""

    def record_on_compute(self) -> StreamEvent:
        return _Done()

    def on_side(self) -> AbstractContextManager[object]:
        return contextlib.nullcontext()

    def side_waits(self, event: StreamEvent) -> None:
        """Nothing runs concurrently on the CPU."""

    def record_on_side(self) -> StreamEvent:
        return _Done()

    def compute_waits(self, event: StreamEvent) -> None:
        """Nothing runs concurrently on the CPU."""


class CudaStreams:
    """The compute stream (current on the calling thread) and one side stream for loads."""

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self._side = torch.cuda.Stream(device=device)

    def record_on_compute(self) -> StreamEvent:
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self._device))
        return event

    def on_side(self) -> AbstractContextManager[object]:
        return torch.cuda.stream(self._side)

    def side_waits(self, event: StreamEvent) -> None:
        self._side.wait_event(event)  # type: ignore[arg-type]

    def record_on_side(self) -> StreamEvent:
        event = torch.cuda.Event()
        event.record(self._side)
        return event

    def compute_waits(self, event: StreamEvent) -> None:
        torch.cuda.current_stream(self._device).wait_event(event)  # type: ignore[arg-type]


class HostTierWorker:
    def __init__(
        self, kv_cache_config: KVCacheConfig, num_slots: int, streams: Streams | None = None
    ) -> None:
        """``streams`` defaults to what the registered KV caches' device needs."""
        self._kv_cache_config = kv_cache_config
        self._num_slots = num_slots
        self._store: HostStore | None = None
        self._streams = streams
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="radix-host-load")
        self._jobs: dict[str, tuple[LoadJob, Future[StreamEvent]]] = {}
        self._load_errors: set[int] = set()

    def register_kv_caches(self, kv_caches: Mapping[str, torch.Tensor]) -> None:
        pages = page_views(kv_caches, self._kv_cache_config)
        self._store = HostStore(pages, self._num_slots)
        if self._streams is None:
            on_gpu = self._store.device.type == "cuda"
            self._streams = CudaStreams(self._store.device) if on_gpu else HostStreams()

    @property
    def store(self) -> HostStore:
        if self._store is None:
            raise RuntimeError("the host tier got no KV caches (register_kv_caches not called)")
        return self._store

    @property
    def streams(self) -> Streams:
        if self._streams is None:
            raise RuntimeError("the host tier got no KV caches (register_kv_caches not called)")
        return self._streams

    def save(self, meta: HostTierMetadata) -> None:
        if meta.saves:
            block_ids, slots = zip(*meta.saves, strict=True)
            self.store.save(block_ids, slots)

    def start_loads(self, meta: HostTierMetadata) -> None:
        for job_id, job in meta.loads.items():
            # Recorded here, on the thread that drives the compute stream, before the load
            # is handed to the background thread.
            ready = self.streams.record_on_compute()
            self._jobs[job_id] = (job, self._executor.submit(self._run_load, job, ready))

    def _run_load(self, job: LoadJob, ready: StreamEvent) -> StreamEvent:
        """Enqueue the copies after ``ready``; returns the event that marks them done."""
        streams = self.streams
        with streams.on_side():
            streams.side_waits(ready)
            self.store.load(job.slots, job.block_ids)
            return streams.record_on_side()

    def take_finished(self) -> tuple[set[str], HostTierWorkerMetadata | None]:
        """Finished demand loads (request ids) and finished or failed prefetches."""
        recving: set[str] = set()
        prefetched: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        for job_id, (job, future) in list(self._jobs.items()):
            if not future.done():
                continue
            error = future.exception()
            if error is None:
                copied = future.result()
                if not copied.query():
                    continue  # enqueued, still copying on the side stream
                self.streams.compute_waits(copied)
            del self._jobs[job_id]
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
