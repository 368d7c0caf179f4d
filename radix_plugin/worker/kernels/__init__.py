"""Triton kernels of the plugin: paged prefix/extend attention with a split-KV decode path,
the KV-cache slot write, and the token-bitmask apply used by the compressed FSM.

Each kernel has a plain-torch reference in `radix_plugin.worker.kernels.reference`. Names are loaded
lazily because importing Triton and compiling decorators is not free and most processes that
import `radix_plugin` never launch a kernel. On CPU the kernels only run under the Triton
interpreter, which must be enabled (TRITON_INTERPRET=1) before these modules are imported.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "prefix_attention": "radix_plugin.worker.kernels.prefix_attention",
    "decode_attention": "radix_plugin.worker.kernels.decode_attention",
    "write_kv_cache": "radix_plugin.worker.kernels.kv_cache_write",
    "apply_token_bitmask_inplace": "radix_plugin.worker.kernels.token_bitmask",
    "prefix_attention_ref": "radix_plugin.worker.kernels.reference",
    "write_kv_cache_ref": "radix_plugin.worker.kernels.reference",
    "apply_token_bitmask_ref": "radix_plugin.worker.kernels.reference",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'radix_plugin.worker.kernels' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)
