"""The radix-tree prefix cache that replaces vLLM's block manager's eviction order.

Floors, one folder per vLLM process that runs the code:

- ``core/`` (pure: no vLLM, torch, xgrammar or Triton): the radix tree, eviction policies,
  waiting-queue orderings and their pluggy registry, request hints, the workflow step graph
  and learner, the host-tier slot index, pin statistics.
- ``engine_core/`` (EngineCore): ``RadixScheduler`` and its collaborators, ``RadixBlockPool``
  (vLLM's block pool with the tree as its free queue), KV events, the host tier's scheduler
  side.
- ``worker/`` (workers): the host tier's block copies.
- ``connector/`` (both): ``RadixHostTierConnector``, the KV connector vLLM builds in
  EngineCore and in every worker; each role loads its own side.

The names below resolve on first use; only the engine-side ones import vLLM.
"""

from radix_plugin.lazy_exports import lazy_exports

__all__ = lazy_exports(
    __name__,
    {
        "RadixTree": "radix_plugin.cache_manager.core.radix_tree",
        "RadixNode": "radix_plugin.cache_manager.core.radix_tree",
        "PinBudgetExceeded": "radix_plugin.cache_manager.core.errors",
        "EvictionPolicy": "radix_plugin.cache_manager.core.policies.base",
        "make_eviction_policy": "radix_plugin.cache_manager.core.registry",
        "make_ordering": "radix_plugin.cache_manager.core.registry",
        "eviction_policy_names": "radix_plugin.cache_manager.core.registry",
        "ordering_names": "radix_plugin.cache_manager.core.registry",
        "RequestHints": "radix_plugin.cache_manager.core.hints",
        "parse_hints": "radix_plugin.cache_manager.core.hints",
        "RadixScheduler": "radix_plugin.cache_manager.engine_core.scheduler",
        "RadixBlockPool": "radix_plugin.cache_manager.engine_core.block_pool",
        "RadixHostTierConnector": "radix_plugin.cache_manager.connector.connector",
    },
)
