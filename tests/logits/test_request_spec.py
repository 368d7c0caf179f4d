"""`vllm_xargs` parsing: what is accepted, how it is normalized, and what is rejected."""

from __future__ import annotations

import json

import pytest

from radix_plugin.logits.core.grammar_spec import (
    GrammarKind,
    GrammarSpec,
    GrammarSpecError,
    has_grammar_keys,
    parse_grammar_spec,
)


@pytest.mark.parametrize("extra_args", [None, {}, {"session_id": "x"}, {"kv_transfer_params": 1}])
def test_requests_without_grammar_keys_have_no_spec(extra_args: dict | None) -> None:
    assert not has_grammar_keys(extra_args)
    assert parse_grammar_spec(extra_args) is None


def test_json_schema_string_and_dict_normalize_to_the_same_spec() -> None:
    schema = {"type": "object", "properties": {"b": {"type": "integer"}, "a": {}}}
    from_string = parse_grammar_spec({"radix_json_schema": json.dumps(schema, indent=2)})
    from_dict = parse_grammar_spec({"radix_json_schema": schema})
    assert from_string == from_dict
    assert from_string is not None and from_string.kind is GrammarKind.JSON_SCHEMA
    # Property order is meaningful to xgrammar (it emits keys in schema order): kept.
    assert list(json.loads(from_string.source)["properties"]) == ["b", "a"]
    assert from_string.any_whitespace is False


@pytest.mark.parametrize(
    ("flag", "expected"),
    [(True, True), (False, False), (1, True), (0, False), ("true", True), ("False", False)],
)
def test_any_whitespace_flag_spellings(flag: object, expected: bool) -> None:
    spec = parse_grammar_spec({"radix_json_schema": "{}", "radix_any_whitespace": flag})
    assert spec == GrammarSpec(GrammarKind.JSON_SCHEMA, "{}", any_whitespace=expected)


def test_choice_accepts_list_and_json_array_string() -> None:
    a = parse_grammar_spec({"radix_choice": ["yes", 'no "way"']})
    b = parse_grammar_spec({"radix_choice": json.dumps(["yes", 'no "way"'])})
    assert a == b
    assert a is not None and a.choices == ["yes", 'no "way"']


@pytest.mark.parametrize(
    ("extra_args", "message"),
    [
        ({"radix_json_schema": "{not json"}, "radix_json_schema is not valid JSON"),
        ({"radix_json_schema": "[1, 2]"}, "must be a JSON object"),
        ({"radix_json_schema": "[" * 5000 + "]" * 5000}, "radix_json_schema"),
        ({"radix_regex": ""}, "radix_regex must be a non-empty string"),
        ({"radix_ebnf": 3}, "radix_ebnf must be a non-empty string"),
        ({"radix_choice": []}, "radix_choice must be a non-empty list"),
        ({"radix_choice": ["a", 1]}, "radix_choice must be a non-empty list"),
        ({"radix_choice": "yes"}, "radix_choice must be a list of strings"),
        ({"radix_regex": "a", "radix_choice": ["a"]}, "at most one of"),
        ({"radix_regex": "a", "radix_any_whitespace": True}, "only applies together"),
        ({"radix_any_whitespace": True}, "only applies together"),
        ({"radix_json_schema": "{}", "radix_any_whitespace": "maybe"}, "must be a boolean"),
        ({"radix_regex": "a" * 300_000}, "radix_regex is 300000 characters; at most"),
        ({"radix_choice": ["x" * 1000] * 300}, "radix_choice is .* characters; at most"),
    ],
)
def test_malformed_xargs_raise_errors_naming_the_key(extra_args: dict, message: str) -> None:
    with pytest.raises(GrammarSpecError, match=message):
        parse_grammar_spec(extra_args)


def test_spec_error_is_a_value_error_so_vllm_answers_400() -> None:
    assert issubclass(GrammarSpecError, ValueError)
