"""Every use of a vLLM private name or patch, in one place, labelled with the version read.

The plugin is written against vLLM 0.32.0. Public seams (``--scheduler-cls``, entry points,
the KV-connector and logits-processor interfaces, ``BlockPool``'s public methods) are used
where they are; what vLLM does not expose is reached only through this module:

- ``kv_cache_coordinator.BlockPool`` (a module-level name, the only place the pool is
  built) is rebound to ``RadixBlockPool`` while the plugin's scheduler runs
  ``Scheduler.__init__``, then restored (``radix_block_pool``).
- ``FullAttentionManager.find_longest_cache_hit`` answers from the radix tree for plain
  lookups on a ``RadixBlockPool`` and calls vLLM's code for every other case
  (``install_lookup_patch``; process-wide, installed once).
- ``BlockPool._remove_cached_block_hashes`` / ``_insert_block_hash`` and the duck-typed
  ``free_block_queue`` (``BlockPoolSeam``).
- ``Scheduler._free_request``, the one place every finished or aborted request passes
  (``SchedulerSeam.on_request_freed``).
- ``KVConnectorBase_V1._get_connector_metadata`` (the step's metadata in the worker).
- ``StructuredOutputsParams._backend``, ``Request.status`` and
  ``StructuredOutputManager._get_constraint_bounds`` (scheduler-side grammars for
  jump-forward).

``check_vllm_version`` refuses to patch a vLLM this module was not read from, unless the
user opts in with ``RADIX_PLUGIN_ALLOW_UNTESTED_VLLM=1`` (then it warns).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from vllm.v1.core.block_pool import BlockPool

if TYPE_CHECKING:
    from vllm.distributed.kv_transfer.kv_connector.v1.base import (
        KVConnectorBase_V1,
        KVConnectorMetadata,
    )
    from vllm.sampling_params import StructuredOutputsParams
    from vllm.v1.core.kv_cache_utils import KVCacheBlock
    from vllm.v1.request import Request
    from vllm.v1.structured_output import StructuredOutputManager

logger = logging.getLogger(__name__)

SUPPORTED_VLLM_VERSIONS = ("0.32.0",)
"""vLLM releases whose source every patch below was read from and tested against."""
ALLOW_UNTESTED_ENV = "RADIX_PLUGIN_ALLOW_UNTESTED_VLLM"

FREE_QUEUE_METHODS = (
    "popleft",
    "popleft_n",
    "remove",
    "append",
    "append_n",
    "prepend_n",
    "get_all_free_blocks",
    "iter_blocks_after",
)
"""What vLLM 0.32.0 calls on ``BlockPool.free_block_queue`` (``FreeKVCacheBlockQueue``),
besides reading ``num_free_blocks``."""


class UnsupportedVllmVersion(RuntimeError):
    """The installed vLLM is not one the plugin's patches were written for."""


def _release(version: str) -> str:
    """``0.32.0+cpu`` -> ``0.32.0``: local build tags do not change the Python source."""
    return version.split("+", 1)[0]


def check_vllm_version(version: str | None = None) -> None:
    """Refuse (or, with the opt-in, warn about) a vLLM version the patches were not read from."""
    if version is None:
        import vllm

        version = vllm.__version__
    if _release(version) in SUPPORTED_VLLM_VERSIONS:
        return
    message = (
        f"radix_plugin supports vLLM {', '.join(SUPPORTED_VLLM_VERSIONS)}, but vLLM {version} "
        "is installed: its scheduler and block-pool patches were written against those "
        f"versions' private code. Install a supported vLLM, or set {ALLOW_UNTESTED_ENV}=1 to "
        "try anyway"
    )
    if os.environ.get(ALLOW_UNTESTED_ENV) == "1":
        logger.warning("%s (%s=1: continuing)", message, ALLOW_UNTESTED_ENV)
        return
    raise UnsupportedVllmVersion(message)


# --- the block pool (vLLM 0.32.0: v1/core/kv_cache_coordinator.py, block_pool.py) --------


@contextlib.contextmanager
def radix_block_pool(pool_cls: type, **pool_kwargs: Any) -> Iterator[None]:
    """Within the block, vLLM's coordinator builds ``pool_cls(..., **pool_kwargs)``."""
    from vllm.v1.core import kv_cache_coordinator

    original = kv_cache_coordinator.BlockPool
    kv_cache_coordinator.BlockPool = functools.partial(pool_cls, **pool_kwargs)
    try:
        yield
    finally:
        kv_cache_coordinator.BlockPool = original


class BlockPoolSeam(BlockPool):
    """vLLM 0.32.0's ``BlockPool`` with its private hooks given names the plugin owns.

    Subclasses override ``on_cached_hash_removed`` (called whenever vLLM drops a block's
    hash: eviction for reuse, ``evict_blocks`` invalidation) and install their own free
    queue with ``replace_free_queue``.
    """

    def on_cached_hash_removed(self, block: KVCacheBlock) -> None:
        """vLLM is about to forget ``block``'s hash; default: nothing to do."""

    def _remove_cached_block_hashes(self, block: KVCacheBlock) -> list[Any]:
        self.on_cached_hash_removed(block)
        return super()._remove_cached_block_hashes(block)

    def insert_cached_hash(self, block_hash: Any, block: KVCacheBlock, num_tokens: int) -> None:
        """Register ``block`` under ``block_hash`` (with group id) in vLLM's hash map."""
        self._insert_block_hash(block_hash, block, num_tokens=num_tokens)

    def replace_free_queue(self, queue: Any) -> None:
        """Install a replacement for ``FreeKVCacheBlockQueue`` (checked against 0.32.0's use)."""
        missing = [m for m in FREE_QUEUE_METHODS if not callable(getattr(queue, m, None))]
        if missing or not hasattr(queue, "num_free_blocks"):
            raise TypeError(f"{type(queue).__name__} lacks free-queue methods {missing}")
        self.free_block_queue = queue


class SchedulerSeam:
    """Mixin for vLLM 0.32.0's ``Scheduler``: ``on_request_freed`` after vLLM's private
    ``_free_request``, which every finished, aborted or stopped request goes through."""

    def on_request_freed(self, request: Request) -> None:
        """``request`` left the scheduler for good; default: nothing to do."""

    def _free_request(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        result = super()._free_request(request, *args, **kwargs)  # type: ignore[misc]
        self.on_request_freed(request)
        return result


def install_lookup_patch(pool_cls: type) -> None:
    """Route plain longest-prefix lookups on a ``pool_cls`` through its tree (idempotent).

    vLLM 0.32.0, ``v1/core/single_type_kv_cache_manager.py``: the classmethod
    ``FullAttentionManager.find_longest_cache_hit`` walks the hash map block by block. For
    one group, no EAGLE drop, no context parallelism and pool-sized blocks, the pool's
    ``longest_cached_prefix`` answers instead; every other call goes to vLLM's code.
    """
    from vllm.v1.core.single_type_kv_cache_manager import FullAttentionManager

    current = FullAttentionManager.find_longest_cache_hit.__func__  # type: ignore[attr-defined]
    if getattr(current, "_radix_pool_cls", None) is pool_cls:
        return
    original = getattr(current, "_radix_original", current)
    signature = inspect.signature(original)

    def find_longest_cache_hit(cls, *args: Any, **kwargs: Any):
        bound = signature.bind(cls, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        pool, spec = a["block_pool"], a["kv_cache_spec"]
        plain = (
            cls is FullAttentionManager
            and isinstance(pool, pool_cls)
            and len(a["kv_cache_group_ids"]) == 1
            and not a["drop_eagle_block"]
            and a["dcp_world_size"] == 1
            and a["pcp_world_size"] == 1
            and a["alignment_tokens"] == spec.block_size == pool.hash_block_size
        )
        if not plain:
            return original(cls, *args, **kwargs)
        blocks = pool.longest_cached_prefix(
            a["block_hashes"], a["max_length"] // spec.block_size, a["kv_cache_group_ids"][0]
        )
        return (blocks,), len(blocks) * spec.block_size

    find_longest_cache_hit._radix_original = original  # type: ignore[attr-defined]
    find_longest_cache_hit._radix_pool_cls = pool_cls  # type: ignore[attr-defined]
    FullAttentionManager.find_longest_cache_hit = classmethod(find_longest_cache_hit)


def step_connector_metadata(connector: KVConnectorBase_V1) -> KVConnectorMetadata:
    """The metadata vLLM bound to a worker-side connector for this step (0.32.0:
    ``KVConnectorBase_V1._get_connector_metadata``, the base class's accessor)."""
    return connector._get_connector_metadata()


# --- scheduler-side grammars (vLLM 0.32.0: v1/request.py, v1/structured_output/) --------


def mark_xgrammar_backend(params: StructuredOutputsParams) -> None:
    """Set the backend name vLLM's frontend would have set (``_backend``) on params built
    in the engine core, so the manager compiles them with xgrammar."""
    params._backend = "xgrammar"


def hold_until_grammar_compiled(request: Request) -> None:
    """What ``Request.__init__`` does for structured requests: a waiting request waits for
    its grammar (``Request.status`` written by the scheduler)."""
    from vllm.v1.request import RequestStatus

    if request.status == RequestStatus.WAITING:
        request.status = RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR


def grammar_constrains_next_token(request: Request, manager: StructuredOutputManager) -> bool:
    """True once the grammar constrains the next token (a reasoning section, if any, ended),
    from ``StructuredOutputManager._get_constraint_bounds``."""
    return manager._get_constraint_bounds(request, ()).constraint_start == 0


# --- one flag for jump-forward (vLLM 0.32.0: engine/arg_utils.py) --------------------------


def install_default_speculative_config(default: Any) -> bool:
    """Let ``default(engine_args)`` supply a speculative config the user did not write.

    vLLM 0.32.0 runs drafts only when ``SpeculativeConfig`` exists, and builds it in
    ``EngineArgs.create_speculative_config`` from ``engine_args.speculative_config`` (a dict)
    while ``create_engine_config`` assembles ``VllmConfig`` in the user's process. The wrapper
    fills that dict from ``default`` (which returns a dict or None) only when the user gave
    no speculative settings at all; everything else is vLLM's code. Installed once, only on a
    supported vLLM; returns whether it is installed.
    """
    from vllm import __version__
    from vllm.engine.arg_utils import EngineArgs

    if _release(__version__) not in SUPPORTED_VLLM_VERSIONS:
        logger.info("radix_plugin: vLLM %s: jump-forward needs --speculative-config", __version__)
        return False
    original = EngineArgs.create_speculative_config
    if getattr(original, "_radix_default", None) is not None:
        return True

    @functools.wraps(original)
    def create_speculative_config(self: EngineArgs, *args: Any, **kwargs: Any) -> Any:
        given = (self.speculative_config, self.spec_method, self.spec_model, self.spec_tokens)
        if all(value is None for value in given):
            supplied = default(self)
            if supplied is not None:
                logger.info(
                    "radix_plugin: jump-forward drafts on (speculative config %s)", supplied
                )
                self.speculative_config = dict(supplied)
        return original(self, *args, **kwargs)

    create_speculative_config._radix_default = default  # type: ignore[attr-defined]
    EngineArgs.create_speculative_config = create_speculative_config  # type: ignore[method-assign]
    return True
