"""Reading a user's request log for the capacity planner: Mooncake JSONL and OpenAI-style
JSONL (tokenized with the `real` model's own tokenizer), bad lines reported by number while
the rest still counts, and property-based checks that no input line raises anything but a
:class:`TraceFormatError` naming its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radix_plugin.simulator.request_log import (
    BlockIds,
    OpenAIParser,
    UnknownFormatError,
    detect_format,
    load_request_log,
    load_tokenizer,
)
from radix_plugin.simulator.trace import TraceFormatError, TraceRequest, parse_mooncake_line
from radix_plugin.testing.models import get_model_path

BS = 16


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(get_model_path("real"))


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def mooncake(ts: int, n_in: int, n_out: int, ids: list[int]) -> str:
    return json.dumps(
        {"timestamp": ts, "input_length": n_in, "output_length": n_out, "hash_ids": ids}
    )


def test_mooncake_bad_lines_are_reported_by_number_and_the_rest_counts(tmp_path: Path) -> None:
    log = write_lines(
        tmp_path / "trace.jsonl",
        [
            mooncake(0, 40, 5, [1, 2, 3]),
            "{not json",
            mooncake(1, 40, 5, [1, 2]),  # 40 tokens need 3 hash ids at block size 16
            "",
            json.dumps({"timestamp": 2, "input_length": 20, "hash_ids": [1, 2]}),
            mooncake(3, -4, 5, [1]),
            "[1, 2, 3]",
            mooncake(4, 20, 5, [1, 9]),
        ],
    )
    assert detect_format(log) == "mooncake"
    got = load_request_log(log, "auto", BS)
    assert got.format == "mooncake"
    assert [r.timestamp for r in got.requests] == [0, 4]
    assert got.requests[1].hash_ids == (1, 9)
    assert [e.line for e in got.errors] == [2, 3, 5, 6, 7]
    messages = [e.message for e in got.errors]
    assert all(m.startswith(f"{log}:{n}:") for m, n in zip(messages, [2, 3, 5, 6, 7], strict=True))
    assert "not JSON" in messages[0]
    assert "needs 3 hash ids" in messages[1]
    assert "output_length" in messages[2]
    assert "input_length must be an integer >= 1, got -4" in messages[3]
    assert "expected a JSON object, got list" in messages[4]


def test_openai_prompts_and_chats_are_tokenized_like_vllm(tmp_path: Path, tokenizer) -> None:
    system = "You are a careful assistant. " * 8
    chat_a = [{"role": "system", "content": system}, {"role": "user", "content": "Hi there"}]
    chat_b = [{"role": "system", "content": system}, {"role": "user", "content": "Bye now"}]
    log = write_lines(
        tmp_path / "requests.jsonl",
        [
            json.dumps({"messages": chat_a, "output": "Hello! How can I help?"}),
            json.dumps({"messages": chat_b, "output_length": 7, "session": 42}),
            json.dumps({"prompt": "The capital of France is"}),
            json.dumps({"messages": "not a list"}),
            json.dumps({"prompt": [5, 6, 7, 8]}),
            json.dumps({"model": "x"}),
        ],
    )
    assert detect_format(log) == "openai"
    got = load_request_log(log, "auto", BS, tokenizer=tokenizer, output_tokens=3)
    a, b, plain, ids = got.requests
    text_a = tokenizer.apply_chat_template(chat_a, tokenize=False, add_generation_prompt=True)
    tokens_a = tokenizer(text_a, add_special_tokens=False)["input_ids"]
    assert a.input_length == len(tokens_a)
    assert a.output_length == len(tokenizer("Hello! How can I help?")["input_ids"])
    assert b.output_length == 7 and b.extra["session"] == "42"
    assert plain.input_length == len(tokenizer("The capital of France is")["input_ids"])
    assert plain.output_length == 3  # --output-tokens for a line that names none
    assert ids.input_length == 4
    # The shared system prompt is the same pages; the first page after it differs.
    tokens_b = tokenizer(
        tokenizer.apply_chat_template(chat_b, tokenize=False, add_generation_prompt=True),
        add_special_tokens=False,
    )["input_ids"]
    common = next(i for i, (x, y) in enumerate(zip(tokens_a, tokens_b, strict=False)) if x != y)
    shared = common // BS
    assert shared >= 3
    assert a.hash_ids[:shared] == b.hash_ids[:shared]
    assert a.hash_ids[shared] != b.hash_ids[shared]
    assert [e.line for e in got.errors] == [4, 6]
    assert "messages must be a non-empty list" in got.errors[0].message
    assert "needs a 'prompt' or a 'messages' field" in got.errors[1].message


def test_openai_timestamps_order_the_replay(tmp_path: Path, tokenizer) -> None:
    log = write_lines(
        tmp_path / "r.jsonl",
        [
            json.dumps({"prompt": "second", "timestamp": 2.5}),
            json.dumps({"prompt": "first", "timestamp": 1}),
            json.dumps({"prompt": "bad time", "timestamp": "noon"}),
        ],
    )
    got = load_request_log(log, "openai", BS, tokenizer=tokenizer)
    assert [r.extra["timestamp"] for r in got.requests] == [1, 2.5]
    assert [e.line for e in got.errors] == [3]
    assert "timestamp must be a number, got 'noon'" in got.errors[0].message


def test_unknown_format_is_refused_by_name(tmp_path: Path) -> None:
    log = write_lines(tmp_path / "x.jsonl", [json.dumps({"text": "hello"}), "not json"])
    with pytest.raises(UnknownFormatError, match="first 100 lines"):
        detect_format(log)
    with pytest.raises(UnknownFormatError, match="unknown format 'csv'"):
        load_request_log(log, "csv", BS)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        load_request_log(log, "openai", BS)


# --- property-based: hostile lines ----------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length", "hash_ids", "extra")
OPENAI_KEYS = ("prompt", "messages", "output", "output_length", "timestamp", "session")


def records(keys: tuple[str, ...]) -> st.SearchStrategy[dict]:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), JSON_VALUES, max_size=6)


def lines(keys: tuple[str, ...]) -> st.SearchStrategy[str]:
    as_json = records(keys).map(json.dumps) | JSON_VALUES.map(json.dumps)
    return as_json | st.text(max_size=60) | st.just("[" * 50_000)


@settings(max_examples=300, deadline=None)
@given(lines(MOONCAKE_KEYS))
def test_a_mooncake_line_parses_or_names_its_line(line: str) -> None:
    try:
        req = parse_mooncake_line(line, BS, "log:7")
    except TraceFormatError as exc:
        assert str(exc).startswith("log:7: ")
        return
    assert req.input_length >= 1 and req.output_length >= 0
    assert len(req.hash_ids) == -(-req.input_length // BS)
    assert all(type(h) is int for h in req.hash_ids)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-(2**40), 2**40),
    st.integers(1, 5000),
    st.integers(0, 5000),
    st.lists(st.integers(-(2**64), 2**64), min_size=320, max_size=320),
)
def test_a_valid_mooncake_record_round_trips(ts: int, n_in: int, n_out: int, ids) -> None:
    req = parse_mooncake_line(mooncake(ts, n_in, n_out, ids), BS)
    assert req == TraceRequest(ts, n_in, n_out, tuple(ids[: -(-n_in // BS)]))
    assert parse_mooncake_line(req.to_json(), BS) == req


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines(OPENAI_KEYS))
def test_an_openai_line_parses_or_names_its_line(tokenizer, line: str) -> None:
    parser = OpenAIParser(tokenizer, BS, output_tokens=0)
    try:
        req = parser(line, "log:3", 3)
    except TraceFormatError as exc:
        assert str(exc).startswith("log:3: ")
        return
    assert req.input_length >= 1 and req.output_length >= 0
    assert len(req.hash_ids) == -(-req.input_length // BS)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 2**32 - 1), max_size=80),
    st.lists(st.integers(0, 2**32 - 1), max_size=80),
)
def test_block_ids_are_equal_exactly_over_the_shared_full_blocks(a, b) -> None:
    ids = BlockIds(4)
    ia, ib = ids(a), ids(b)
    diff = (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    common = next(diff, min(len(a), len(b)))
    same = sum(1 for x, y in zip(ia, ib, strict=False) if x == y)
    full_shared = common // 4
    # Every block up to the first differing token is shared; a partial last block is shared
    # only when both sequences end there with the same tokens.
    assert ia[:full_shared] == ib[:full_shared]
    assert same in (full_shared, full_shared + 1)
    if same == full_shared + 1:
        assert a[4 * full_shared : 4 * full_shared + 4] == b[4 * full_shared : 4 * full_shared + 4]
