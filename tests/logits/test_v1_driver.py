"""The V1 driver with vLLM's real `BatchUpdate` / `SamplingParams` and simulated decoding.

Random logits stand in for a random-weight model: every step the driver masks, a token is
sampled and appended to the live output list, exactly as the V1 runner does. Outputs must then
satisfy their constraints, and rows without a grammar must come out bit-identical.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import torch
from grammar_test_utils import STOP_IDS, TINY_VOCAB, simulate_decoding
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

from radix_plugin.logits.worker.compile_service import GrammarCompileService
from radix_plugin.logits.worker.row_state import RowStatus
from radix_plugin.logits.worker.v1_driver import V1GrammarDriver

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 10},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 8},
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                },
                "required": ["city", "zip"],
            },
        },
        "required": ["name", "age", "address"],
    },
    {
        "type": "array",
        "items": {"enum": ["red", "green", "blue"]},
        "minItems": 1,
        "maxItems": 4,
    },
    {
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "score": {"type": "number", "minimum": -10, "maximum": 10},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
        },
        "required": ["ok", "score", "tags"],
    },
]


def params(**extra_args: Any) -> SamplingParams:
    return SamplingParams(max_tokens=256, stop_token_ids=list(STOP_IDS), extra_args=extra_args)


def add(driver: V1GrammarDriver, *entries: tuple[int, SamplingParams, list[int]]) -> None:
    added = [(index, p, [1], out) for index, p, out in entries]
    driver.update_state(BatchUpdate(batch_size=len(added), removed=[], added=added, moved=[]))


def text_of(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode([i for i in ids if i not in STOP_IDS], skip_special_tokens=True)


@pytest.fixture
def driver(service: GrammarCompileService) -> V1GrammarDriver:
    return V1GrammarDriver(service, max_num_reqs=8)


def test_requests_without_grammar_cost_nothing(tokenizer: Any) -> None:
    def must_not_load() -> Any:
        raise AssertionError("tokenizer loaded for a request without grammar keys")

    driver = V1GrammarDriver(GrammarCompileService(must_not_load, TINY_VOCAB), max_num_reqs=4)
    add(driver, (0, params(), []), (1, SamplingParams(), []))
    logits = torch.randn(2, TINY_VOCAB)
    before = logits.clone()
    assert driver.apply(logits) is logits
    assert torch.equal(logits, before)
    assert driver.rows == {}


@pytest.mark.parametrize("schema", SCHEMAS, ids=["nested", "enum-array", "numbers"])
def test_sampled_outputs_are_schema_valid_json(
    driver: V1GrammarDriver, tokenizer: Any, schema: dict[str, Any]
) -> None:
    outputs: list[list[int]] = [[] for _ in range(6)]
    add(driver, *[(i, params(radix_json_schema=json.dumps(schema)), outputs[i]) for i in range(6)])
    done = simulate_decoding(driver.apply, outputs, TINY_VOCAB, steps=256, seed=7)
    assert all(done)
    for out in outputs:
        value = json.loads(text_of(tokenizer, out))  # strict: no raw control characters
        jsonschema.validate(value, schema)


def test_regex_and_choice_rows_next_to_unconstrained_rows(
    driver: V1GrammarDriver, tokenizer: Any
) -> None:
    outputs: list[list[int]] = [[] for _ in range(4)]
    add(
        driver,
        (0, params(radix_regex=r"[0-9]{2,4}-[a-z]{2}"), outputs[0]),
        (1, params(), outputs[1]),
        (2, params(radix_choice=["alpha", "beta", "gamma delta"]), outputs[2]),
        (3, params(), outputs[3]),
    )
    generator = torch.Generator().manual_seed(3)
    for _ in range(12):
        logits = torch.randn(4, TINY_VOCAB, generator=generator)
        untouched = logits[[1, 3]].clone()
        driver.apply(logits)
        assert torch.equal(logits[[1, 3]], untouched)
        for i, out in enumerate(outputs):
            if not (out and out[-1] in STOP_IDS):
                out.append(int(torch.argmax(logits[i])))
    assert re.fullmatch(r"[0-9]{2,4}-[a-z]{2}", text_of(tokenizer, outputs[0]))
    assert text_of(tokenizer, outputs[2]) in {"alpha", "beta", "gamma delta"}


def test_state_follows_removals_moves_and_swaps(driver: V1GrammarDriver) -> None:
    out_a: list[int] = []
    out_b: list[int] = []
    add(driver, (0, params(radix_regex="a+"), out_a), (1, params(), []))
    add(driver, (2, params(radix_choice=["b"]), out_b))
    row_a = driver.rows[0][0]
    row_b = driver.rows[2][0]
    swap = BatchUpdate(batch_size=3, removed=[], added=[], moved=[(0, 1, MoveDirectionality.SWAP)])
    driver.update_state(swap)
    assert driver.rows[1][0] is row_a and 0 not in driver.rows
    # Request 1 (now at 0) leaves; request b is compacted into the hole.
    driver.update_state(
        BatchUpdate(
            batch_size=2,
            removed=[0],
            added=[],
            moved=[(2, 0, MoveDirectionality.UNIDIRECTIONAL)],
        )
    )
    assert driver.rows[0][0] is row_b and driver.rows[1][0] is row_a and 2 not in driver.rows
    # A request without a grammar reusing a slot clears the old row.
    add(driver, (1, params(), []))
    assert set(driver.rows) == {0}


def test_live_output_list_drives_the_matcher(driver: V1GrammarDriver, tokenizer: Any) -> None:
    output: list[int] = []
    add(driver, (0, params(radix_regex="hello world"), output))
    driver.apply(torch.zeros(1, TINY_VOCAB))
    row = driver.rows[0][0]
    assert row.consumed == 0
    output.extend(tokenizer.encode("hello", add_special_tokens=False))  # the runner appends
    logits = torch.zeros(1, TINY_VOCAB)
    driver.apply(logits)
    assert row.consumed == len(output)
    allowed = torch.isfinite(logits[0]).nonzero().flatten().tolist()
    assert allowed and all(tokenizer.decode([t]).startswith(" ") for t in allowed)


def test_control_bytes_stay_out_of_json_strings(driver: V1GrammarDriver, tokenizer: Any) -> None:
    """Logits pushed hard toward raw control-byte tokens still yield strict JSON."""
    vocab = [tokenizer.decode([i]) for i in range(TINY_VOCAB)]
    bias = torch.tensor([8.0 if any(ord(c) < 0x20 for c in t) else 0.0 for t in vocab])
    schema = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 6}}}
    schema["required"] = ["s"]
    outputs: list[list[int]] = [[] for _ in range(8)]
    add(driver, *[(i, params(radix_json_schema=json.dumps(schema)), outputs[i]) for i in range(8)])
    assert all(simulate_decoding(driver.apply, outputs, TINY_VOCAB, steps=64, bias=bias))
    for out in outputs:
        jsonschema.validate(json.loads(text_of(tokenizer, out)), schema)


def test_compact_whitespace_by_default(driver: V1GrammarDriver, tokenizer: Any) -> None:
    """Whitespace-loving logits cannot pad compact JSON; radix_any_whitespace lets them."""
    vocab = [tokenizer.decode([i]) for i in range(TINY_VOCAB)]
    bias = torch.tensor([8.0 if t and not t.strip() else 0.0 for t in vocab])
    schema = json.dumps({"type": "object", "properties": {"k": {"type": "boolean"}}})
    outputs: list[list[int]] = [[], []]
    add(
        driver,
        (0, params(radix_json_schema=schema), outputs[0]),
        (1, params(radix_json_schema=schema, radix_any_whitespace=True), outputs[1]),
    )
    simulate_decoding(driver.apply, outputs, TINY_VOCAB, steps=40, bias=bias, greedy=True)
    compact = text_of(tokenizer, outputs[0])
    assert json.loads(compact) is not None and not re.search(r"\s", compact)
    assert re.search(r"\s", text_of(tokenizer, outputs[1]))


def test_malformed_xargs_that_bypassed_validation_force_a_stop(driver: V1GrammarDriver) -> None:
    add(driver, (0, params(radix_regex=""), []))
    row = driver.rows[0][0]
    assert row.status is RowStatus.FAILED
    logits = torch.zeros(1, TINY_VOCAB)
    driver.apply(logits)
    assert set(torch.isfinite(logits[0]).nonzero().flatten().tolist()) == set(STOP_IDS)
