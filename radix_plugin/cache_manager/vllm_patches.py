"""The two scoped patches the plugin needs in vLLM 0.32.0; nothing else is patched.

1. ``vllm.v1.core.kv_cache_coordinator.BlockPool`` (a module-level name, the only place the
   GPU pool is built) is rebound to ``RadixBlockPool`` only while the plugin's scheduler runs
   ``Scheduler.__init__``, then restored.
2. ``FullAttentionManager.find_longest_cache_hit`` (vLLM 0.32.0,
   ``vllm/v1/core/single_type_kv_cache_manager.py``) answers from the radix tree when, and
   only when, the pool it is given is a ``RadixBlockPool`` and the lookup is the plain case
   (one group, no EAGLE drop, no context parallelism, no fine-grained hashes); every other
   call goes to vLLM's original code unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from typing import Any

VLLM_VERSION = "0.32.0"

_lookup_patched = False


@contextlib.contextmanager
def radix_block_pool(**pool_kwargs: Any) -> Iterator[None]:
    """Within the block, vLLM's coordinator builds ``RadixBlockPool(..., **pool_kwargs)``."""
    from vllm.v1.core import kv_cache_coordinator

    from radix_plugin.cache_manager.vllm_block_pool import RadixBlockPool

    original = kv_cache_coordinator.BlockPool
    kv_cache_coordinator.BlockPool = functools.partial(RadixBlockPool, **pool_kwargs)
    try:
        yield
    finally:
        kv_cache_coordinator.BlockPool = original


def install_lookup_patch() -> None:
    """Route plain longest-prefix lookups on a ``RadixBlockPool`` through the tree (idempotent)."""
    global _lookup_patched
    if _lookup_patched:
        return
    from vllm.v1.core.single_type_kv_cache_manager import FullAttentionManager

    from radix_plugin.cache_manager.vllm_block_pool import RadixBlockPool

    original = FullAttentionManager.find_longest_cache_hit.__func__  # type: ignore[attr-defined]
    signature = inspect.signature(original)

    def find_longest_cache_hit(cls, *args: Any, **kwargs: Any):
        bound = signature.bind(cls, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        pool, spec = a["block_pool"], a["kv_cache_spec"]
        plain = (
            cls is FullAttentionManager
            and isinstance(pool, RadixBlockPool)
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

    FullAttentionManager.find_longest_cache_hit = classmethod(find_longest_cache_hit)
    _lookup_patched = True
