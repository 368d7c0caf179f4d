"""Every public name of `radix_plugin.kernels` is the function its docstring describes, not
the submodule of the same name, however the submodules were imported before."""

from __future__ import annotations

import importlib
import inspect

import pytest

import radix_plugin.kernels as kernels
import radix_plugin.kernels.decode_attention
import radix_plugin.kernels.prefix_attention  # binds nothing on the package (see its doc)

# name -> (defining module, a phrase its docstring must contain)
PUBLIC = {
    "prefix_attention": ("radix_plugin.kernels.prefix_attention", "attention"),
    "decode_attention": (
        "radix_plugin.kernels.decode_attention",
        "query length is exactly 1",
    ),
    "write_kv_cache": ("radix_plugin.kernels.kv_cache_write", "cache"),
    "apply_token_bitmask_inplace": ("radix_plugin.kernels.token_bitmask", "mask"),
    "prefix_attention_ref": ("radix_plugin.kernels.reference", "attention"),
    "write_kv_cache_ref": ("radix_plugin.kernels.reference", "cache"),
    "apply_token_bitmask_ref": ("radix_plugin.kernels.reference", "mask"),
}


def test_all_lists_exactly_the_public_names() -> None:
    assert sorted(kernels.__all__) == sorted(PUBLIC)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_name_is_the_documented_function(name: str) -> None:
    module_name, phrase = PUBLIC[name]
    obj = getattr(kernels, name)
    assert inspect.isfunction(obj), f"{name} is {obj!r}"
    assert obj is getattr(importlib.import_module(module_name), name)
    assert obj.__module__ == module_name
    assert phrase in (obj.__doc__ or "").lower(), obj.__doc__


def test_from_import_gives_the_functions() -> None:
    from radix_plugin.kernels import decode_attention, prefix_attention

    assert inspect.isfunction(prefix_attention), prefix_attention
    assert inspect.isfunction(decode_attention), decode_attention


def test_submodules_stay_importable_by_dotted_name() -> None:
    module = importlib.import_module("radix_plugin.kernels.prefix_attention")
    assert inspect.ismodule(module)
    assert inspect.isfunction(module.prefix_attention)
    assert radix_plugin.kernels.decode_attention is kernels.decode_attention
    assert inspect.isfunction(radix_plugin.kernels.decode_attention)


def test_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_kernel"):
        _ = kernels.no_such_kernel
