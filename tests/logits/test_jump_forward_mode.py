"""Per-request jump-forward mode and the auto rule (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from radix_plugin.api_server.validation import validate_radix_xargs
from radix_plugin.logits.core.jump_forward_mode import (
    ENGINE_MODES,
    REQUEST_MODES,
    XARG_JUMP_FORWARD,
    JumpForwardModeError,
    force_run,
    request_mode,
)


@pytest.mark.parametrize("default", ENGINE_MODES)
def test_without_the_xarg_the_engine_default_applies(default: str) -> None:
    assert request_mode(None, default) == default
    assert request_mode({"radix_pin": True}, default) == default


@pytest.mark.parametrize("mode", REQUEST_MODES)
def test_the_xarg_overrides_the_default_in_any_case(mode: str) -> None:
    assert request_mode({XARG_JUMP_FORWARD: f" {mode.upper()} "}, "auto") == mode


@given(st.one_of(st.text(max_size=20), st.integers(), st.none(), st.booleans()))
def test_anything_else_is_refused_naming_the_key(value: object) -> None:
    if isinstance(value, str) and value.strip().lower() in REQUEST_MODES:
        return
    with pytest.raises(JumpForwardModeError, match=XARG_JUMP_FORWARD):
        request_mode({XARG_JUMP_FORWARD: value}, "auto")


def test_admission_refuses_a_bad_mode() -> None:
    from vllm import SamplingParams

    with pytest.raises(ValueError, match="radix_jump_forward must be one of"):
        validate_radix_xargs(SamplingParams(extra_args={XARG_JUMP_FORWARD: "fast"}))


@given(st.integers(min_value=1, max_value=64), st.integers(min_value=1, max_value=16))
def test_auto_forces_exactly_the_runs_long_enough(run: int, threshold: int) -> None:
    assert force_run("forced", run, threshold)
    assert not force_run("verify", run, threshold)
    assert not force_run("off", run, threshold)
    assert force_run("auto", run, threshold) == (run >= threshold)
