"""The control-character rewrite: textual behaviour and its effect on real xgrammar grammars."""

from __future__ import annotations

import json

import pytest
import xgrammar as xgr
from hypothesis import given, settings
from hypothesis import strategies as st
from xgrammar.testing import _is_grammar_accept_string as accepts

from radix_plugin.logits.grammar.strict_json import forbid_raw_control_chars

BOUNDED_STRING = {"type": "string", "minLength": 1, "maxLength": 8}


def test_string_content_class_gains_control_range() -> None:
    assert forbid_raw_control_chars(r"r ::= [^\"\\\r\n]") == r"r ::= [^\0-\x1f\"\\\r\n]"


@pytest.mark.parametrize(
    "ebnf",
    [
        r"r ::= [^\0-\x1f\"\\]",  # already strict
        r"r ::= [^a-z]",  # negated class without a quote: not string content
        r"r ::= [ \n\r\t]* [0-9]",  # positive classes (whitespace stays legal)
        r'r ::= "[^\"x" "y"',  # a literal that merely looks like a class
        r'r ::= Regex("^[^\"z]+$", json_string=true)',  # regex bodies are compiled JSON-safely
    ],
)
def test_everything_else_is_left_alone(ebnf: str) -> None:
    assert forbid_raw_control_chars(ebnf) == ebnf


def test_unterminated_class_is_reported() -> None:
    with pytest.raises(ValueError, match="unterminated"):
        forbid_raw_control_chars("r ::= [^abc")


def _grammar(schema: dict, strict: bool) -> xgr.Grammar:
    grammar = xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)
    return xgr.Grammar.from_ebnf(forbid_raw_control_chars(str(grammar))) if strict else grammar


def test_vanilla_xgrammar_accepts_raw_control_chars_in_bounded_strings() -> None:
    """The bug being fixed: if this starts failing, xgrammar fixed it upstream."""
    assert accepts(_grammar(BOUNDED_STRING, strict=False), '"a\x01b"')


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=8))
def test_strict_grammar_never_accepts_what_json_loads_rejects(text: str) -> None:
    raw = f'"{text}"'
    try:
        json_ok = json.loads(raw) == text
    except json.JSONDecodeError:
        json_ok = False
    strict = _grammar(BOUNDED_STRING, strict=True)
    if not json_ok:
        assert not accepts(strict, raw)
    elif '"' not in text and "\\" not in text:
        # Plain text that fits the bound is still accepted: the rewrite removes nothing else.
        assert accepts(strict, raw)
        assert accepts(_grammar(BOUNDED_STRING, strict=False), raw)
