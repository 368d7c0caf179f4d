"""Eviction policies for the radix tree (built-ins; more through ``core.hookspecs``)."""

from radix_plugin.core.policies.base import EvictionPolicy

__all__ = ["EvictionPolicy"]
