"""``radix_session_end`` and the session id: validated like every other ``radix_*`` hint."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radix_plugin.cache_manager.core.hints import (
    MAX_NAME_CHARS,
    HintError,
    parse_hints,
    request_session,
)
from radix_plugin.xargs import parse_flag


@pytest.mark.parametrize("value", ["maybe", 2, -1, 0.5, [], {}, "1" * 300, None])
def test_bad_session_end_is_refused_naming_key_and_value(value: object) -> None:
    with pytest.raises(HintError, match="radix_session_end") as info:
        parse_hints({"radix_session_end": value})
    assert len(str(info.value)) < 300  # a hostile value is not echoed whole


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), ("true", True), (1, True), ("yes", True), (False, False), ("0", False)],
)
def test_session_end_spellings(value: object, expected: bool) -> None:
    assert parse_hints({"radix_session_end": value}).session_end is expected


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40)))
def test_session_end_parses_exactly_the_flags(value: object) -> None:
    flag = parse_flag(value)
    try:
        hints = parse_hints({"radix_session_end": value})
    except HintError as exc:
        assert flag is None and "radix_session_end" in str(exc)
        return
    assert hints.session_end is flag


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.text(max_size=300), st.lists(st.integers())))
def test_xargs_session_id_is_taken_only_when_vllm_would(value: object) -> None:
    """vLLM itself uses a non-empty string ``session_id`` from ``vllm_xargs`` and ignores
    anything else, so we never refuse it; we keep it when it is a usable name."""
    hints = parse_hints({"session_id": value})
    ok = isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS
    assert hints.session == (value if ok else None)


def test_the_requests_own_session_id_wins_over_xargs() -> None:
    hints = parse_hints({"session_id": "from-xargs"})
    assert request_session(SimpleNamespace(session_id="from-header"), hints) == "from-header"
    assert request_session(SimpleNamespace(session_id=None), hints) == "from-xargs"
    assert request_session(SimpleNamespace(), parse_hints(None)) is None


def test_an_absent_session_end_is_no_word_at_all() -> None:
    """Absent means the client does not know; false is its word that a next turn follows."""
    assert parse_hints({}).session_end is None
    assert parse_hints({"radix_priority": 1}).session_end is None
    assert parse_hints({"radix_session_end": False}).session_end is False
