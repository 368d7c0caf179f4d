"""One flag each: `--scheduler-cls radix_plugin.RadixScheduler` supplies jump-forward's
drafts, and `host_tier` (or `host_tier_gib > 0`) in `--additional-config` the host tier's
`--kv-transfer-config`."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from radix_plugin import plugin
from radix_plugin.cache_manager.engine_core.scheduler import RadixScheduler
from radix_plugin.config import (
    HOST_TIER_CONNECTOR,
    HOST_TIER_CONNECTOR_MODULE,
    JUMP_FORWARD_PROPOSER,
)
from radix_plugin.logits.engine_core.jump_forward_drafts import NoDraftProposer


def _args(**kw: Any) -> SimpleNamespace:
    from vllm.config import StructuredOutputsConfig

    base = {
        "scheduler_cls": "radix_plugin.RadixScheduler",
        "logits_processors": None,
        "structured_outputs_config": StructuredOutputsConfig(),
    }
    return SimpleNamespace(**{"additional_config": {}, **base, **kw})


@pytest.fixture
def on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "_on_cpu", lambda: True)


def test_proposer_name_matches_the_class() -> None:
    assert f"{NoDraftProposer.__module__}.{NoDraftProposer.__qualname__}" == JUMP_FORWARD_PROPOSER


def test_scheduler_flag_alone_supplies_drafts_on_cpu(on_cpu: None) -> None:
    spec = plugin.jump_forward_speculative_config(_args())
    assert spec == {
        "method": "custom_class",
        "model": JUMP_FORWARD_PROPOSER,
        "num_speculative_tokens": 16,
    }


def test_subclass_of_the_scheduler_counts(on_cpu: None) -> None:
    class Mine(RadixScheduler):
        pass

    assert plugin.jump_forward_speculative_config(_args(scheduler_cls=Mine)) is not None


@pytest.mark.parametrize(
    "kw",
    [
        {"scheduler_cls": None},
        {"scheduler_cls": "vllm.v1.core.sched.scheduler.Scheduler"},
        {"scheduler_cls": "no.such.Class"},
        {"additional_config": {"radix_plugin": {"jump_forward": False}}},
        {"logits_processors": ["some.Processor"]},
    ],
)
def test_left_alone(on_cpu: None, kw: dict[str, Any]) -> None:
    assert plugin.jump_forward_speculative_config(_args(**kw)) is None


def test_off_cpu_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "_on_cpu", lambda: False)
    assert plugin.jump_forward_speculative_config(_args()) is None
    asked = _args(additional_config={"radix_plugin": {"jump_forward": True}})
    assert plugin.jump_forward_speculative_config(asked) is not None


def test_register_installs_the_seam_once() -> None:
    from vllm.engine.arg_utils import EngineArgs

    from radix_plugin.compat import install_default_speculative_config

    install_default_speculative_config(plugin.jump_forward_speculative_config)
    install_default_speculative_config(plugin.jump_forward_speculative_config)
    hook = EngineArgs.create_speculative_config
    assert hook._radix_default is plugin.jump_forward_speculative_config  # type: ignore[attr-defined]
    assert not hasattr(hook.__wrapped__, "_radix_default")  # type: ignore[attr-defined]


@pytest.mark.parametrize("config", [{"backend": "guidance"}, "outlines-object"])
def test_jump_forward_stays_off_with_another_structured_output_backend(
    on_cpu: None, config: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Scheduler-side grammars are xgrammar's: with another backend (a dict from
    ``LLM(...)`` or vLLM's config object) radix grammars stay in the logits processor."""
    from vllm.config import StructuredOutputsConfig

    if config == "outlines-object":
        config = StructuredOutputsConfig(backend="outlines")
    asked = _args(
        structured_outputs_config=config,
        additional_config={"radix_plugin": {"jump_forward": True}},
    )
    assert plugin.jump_forward_speculative_config(asked) is None
    assert "jump-forward off" in caplog.text
    for ok in ({"backend": "xgrammar"}, {"backend": "auto"}):
        assert plugin.jump_forward_speculative_config(_args(structured_outputs_config=ok))


def test_jump_forward_pins_auto_to_xgrammar_in_the_engine_config(on_cpu: None) -> None:
    """One backend per engine: under ``auto`` a vLLM request xgrammar rejects would latch
    guidance, on which the plugin's grammars fail; with jump-forward on, vLLM's own config
    (built by ``create_engine_config``, as every process builds it) says xgrammar."""
    from vllm.engine.arg_utils import EngineArgs

    from radix_plugin.compat import install_default_speculative_config
    from radix_plugin.testing.models import get_model_path

    install_default_speculative_config(plugin.jump_forward_speculative_config)
    model = str(get_model_path("tiny"))
    radix = EngineArgs(
        model=model, max_model_len=256, scheduler_cls="radix_plugin.RadixScheduler"
    ).create_engine_config()
    assert radix.speculative_config.model == JUMP_FORWARD_PROPOSER
    assert radix.structured_outputs_config.backend == "xgrammar"
    plain = EngineArgs(model=model, max_model_len=256).create_engine_config()
    assert plain.speculative_config is None
    assert plain.structured_outputs_config.backend == "auto"


def test_jump_forward_off_leaves_auto_alone(on_cpu: None) -> None:
    off = _args(additional_config={"radix_plugin": {"jump_forward": False}})
    assert plugin.jump_forward_speculative_config(off) is None
    assert off.structured_outputs_config.backend == "auto"
    chosen = _args(structured_outputs_config={"backend": "auto"})
    assert plugin.jump_forward_speculative_config(chosen) is not None
    assert chosen.structured_outputs_config == {"backend": "xgrammar"}


HOST_TIER_CONFIG = {
    "kv_connector": HOST_TIER_CONNECTOR,
    "kv_connector_module_path": HOST_TIER_CONNECTOR_MODULE,
    "kv_role": "kv_both",
}


@pytest.mark.parametrize("radix", [{"host_tier": True}, {"host_tier_gib": 0.5}])
def test_one_flag_supplies_the_host_tier_connector(radix: dict[str, Any]) -> None:
    args = _args(additional_config={"radix_plugin": radix})
    assert plugin.host_tier_kv_transfer_config(args) == HOST_TIER_CONFIG


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"additional_config": {"radix_plugin": {"host_tier": False, "host_tier_gib": 0}}},
        {"scheduler_cls": None, "additional_config": {"radix_plugin": {"host_tier": True}}},
        {
            "scheduler_cls": "vllm.v1.core.sched.scheduler.Scheduler",
            "additional_config": {"radix_plugin": {"host_tier": True}},
        },
        # A bad config is the config check's to report, not this hook's to crash on.
        {"additional_config": {"radix_plugin": {"host_tier": True, "host_tier_gib": -1}}},
    ],
)
def test_no_host_tier_unless_asked(kw: dict[str, Any]) -> None:
    assert plugin.host_tier_kv_transfer_config(_args(**kw)) is None


def _engine_config(**kw: Any) -> Any:
    """A real ``VllmConfig`` built by vLLM's ``EngineArgs`` with the plugin's hooks in."""
    from vllm.engine.arg_utils import EngineArgs

    from radix_plugin.testing.models import get_model_path

    plugin.register()
    args = EngineArgs(
        model=str(get_model_path("tiny")),
        max_model_len=256,
        scheduler_cls="radix_plugin.RadixScheduler",
        **kw,
    )
    return args.create_engine_config()


def test_engine_config_gets_the_host_tier_from_additional_config_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="radix_plugin.compat"):
        config = _engine_config(additional_config={"radix_plugin": {"host_tier": True}})
    kv = config.kv_transfer_config
    assert (kv.kv_connector, kv.kv_connector_module_path, kv.kv_role) == (
        HOST_TIER_CONNECTOR,
        HOST_TIER_CONNECTOR_MODULE,
        "kv_both",
    )
    assert "host tier on" in caplog.text
    assert _engine_config().kv_transfer_config is None  # no flag: vLLM's default


def test_a_connector_the_user_names_wins_and_the_log_says_which(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from vllm.config import KVTransferConfig

    theirs = KVTransferConfig(kv_connector="OffloadingConnector", kv_role="kv_both")
    with caplog.at_level(logging.WARNING, logger="radix_plugin.compat"):
        config = _engine_config(
            additional_config={"radix_plugin": {"host_tier": True}}, kv_transfer_config=theirs
        )
    assert config.kv_transfer_config.kv_connector == "OffloadingConnector"
    assert "'OffloadingConnector'" in caplog.text and "wins" in caplog.text
