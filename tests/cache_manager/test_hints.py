"""Hostile ``radix_*`` cache hints: each is refused with a ``HintError`` naming the key, fast."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radix_plugin.cache_manager.core.hints import MAX_PRIORITY, HintError, parse_hints

NESTED = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    ("xargs", "key"),
    [
        ({"radix_workflow": "w", "radix_steps": json.dumps({"a": True})}, "radix_steps"),
        ({"radix_workflow": "w", "radix_steps": {"a": False}}, "radix_steps"),
        ({"radix_workflow": "w", "radix_steps": NESTED}, "radix_steps"),
        ({"radix_workflow": "w", "radix_steps": '{"a": ' + NESTED + "}"}, "radix_steps"),
        ({"radix_workflow": "w", "radix_steps": '{"a": 1' + "0" * 5000 + "}"}, "radix_steps"),
        ({"radix_workflow": "w", "radix_steps": json.dumps({"a": 2**40})}, "radix_steps"),
        ({"radix_workflow": "w", "radix_steps": json.dumps({"x" * 300: 1})}, "radix_steps"),
        ({"radix_workflow": "w", "radix_steps": "{" + " " * 70_000 + "}"}, "radix_steps"),
        ({"radix_priority": "9" * 400}, "radix_priority"),
        ({"radix_priority": 10**400}, "radix_priority"),
        ({"radix_priority": MAX_PRIORITY + 1}, "radix_priority"),
        ({"radix_priority": True}, "radix_priority"),
        ({"radix_workflow": "w" * 300}, "radix_workflow"),
        ({"radix_agent": ""}, "radix_agent"),
        ({"radix_agent": 10**300}, "radix_agent"),
    ],
)
def test_hostile_hint_is_refused_naming_the_key(xargs: dict, key: str) -> None:
    start = time.perf_counter()
    with pytest.raises(HintError, match=key) as info:
        parse_hints(xargs)
    assert time.perf_counter() - start < 0.5
    assert len(str(info.value)) < 300  # the hostile value is not echoed whole


def test_valid_hints_still_parse() -> None:
    hints = parse_hints(
        {
            "radix_priority": "-7",
            "radix_workflow": 42,
            "radix_agent": "planner",
            "radix_steps": '{"planner": 0, "critic": 2}',
        }
    )
    assert (hints.priority, hints.workflow, hints.agent) == (-7, "42", "planner")
    assert hints.steps == {"planner": 0, "critic": 2}


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
_VALUE = _JSON | _JSON.map(json.dumps) | st.text(alphabet='[]{}":,0123456789a', max_size=200)
_KEYS = st.sampled_from(["radix_priority", "radix_workflow", "radix_agent", "radix_steps", "other"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUE, max_size=5))
def test_any_xargs_parse_or_raise_hint_error(xargs: dict) -> None:
    try:
        hints = parse_hints(xargs)
    except HintError:
        return
    assert not isinstance(hints.priority, bool) and abs(hints.priority) <= MAX_PRIORITY
    assert all(type(v) is int and v >= 0 for v in hints.steps.values())
