"""radix-plugin: SGLang-style radix prefix caching, cache-aware scheduling, compressed-FSM
structured decoding and KVFlow-style workflow-aware eviction for vLLM.

Importing this package is cheap and never imports vLLM; the engine-side classes are loaded
lazily so that `--scheduler-cls radix_plugin.RadixScheduler` resolves without pulling vLLM into
processes that do not need it.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "RadixScheduler": "radix_plugin.engine_core.scheduler",
    "RadixAsyncScheduler": "radix_plugin.engine_core.scheduler",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'radix_plugin' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
