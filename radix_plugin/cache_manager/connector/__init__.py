"""KVFlow host tier: evicted KV blocks kept in host memory, loaded back and prefetched.

``kv_connector_module_path`` for ``--kv-transfer-config``; see ``connector.py``. vLLM builds
the connector in EngineCore (scheduler role) and in every worker (worker role); each role
imports its own side lazily, and ``metadata.py`` is the per-step message between them.
"""

from radix_plugin.cache_manager.connector.connector import RadixHostTierConnector

__all__ = ["RadixHostTierConnector"]
