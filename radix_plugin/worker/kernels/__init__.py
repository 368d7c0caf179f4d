"""Triton kernels of the plugin: paged prefix/extend attention with a split-KV decode path,
the KV-cache slot write, and the token-bitmask apply used by the compressed FSM.

Each kernel has a plain-torch reference in `radix_plugin.worker.kernels.reference`. Names are loaded
lazily because importing Triton and compiling decorators is not free and most processes that
import `radix_plugin` never launch a kernel. On CPU the kernels only run under the Triton
interpreter, which must be enabled (TRITON_INTERPRET=1) before these modules are imported.

`prefix_attention` and `decode_attention` are also the names of the submodules that define
them; importing a submodule binds it on its package under that name, which would shadow the
function. The package's module class therefore declines that binding (the submodules stay
importable by their dotted names through `sys.modules`).
"""

from __future__ import annotations

import importlib
import sys
import types
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


class _KernelsPackage(types.ModuleType):
    """This package's module type: a public function is never replaced by its submodule."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _KernelsPackage
