"""SGLang /generate bodies: SGLang's defaults, batch expansion, and a named 400 for anything
malformed (never another exception)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radix_plugin.api_server.core.sglang_request import (
    MAX_BATCH,
    SglRequestError,
    SglSampling,
    parse_generate,
)

# What sgl.RuntimeEndpoint.generate sends for a plain `gen` (SglSamplingParams defaults).
FRONTEND_GEN = {
    "text": "Q: 1+1?\nA:",
    "sampling_params": {
        "skip_special_tokens": True,
        "spaces_between_special_tokens": True,
        "max_new_tokens": 16,
        "min_new_tokens": 0,
        "n": 1,
        "stop": [],
        "stop_token_ids": [],
        "stop_regex": [],
        "temperature": 0,
        "top_p": 1.0,
        "top_k": -1,
        "min_p": 0.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "ignore_eos": False,
        "regex": None,
        "json_schema": None,
    },
}


def test_frontend_gen_body_parses_with_sglang_defaults() -> None:
    req = parse_generate(FRONTEND_GEN, vocab_size=100)
    assert not req.batched and not req.stream and len(req.items) == 1
    s = req.items[0].sampling
    assert s.max_new_tokens == 16 and s.greedy and s.top_k == -1 and s.stop == ()
    assert req.items[0].logprob_start_len == -1 and not req.items[0].return_logprob


def test_defaults_match_sglang() -> None:
    s = parse_generate({"text": "x"}).items[0].sampling
    assert s == SglSampling()
    assert s.max_new_tokens == 128 and s.temperature == 1.0 and not s.greedy


def test_select_body_expands_a_batch_with_shared_logprob_options() -> None:
    body = {
        "text": ["ctx yes", "ctx no"],
        "sampling_params": {"max_new_tokens": 0, "temperature": 0},
        "return_logprob": True,
        "return_text_in_logprobs": True,
        "logprob_start_len": 3,
    }
    req = parse_generate(body)
    assert req.batched and [i.text for i in req.items] == ["ctx yes", "ctx no"]
    assert all(i.return_logprob and i.logprob_start_len == 3 for i in req.items)
    assert all(i.sampling.max_new_tokens == 0 for i in req.items)
    assert len({i.rid for i in req.items}) == 2


def test_n_expands_samples_with_distinct_rids() -> None:
    req = parse_generate({"text": "x", "rid": "r", "sampling_params": {"n": 3}})
    assert req.batched and [i.rid for i in req.items] == ["r_0", "r_1", "r_2"]


def test_input_ids_single_and_batch() -> None:
    assert parse_generate({"input_ids": [1, 2]}).items[0].input_ids == (1, 2)
    req = parse_generate({"input_ids": [[1], [2, 3]]})
    assert req.batched and [i.input_ids for i in req.items] == [(1,), (2, 3)]


def test_null_max_new_tokens_means_until_the_context_ends() -> None:
    req = parse_generate({"text": "x", "sampling_params": {"max_new_tokens": None}})
    assert req.items[0].sampling.max_new_tokens is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "x", "bogus": 1}, "'bogus'"),
        ({"text": "x", "image_data": "a.png"}, "image_data"),
        ({"text": "x", "sampling_params": {"temprature": 0}}, "sampling_params.'temprature'"),
        ({"text": "x", "sampling_params": {"temperature": -1}}, "sampling_params.temperature"),
        ({"text": "x", "sampling_params": {"temperature": "hot"}}, "sampling_params.temperature"),
        ({"text": "x", "sampling_params": {"top_p": 0}}, "sampling_params.top_p"),
        ({"text": "x", "sampling_params": {"top_k": 0}}, "sampling_params.top_k"),
        (
            {"text": "x", "sampling_params": {"max_new_tokens": -1}},
            "sampling_params.max_new_tokens",
        ),
        (
            {"text": "x", "sampling_params": {"max_new_tokens": 2, "min_new_tokens": 3}},
            "sampling_params.min_new_tokens",
        ),
        ({"text": "x", "sampling_params": {"n": 0}}, "sampling_params.n"),
        ({"text": "x", "sampling_params": {"stop": [""]}}, "sampling_params.stop"),
        ({"text": "x", "sampling_params": {"stop_regex": "a+"}}, "sampling_params.stop_regex"),
        (
            {"text": "x", "sampling_params": {"stop_token_ids": [500]}},
            "sampling_params.stop_token_ids",
        ),
        (
            {"text": "x", "sampling_params": {"regex": "a", "json_schema": "{}"}},
            "sampling_params.regex",
        ),
        (
            {"text": "x", "sampling_params": {"logit_bias": {"7": 1e9}}},
            "sampling_params.logit_bias",
        ),
        (
            {"text": "x", "sampling_params": {"structural_tag": "{}"}},
            "sampling_params.structural_tag",
        ),
        ({"text": ["a", "b"], "sampling_params": [{}]}, "sampling_params"),
        ({"text": "x", "return_logprob": 1}, "return_logprob"),
        ({"text": "x", "logprob_start_len": -2}, "logprob_start_len"),
        ({"text": "x", "top_logprobs_num": 99}, "top_logprobs_num"),
        ({"text": "x", "input_ids": [1]}, "text"),
        ({}, "text"),
        ({"input_ids": [1, -2]}, "input_ids"),
        ({"text": 5}, "text"),
        ({"text": "x", "rid": 5}, "rid"),
        ({"text": ["a"] * (MAX_BATCH + 1)}, "text"),
        ({"text": "x", "stream": "yes"}, "stream"),
        ([], "body"),
    ],
)
def test_bad_requests_name_the_field(body: object, field: str) -> None:
    with pytest.raises(SglRequestError) as info:
        parse_generate(body, vocab_size=100)
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_unsupported_fields_are_accepted_when_empty() -> None:
    body = {"text": "x", "lora_path": None, "image_data": None, "session_id": None}
    assert len(parse_generate(body).items) == 1


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_fields = st.sampled_from(
    [
        "text",
        "input_ids",
        "sampling_params",
        "rid",
        "return_logprob",
        "logprob_start_len",
        "top_logprobs_num",
        "stream",
        "n",
        "max_new_tokens",
        "temperature",
        "stop",
        "regex",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(_fields, _json, max_size=6),
    st.dictionaries(
        _fields | st.sampled_from(["top_k", "logit_bias", "stop_token_ids"]), _json, max_size=6
    ),
)
def test_any_json_body_parses_or_fails_with_a_named_field(top: dict, sampling: dict) -> None:
    body = dict(top)
    body.setdefault("text", "x")
    if sampling:
        body["sampling_params"] = sampling
    json.dumps(body)  # a body a client could send
    try:
        req = parse_generate(body, vocab_size=1000)
    except SglRequestError as exc:
        assert exc.field
        return
    assert 1 <= len(req.items) <= MAX_BATCH
    for item in req.items:
        assert (item.text is None) != (item.input_ids is None)
        s = item.sampling
        assert s.temperature >= 0 and 0 < s.top_p <= 1 and (s.top_k == -1 or s.top_k >= 1)
        assert s.max_new_tokens is None or s.max_new_tokens >= s.min_new_tokens >= 0
