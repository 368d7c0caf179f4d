"""radix-plugin: SGLang-style radix prefix caching, cache-aware scheduling, compressed-FSM
structured decoding and KVFlow-style workflow-aware eviction for vLLM.

Three components, as the design card names them: ``cache_manager`` (the radix-tree prefix
cache and its scheduler), ``logits`` (compressed-FSM structured decoding) and ``kernels``
(Triton prefix-attention kernels). Importing this package is cheap and never imports vLLM:
``--scheduler-cls radix_plugin.RadixScheduler`` resolves the scheduler on first use.
"""

from radix_plugin.lazy_exports import lazy_exports

__version__ = "0.1.0"

__all__ = lazy_exports(
    __name__,
    {
        "RadixScheduler": "radix_plugin.cache_manager.engine_core.scheduler",
        "RadixAsyncScheduler": "radix_plugin.cache_manager.engine_core.scheduler",
    },
)
