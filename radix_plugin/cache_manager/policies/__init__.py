"""Eviction policies for the radix tree, discoverable through pluggy hooks."""

from radix_plugin.cache_manager.policies.base import EvictionPolicy
from radix_plugin.cache_manager.policies.registry import (
    UnknownPolicyError,
    eviction_policy_names,
    make_eviction_policy,
)

__all__ = [
    "EvictionPolicy",
    "UnknownPolicyError",
    "eviction_policy_names",
    "make_eviction_policy",
]
