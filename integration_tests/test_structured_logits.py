"""Per-request grammars through `vllm_xargs` on a real vLLM engine (CPU, tiny random model).

A random-weight model is the adversarial case for constrained decoding: nothing but the mask
keeps its output well formed. Every output must therefore parse (strict `json.loads`) and
validate, match its regex or be one of its choices, at batch sizes 1 and 32; requests without
grammar keys must decode exactly as they would without them; and a bad grammar must fail only
its own request, with a clear message.

Schemas bound every string, number and array: under a random model an unbounded string would
simply run to `max_tokens`, which tests the model, not the grammar.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

pytestmark = pytest.mark.engine

FQCN = "radix_plugin.logits:RadixGrammarLogitsProcessor"
MAX_TOKENS = 160

SCHEMAS: list[dict[str, Any]] = [
    {  # nested objects
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 12},
                    # Not "format": "email": xgrammar 0.2.8 then ignores maxLength.
                    "email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,6}\\.com$"},
                },
                "required": ["name"],
            },
            "active": {"type": "boolean"},
        },
        "required": ["user", "active"],
    },
    {  # arrays of enums
        "type": "object",
        "properties": {
            "colors": {
                "type": "array",
                "items": {"enum": ["red", "green", "blue"]},
                "minItems": 1,
                "maxItems": 4,
            }
        },
        "required": ["colors"],
    },
    {  # numbers
        "type": "object",
        "properties": {
            "count": {"type": "integer", "minimum": -5, "maximum": 500},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["count", "ratio"],
    },
    {  # array of objects with a regex-constrained string
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}$"},
                "ok": {"type": "null"},
            },
            "required": ["id", "ok"],
        },
        "maxItems": 3,
    },
]
REGEX = r"(\+1 )?[0-9]{3}-[0-9]{4}( ext [0-9]{1,3})?"
CHOICES = ["positive", "negative", "neutral", 'quoted "choice"']
PROMPTS = ["Describe the user:", "Return a JSON object.", "Hello", "Q: what is 2+2? A:"]


@pytest.fixture(scope="module")
def llm() -> Iterator[Any]:
    from vllm import LLM

    from radix_plugin.testing.engine import cpu_llm_kwargs, shutdown_llm

    # Explicit flag on purpose: the entry point may or may not be installed in the test
    # environment, and the processor makes sure only one instance per engine is active.
    # Float32: plain rows' greedy tokens are compared across batch compositions, and bf16
    # rounding (which differs per CPU ISA) could flip a near-tie.
    engine = LLM(
        **cpu_llm_kwargs("tiny", dtype="float32", max_num_seqs=32, logits_processors=[FQCN])
    )
    yield engine
    shutdown_llm(engine)


def _params(index: int, **extra_args: Any) -> Any:
    """Alternate greedy and seeded sampling so a batch explores different paths."""
    from vllm import SamplingParams

    sampled = index % 2 == 1
    return SamplingParams(
        max_tokens=MAX_TOKENS,
        temperature=1.0 if sampled else 0.0,
        seed=index if sampled else None,
        extra_args=extra_args or None,
    )


def _generate(llm: Any, params: list[Any]) -> list[Any]:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(params))]
    return [out.outputs[0] for out in llm.generate(prompts, params, use_tqdm=False)]


def _check_json(completion: Any, schema: dict[str, Any]) -> None:
    assert completion.finish_reason == "stop", completion.text
    jsonschema.validate(json.loads(completion.text), schema)


@pytest.mark.parametrize("schema_index", range(len(SCHEMAS)))
def test_json_schema_batch_of_one(llm: Any, schema_index: int) -> None:
    schema = SCHEMAS[schema_index]
    for i in range(2):  # one greedy, one sampled request, each alone in the batch
        (completion,) = _generate(llm, [_params(i, radix_json_schema=json.dumps(schema))])
        _check_json(completion, schema)


def test_mixed_batch_of_32(llm: Any) -> None:
    kinds: list[tuple[str, Any]] = []
    params = []
    for i in range(32):
        kind = i % 7
        if kind < len(SCHEMAS):
            kinds.append(("json", SCHEMAS[kind]))
            params.append(_params(i, radix_json_schema=json.dumps(SCHEMAS[kind])))
        elif kind == len(SCHEMAS):
            kinds.append(("regex", REGEX))
            params.append(_params(i, radix_regex=REGEX))
        elif kind == len(SCHEMAS) + 1:
            kinds.append(("choice", CHOICES))
            params.append(_params(i, radix_choice=CHOICES))
        else:
            kinds.append(("plain", None))
            params.append(_params(i))
    completions = _generate(llm, params)
    for (kind, constraint), completion in zip(kinds, completions, strict=True):
        if kind == "json":
            _check_json(completion, constraint)
        elif kind == "regex":
            assert completion.finish_reason == "stop"
            assert re.fullmatch(REGEX, completion.text), completion.text
        elif kind == "choice":
            assert completion.finish_reason == "stop"
            assert completion.text in CHOICES
    # The random model, unconstrained, does not produce JSON by accident.
    plain = [c.text for (kind, _), c in zip(kinds, completions, strict=True) if kind == "plain"]
    assert not any(_is_json(text) for text in plain)


@pytest.mark.parametrize("batch_size", [1, 32])
def test_regex_and_choice(llm: Any, batch_size: int) -> None:
    regex_params = [_params(i, radix_regex=REGEX) for i in range(batch_size)]
    for completion in _generate(llm, regex_params):
        assert re.fullmatch(REGEX, completion.text), completion.text
    choice_params = [_params(i, radix_choice=CHOICES) for i in range(batch_size)]
    for completion in _generate(llm, choice_params):
        assert completion.text in CHOICES


def test_requests_without_keys_decode_exactly_as_before(llm: Any) -> None:
    """Same batch shapes twice: 8 plain rows next to 8 plain rows, then next to 8 grammar
    rows. With ignore_eos every row runs the same number of steps, so only the processor's
    masking differs between runs; the plain rows' greedy tokens must be identical."""
    from vllm import SamplingParams

    def run(neighbour_args: dict[str, Any] | None) -> tuple[list[list[int]], list[str]]:
        plain = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
        neighbour = SamplingParams(
            max_tokens=24, temperature=0.0, ignore_eos=True, extra_args=neighbour_args
        )
        prompts = [f"{PROMPTS[i % 4]} {i}" for i in range(16)]
        outs = llm.generate(prompts, [plain] * 8 + [neighbour] * 8, use_tqdm=False)
        return (
            [list(o.outputs[0].token_ids) for o in outs[:8]],
            [o.outputs[0].text for o in outs[8:]],
        )

    baseline, _ = run(None)
    with_grammar, constrained = run({"radix_regex": "[a-z]+( [a-z]+)*"})
    assert with_grammar == baseline
    # The neighbours really were constrained (up to where ignore_eos let them run past EOS).
    assert all(re.match(r"[a-z]+", text) for text in constrained)


def test_bad_grammar_fails_only_its_request(llm: Any) -> None:
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    schema = SCHEMAS[2]
    good = _params(0, radix_json_schema=json.dumps(schema))
    llm.enqueue(["Count:"], [good], use_tqdm=False)
    llm.llm_engine.step()  # the good request is now running
    bad_inputs = {
        "radix_json_schema": '{"type": "object", "properties": {"a": {"type": "strnig"}}}',
        "radix_regex": "([0-9]+",
        "radix_ebnf": "root ::= undefined_rule",
    }
    for key, value in bad_inputs.items():
        with pytest.raises(VLLMValidationError, match=key):
            llm.enqueue(["x"], [SamplingParams(extra_args={key: value})], use_tqdm=False)
    (result,) = llm.wait_for_completion(use_tqdm=False)
    _check_json(result.outputs[0], schema)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
