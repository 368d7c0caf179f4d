"""The eviction-policy registry: names resolve through the real pluggy plugin manager.

Users pick policies by name in config, so a typo must fail loudly with the valid choices, an
engine must never be handed the offline-only Belady policy, and a third-party package's
``@hookimpl`` must be found exactly like the built-ins.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from radix_plugin.cache_manager.core.hookspecs import hookimpl
from radix_plugin.cache_manager.core.policies import EvictionPolicy
from radix_plugin.cache_manager.core.policies.builtin import LRUPolicy, PinnedPolicy
from radix_plugin.cache_manager.core.radix_tree import RadixNode, RadixTree
from radix_plugin.cache_manager.core.registry import (
    UnknownPolicyError,
    eviction_policy_names,
    make_eviction_policy,
    plugin_manager,
)

CORE = {"adaptive", "belady", "lfu", "lru", "pinned", "priority"}
"""Policies the tree's documentation promises; the project may register more."""
REGISTERED = eviction_policy_names()
"""Everything registered before any test plugin: the baseline the fixture restores."""


class NewestFirstPolicy(EvictionPolicy):
    """A third-party policy: evicts the most recently used leaf first (MRU)."""

    name = "test-mru"
    description = "most recently used first (test plugin)"

    def __init__(self, *, scale: int = 1) -> None:
        super().__init__()
        self.scale = scale

    def key(self, node: RadixNode) -> Any:
        return -self.scale * node.last_access


class ShadowLRUPolicy(LRUPolicy):
    """A different class claiming the built-in name ``lru``."""

    name = "lru"


class NamelessPolicy(EvictionPolicy):
    def key(self, node: RadixNode) -> Any:
        return 0


class _Plugin:
    """A plugin object whose hook returns ``classes`` (what an entry-point module does)."""

    def __init__(self, classes: list[type]) -> None:
        self.classes = classes

    @hookimpl
    def radix_eviction_policies(self) -> list[type]:
        return self.classes


@pytest.fixture
def register() -> Iterator[Any]:
    """Register plugins on the process-wide manager for one test, then take them off again."""
    pm = plugin_manager()
    names: list[str] = []

    def _register(*classes: type) -> None:
        name = f"test-plugin-{len(names)}"
        pm.register(_Plugin(list(classes)), name=name)
        names.append(name)

    yield _register
    for name in names:
        pm.unregister(name=name)
    assert eviction_policy_names() == REGISTERED, "a test plugin leaked into the registry"


def test_builtin_names() -> None:
    assert set(REGISTERED) >= CORE
    assert sorted(REGISTERED) == REGISTERED
    online = eviction_policy_names(include_offline=False)
    assert "belady" not in online
    assert set(online) == set(REGISTERED) - {"belady"}


@pytest.mark.parametrize("name", REGISTERED)
def test_every_builtin_is_built_by_name(name: str) -> None:
    policy = make_eviction_policy(name)
    assert isinstance(policy, EvictionPolicy)
    assert policy.name == name
    assert make_eviction_policy(name) is not policy  # a fresh instance per tree


def test_unknown_policy_error_lists_the_valid_names() -> None:
    with pytest.raises(UnknownPolicyError) as info:
        make_eviction_policy("lruu")
    msg = str(info.value)
    assert "unknown eviction policy 'lruu'" in msg
    assert msg.endswith(f"valid choices: {', '.join(REGISTERED)}")
    assert isinstance(info.value, ValueError)  # config layers catch ValueError


def test_unknown_option_error_lists_the_valid_options() -> None:
    with pytest.raises(UnknownPolicyError) as info:
        make_eviction_policy("pinned", min_hit=3, budget=5)
    msg = str(info.value)
    assert "unknown option(s) 'budget', 'min_hit' for eviction policy 'pinned'" in msg
    assert "valid options: min_hits, max_pinned_blocks" in msg


def test_unknown_option_for_a_policy_without_options() -> None:
    with pytest.raises(UnknownPolicyError, match=r"valid options: \(none\)"):
        make_eviction_policy("lru", min_hits=2)


def test_options_reach_the_policy_and_its_own_validation_runs() -> None:
    policy = make_eviction_policy("pinned", min_hits=5, max_pinned_blocks=7)
    assert isinstance(policy, PinnedPolicy)
    assert (policy.min_hits, policy.max_pinned_blocks) == (5, 7)
    with pytest.raises(ValueError, match="min_hits must be >= 1"):
        make_eviction_policy("pinned", min_hits=0)


def test_online_refuses_belady_and_does_not_offer_it() -> None:
    with pytest.raises(UnknownPolicyError) as info:
        make_eviction_policy("belady", online=True)
    msg = str(info.value)
    assert "unknown eviction policy 'belady'" in msg
    choices = msg.split("valid choices: ")[1].split(", ")
    assert "belady" not in choices
    assert choices == eviction_policy_names(include_offline=False)
    assert make_eviction_policy("belady").name == "belady"  # offline (simulator) is fine
    assert make_eviction_policy("lru", online=True).name == "lru"


def test_third_party_policy_is_found_by_name_and_drives_eviction(register: Any) -> None:
    assert "test-mru" not in eviction_policy_names()
    register(NewestFirstPolicy)
    assert eviction_policy_names() == sorted([*REGISTERED, "test-mru"])
    assert "test-mru" in eviction_policy_names(include_offline=False)
    policy = make_eviction_policy("test-mru", online=True, scale=2)
    assert isinstance(policy, NewestFirstPolicy) and policy.scale == 2
    tree = RadixTree(1, policy, token_ids=True)
    tree.insert([1], [10])
    tree.insert([2], [20])
    tree.insert([3], [30])
    assert tree.evict(3) == [30, 20, 10]
    with pytest.raises(UnknownPolicyError, match="valid options: scale"):
        make_eviction_policy("test-mru", bogus=1)


def test_duplicate_policy_names_are_an_error(register: Any) -> None:
    register(ShadowLRUPolicy)
    with pytest.raises(ValueError, match="two eviction policies are named 'lru'"):
        make_eviction_policy("lru")
    with pytest.raises(ValueError, match="two eviction policies are named 'lru'"):
        eviction_policy_names()


def test_the_same_class_from_two_plugins_is_not_a_duplicate(register: Any) -> None:
    register(NewestFirstPolicy)
    register(NewestFirstPolicy)
    assert eviction_policy_names().count("test-mru") == 1
    assert isinstance(make_eviction_policy("test-mru"), NewestFirstPolicy)


def test_a_policy_without_a_name_is_rejected(register: Any) -> None:
    register(NamelessPolicy)
    with pytest.raises(TypeError, match="has no 'name'"):
        eviction_policy_names()
