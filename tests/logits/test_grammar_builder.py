"""Spec -> xgrammar Grammar: each kind builds the intended language; bad input is named."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xgrammar.testing import _is_grammar_accept_string as accepts

from radix_plugin.logits.core.grammar_spec import GrammarSpecError, parse_grammar_spec
from radix_plugin.logits.grammar.builder import MAX_SCHEMA_PROPERTIES, build_grammar

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 4}, "n": {"type": "integer"}},
    "required": ["name", "n"],
}


def _build(**xargs: object):
    spec = parse_grammar_spec(xargs)
    assert spec is not None
    return build_grammar(spec)


def test_json_schema_is_compact_by_default_and_flexible_on_request() -> None:
    compact = _build(radix_json_schema=json.dumps(SCHEMA))
    assert accepts(compact, '{"name":"ab","n":3}')
    assert not accepts(compact, '{"name": "ab", "n": 3}')
    assert not accepts(compact, '{"name":"a\tb","n":3}')  # raw tab inside a bounded string
    flexible = _build(radix_json_schema=json.dumps(SCHEMA), radix_any_whitespace=True)
    assert accepts(flexible, '{ "name" : "ab" ,\n "n": 3 }')


def test_regex_and_ebnf() -> None:
    regex = _build(radix_regex=r"[0-9]{3}-[a-z]+")
    assert accepts(regex, "123-abc")
    assert not accepts(regex, "12-abc")
    ebnf = _build(radix_ebnf='root ::= "x" rest\nrest ::= "y" | "z"')
    assert accepts(ebnf, "xz")
    assert not accepts(ebnf, "xx")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=5, unique=True))
def test_choice_language_is_exactly_the_choices(choices: list[str]) -> None:
    grammar = _build(radix_choice=choices)
    for choice in choices:
        assert accepts(grammar, choice)
    outsider = "".join(choices) + "!"
    assert not accepts(grammar, outsider)


def test_same_spec_builds_once() -> None:
    spec = parse_grammar_spec({"radix_regex": "cached"})
    assert spec is not None
    assert build_grammar(spec) is build_grammar(spec)


@pytest.mark.parametrize(
    ("xargs", "message"),
    [
        (
            {"radix_json_schema": '{"type": "strnig"}'},
            r'radix_json_schema is not a supported.*"strnig"',
        ),
        ({"radix_json_schema": '{"$ref": "#/defs/x"}'}, "radix_json_schema is not a supported"),
        ({"radix_regex": "(ab"}, "radix_regex is not a valid regular expression: .*parenthesis"),
        ({"radix_ebnf": "root ::= missing"}, 'radix_ebnf is not a valid EBNF grammar: .*"missing"'),
        ({"radix_ebnf": 'start ::= "a"'}, "radix_ebnf is not a valid EBNF grammar: .*root"),
        ({"radix_json_schema": json.dumps(json.loads("[" * 80 + "]" * 80))}, "JSON object"),
    ],
)
def test_invalid_grammars_raise_clear_errors(xargs: dict, message: str) -> None:
    with pytest.raises(GrammarSpecError, match=message) as info:
        _build(**xargs)
    # No C++ source locations or timestamps leak into the client-facing message.
    assert not re.search(r"\.cc:\d+|\[\d\d:\d\d:\d\d\]", str(info.value))


def test_deeply_nested_schema_is_rejected_before_xgrammar_recurses() -> None:
    schema: dict = {"type": "integer"}
    for _ in range(80):
        schema = {"type": "array", "items": schema}
    with pytest.raises(GrammarSpecError, match="nested more than"):
        _build(radix_json_schema=json.dumps(schema))


def test_schemas_past_the_property_bound_are_refused_before_compiling() -> None:
    """10,000 optional properties never finish compiling; the bound counts every object."""
    half = {f"p{i}": {"type": "integer"} for i in range(MAX_SCHEMA_PROPERTIES // 2)}
    inner = {"type": "object", "properties": half}
    fits = {"type": "object", "properties": {**half, "inner": inner}}
    with pytest.raises(GrammarSpecError, match=f"{MAX_SCHEMA_PROPERTIES + 1} properties"):
        _build(radix_json_schema=json.dumps(fits))
    del half["p0"]
    assert accepts(_build(radix_json_schema=json.dumps(fits)), '{"inner":{}}')


RECURSIVE_REQUIRED = {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]}


@pytest.mark.parametrize(
    ("xargs", "message"),
    [
        ({"radix_json_schema": json.dumps(RECURSIVE_REQUIRED)}, "accepts no finite output"),
        ({"radix_ebnf": "root ::= root"}, "accepts no finite output"),
        ({"radix_ebnf": 'root ::= "a" root'}, "accepts no finite output"),
        ({"radix_ebnf": 'root ::= "x" | "a" b\nb ::= "c" b'}, "can never end (b)"),
        ({"radix_regex": "(a{1000}){70}"}, "needs more than 65536 characters"),
    ],
)
def test_grammars_that_cannot_finish_are_refused(xargs: dict, message: str) -> None:
    with pytest.raises(GrammarSpecError, match=re.escape(message)):
        _build(**xargs)


@pytest.mark.parametrize(
    "xargs",
    [
        {"radix_json_schema": json.dumps({**RECURSIVE_REQUIRED, "required": []})},
        {"radix_json_schema": json.dumps({"type": "array", "items": {"$ref": "#"}})},
        {"radix_ebnf": 'root ::= "a" root | "b"'},
        {"radix_ebnf": 'root ::= ("a" ("b" | "c")*)+ [a-z]? x\nx ::= "q"{2,4}'},
        {"radix_regex": "(ab){3,5}c+"},
    ],
)
def test_recursive_grammars_that_can_finish_still_build(xargs: dict) -> None:
    _build(**xargs)
