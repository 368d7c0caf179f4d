"""The names the design card promises resolve from a fresh install: the three components'
public names, the scheduler class users name, and every entry point in ``pyproject.toml``."""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

import pytest
import tomllib

import radix_plugin

COMPONENTS = ("radix_plugin.cache_manager", "radix_plugin.logits", "radix_plugin.kernels")


def _public(package: str) -> list[tuple[str, str]]:
    module = importlib.import_module(package)
    return [(package, name) for name in module.__all__]


@pytest.mark.parametrize(
    ("package", "name"), [pair for package in COMPONENTS for pair in _public(package)]
)
def test_component_name_is_the_object_its_module_defines(package: str, name: str) -> None:
    obj = getattr(importlib.import_module(package), name)
    defining = importlib.import_module(importlib.import_module(package)._lazy_exports[name])
    assert obj is getattr(defining, name)
    assert not isinstance(obj, type(importlib)), f"{package}.{name} is a module"


def test_card_imports() -> None:
    from radix_plugin.cache_manager import RadixScheduler, RadixTree, make_eviction_policy
    from radix_plugin.kernels import decode_attention, prefix_attention
    from radix_plugin.logits import RadixGrammarLogitsProcessor, build_grammar

    assert callable(prefix_attention) and callable(decode_attention)
    assert RadixTree(block_size=16).stats().cached_blocks == 0
    assert make_eviction_policy("lru").name == "lru"
    assert radix_plugin.RadixScheduler is RadixScheduler
    assert RadixGrammarLogitsProcessor.__module__ == "radix_plugin.logits.worker.processor"
    assert callable(build_grammar)


def _declared_entry_points() -> list[tuple[str, str, str]]:
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    return [
        (group, name, target)
        for group, entries in pyproject["project"]["entry-points"].items()
        for name, target in entries.items()
    ]


@pytest.mark.parametrize(("group", "name", "target"), _declared_entry_points())
def test_entry_point_is_installed_and_loads(group: str, name: str, target: str) -> None:
    installed = {ep.name: ep for ep in importlib.metadata.entry_points(group=group)}
    assert name in installed, f"{group}:{name} is not installed (pip install -e . again)"
    assert installed[name].value == target
    assert installed[name].load() is not None
