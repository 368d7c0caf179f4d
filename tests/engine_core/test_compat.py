"""The vLLM version gate: patches are applied only to the vLLM they were read from."""

from __future__ import annotations

import logging

import pytest
import vllm
from test_scheduler_variants import build
from vllm.v1.core import kv_cache_coordinator
from vllm.v1.core.block_pool import BlockPool

from radix_plugin.compat import (
    ALLOW_UNTESTED_ENV,
    SUPPORTED_VLLM_VERSIONS,
    UnsupportedVllmVersion,
    check_vllm_version,
)


def test_installed_vllm_is_supported_including_local_build_tags() -> None:
    check_vllm_version()
    check_vllm_version(f"{SUPPORTED_VLLM_VERSIONS[0]}+cpu")


def test_other_version_is_refused_with_a_message_naming_both_and_the_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ALLOW_UNTESTED_ENV, raising=False)
    with pytest.raises(UnsupportedVllmVersion) as err:
        check_vllm_version("0.33.1")
    message = str(err.value)
    assert "0.33.1" in message and SUPPORTED_VLLM_VERSIONS[0] in message
    assert ALLOW_UNTESTED_ENV in message


def test_override_allows_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(ALLOW_UNTESTED_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="radix_plugin.compat"):
        check_vllm_version("0.33.1")
    assert "0.33.1" in caplog.text


def test_scheduler_refuses_before_patching_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_UNTESTED_ENV, raising=False)
    monkeypatch.setattr(vllm, "__version__", "0.31.0")
    with pytest.raises(UnsupportedVllmVersion, match=r"0\.31\.0"):
        build(async_scheduling=False)
    assert kv_cache_coordinator.BlockPool is BlockPool
