"""VLLM_PLUGINS must name every entry point of ours in the groups it filters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from radix_plugin.plugin_allowlist import (
    FILTERED_ENTRY_POINTS,
    GENERAL_PLUGIN,
    RECOMMENDED_VALUE,
    PluginAllowlistError,
    check_allowlist,
)
from radix_plugin.testing.server import SGLANG_VLLM_PLUGINS

# vLLM 0.32 filters these groups by VLLM_PLUGINS (vllm/plugins/__init__.py); it loads
# vllm.logits_processors regardless.
FILTERED_GROUPS = ("vllm.general_plugins", "vllm.stat_logger_plugins", "vllm.endpoint_plugins")


def test_the_names_are_the_entry_points_pyproject_declares_in_filtered_groups() -> None:
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    names = []
    for group in FILTERED_GROUPS:  # tomllib is Python 3.11+; the tables are flat key = value
        table = re.search(
            rf'^\[project\.entry-points\."{re.escape(group)}"\]\n(.*?)(?=^\[|\Z)', text, re.S | re.M
        )
        if table:
            names += re.findall(r"^(\w+)\s*=", table.group(1), re.M)
    assert sorted(names) == sorted(FILTERED_ENTRY_POINTS)
    assert SGLANG_VLLM_PLUGINS == RECOMMENDED_VALUE


def test_unset_allows_everything() -> None:
    check_allowlist(environ={})


def test_the_recommended_value_passes_with_others_added() -> None:
    check_allowlist(environ={"VLLM_PLUGINS": RECOMMENDED_VALUE + ",someone_else"})


@pytest.mark.parametrize("value", ["radix_sglang", "", "radix_plugin,radix_sglang"])
def test_a_missing_name_fails_naming_it_and_the_fix(value: str) -> None:
    with pytest.raises(PluginAllowlistError) as info:
        check_allowlist(environ={"VLLM_PLUGINS": value})
    assert "radix_pins" in str(info.value) and RECOMMENDED_VALUE in str(info.value)


def test_the_scheduler_only_needs_the_general_plugin() -> None:
    check_allowlist((GENERAL_PLUGIN,), environ={"VLLM_PLUGINS": "radix_plugin"})
    with pytest.raises(PluginAllowlistError, match="radix_plugin"):
        check_allowlist((GENERAL_PLUGIN,), environ={"VLLM_PLUGINS": "radix_sglang"})
