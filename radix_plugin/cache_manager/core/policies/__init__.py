"""Eviction policies for the radix tree (built-ins; more through ``core.hookspecs``)."""

from radix_plugin.cache_manager.core.policies.base import EvictionPolicy

__all__ = ["EvictionPolicy"]
