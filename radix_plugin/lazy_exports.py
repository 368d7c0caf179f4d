"""Public names of a package resolved on first use, so importing it stays cheap.

A component's ``__init__`` names what users import (``from radix_plugin.kernels import
prefix_attention``) without importing vLLM, torch or Triton until the name is used: most
processes that import ``radix_plugin`` never launch a kernel or build a scheduler.

A public name may equal the submodule that defines it (``kernels.prefix_attention``).
Importing a submodule binds it on its package under that name, which would shadow the
function; the package's module class declines that binding (the submodule stays importable
by its dotted name through ``sys.modules``). Pure: no vLLM, torch, xgrammar or Triton.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping
from typing import Any


class _LazyPackage(types.ModuleType):
    """A package whose public names are never replaced by same-named submodules."""

    _lazy_exports: Mapping[str, str]

    def __getattr__(self, name: str) -> Any:
        module_name = self.__dict__.get("_lazy_exports", {}).get(name)
        if module_name is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module_name), name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._lazy_exports))

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__.get("_lazy_exports", {}) and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


def lazy_exports(package: str, exports: Mapping[str, str]) -> list[str]:
    """Make ``package`` resolve each ``name -> defining module`` of ``exports`` on first
    access; returns the names, for the package's ``__all__``."""
    module = sys.modules[package]
    module.__class__ = _LazyPackage
    module._lazy_exports = dict(exports)
    return sorted(exports)
