"""The vLLM version gate: patches are applied only to the vLLM they were read from."""

from __future__ import annotations

import logging

import pytest
import vllm
from vllm.v1.core import kv_cache_coordinator
from vllm.v1.core.block_pool import BlockPool

from radix_plugin.compat import (
    ALLOW_UNTESTED_ENV,
    SUPPORTED_VLLM_VERSIONS,
    UnsupportedVllmVersion,
    check_vllm_version,
)
from radix_plugin.testing.scheduler import build_scheduler


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
        build_scheduler(radix={"eviction": "lfu", "schedule": "dfs"})
    assert kv_cache_coordinator.BlockPool is BlockPool


def test_plain_sampling_patch_applies_only_to_jump_forward_drafts() -> None:
    """min_p / logit_bias processors are built (and accepted) when the only drafts are the
    plugin's; any other config gets vLLM's own behaviour, and installing twice is harmless."""
    from types import SimpleNamespace

    import torch
    from vllm.engine.arg_utils import EngineArgs
    from vllm.exceptions import VLLMValidationError
    from vllm.sampling_params import SamplingParams
    from vllm.v1.sample import logits_processor

    from radix_plugin.compat import allow_plain_sampling_with_drafts
    from radix_plugin.config import JUMP_FORWARD_PROPOSER
    from radix_plugin.plugin import jump_forward_only
    from radix_plugin.testing.models import get_model_path

    config = EngineArgs(model=str(get_model_path("tiny")), max_model_len=256).create_engine_config()
    allow_plain_sampling_with_drafts(jump_forward_only)
    allow_plain_sampling_with_drafts(jump_forward_only)

    def built(speculative_config: object) -> set[str]:
        config.speculative_config = speculative_config
        procs = logits_processor.build_logitsprocs(config, torch.device("cpu"), False, False)
        return {type(p).__name__ for p in procs.all}

    builtins = {cls.__name__ for cls in logits_processor.BUILTIN_LOGITS_PROCESSORS}
    assert {"MinPLogitsProcessor", "LogitBiasLogitsProcessor"} <= builtins <= built(None)
    # Grammars go scheduler-side under drafts, so the plugin's own processor is not built.
    assert built(SimpleNamespace(model=JUMP_FORWARD_PROPOSER)) == builtins
    assert built(SimpleNamespace(model="some/draft-model")) == {"MinTokensLogitsProcessor"}
    biased = SamplingParams(logit_bias={5: 1.0}, min_p=0.2)
    biased._validate_spec_decode(SimpleNamespace(model=JUMP_FORWARD_PROPOSER))
    with pytest.raises(VLLMValidationError, match="min_p and logit_bias"):
        biased._validate_spec_decode(SimpleNamespace(model="some/draft-model"))


def test_registration_leaves_another_vllm_unpatched(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from radix_plugin.compat import vllm_version_allowed

    monkeypatch.delenv(ALLOW_UNTESTED_ENV, raising=False)
    monkeypatch.setattr(vllm, "__version__", "0.31.0")
    with caplog.at_level(logging.WARNING, logger="radix_plugin.compat"):
        assert not vllm_version_allowed()
    assert "0.31.0" in caplog.text
    monkeypatch.setattr(vllm, "__version__", SUPPORTED_VLLM_VERSIONS[0])
    assert vllm_version_allowed()
