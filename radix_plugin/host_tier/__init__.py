"""KVFlow host tier: evicted KV blocks kept in host memory, loaded back and prefetched.

``kv_connector_module_path`` for ``--kv-transfer-config``; see ``connector.py``.
"""

from radix_plugin.host_tier.connector import RadixHostTierConnector

__all__ = ["RadixHostTierConnector"]
