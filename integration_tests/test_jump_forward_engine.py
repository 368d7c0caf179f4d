"""Jump-forward through RadixScheduler on a real engine: fewer steps, same valid output.

All engines run the plugin with the no-op draft proposer: ``jump_forward`` off (masking
only), on in ``verify`` mode (the model verifies forced drafts: outputs identical to plain
decoding), on in ``forced`` mode (SGLang's semantics: forced text appended in canonical
tokenization; outputs stay valid but their token ids may differ), and the engine started
with only ``--scheduler-cls`` (the default ``auto`` mode: forced runs of 4+ tokens).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from vllm import LLM, SamplingParams
from vllm.sampling_params import StructuredOutputsParams

from radix_plugin.logits.engine_core.jump_forward_drafts import NoDraftProposer
from radix_plugin.testing.engine import cpu_llm_kwargs, shutdown_llm

SCHEMA = {
    "type": "object",
    "properties": {
        "customer_identifier_code": {"type": "string", "maxLength": 6},
        "preferred_delivery_window_description": {"type": "string", "maxLength": 8},
        "subscription_tier_classification": {"enum": ["basic", "premium", "enterprise"]},
        "requires_signature_on_delivery": {"type": "boolean"},
    },
    "required": [
        "customer_identifier_code",
        "preferred_delivery_window_description",
        "subscription_tier_classification",
        "requires_signature_on_delivery",
    ],
    "additionalProperties": False,
}
SPEC = {
    "method": "custom_class",
    "model": f"{NoDraftProposer.__module__}.{NoDraftProposer.__qualname__}",
    "num_speculative_tokens": 16,
}


def _engine(jump_forward: bool, mode: str = "verify") -> LLM:
    return LLM(
        **cpu_llm_kwargs(
            "tiny",
            # Float32: jump-forward's verify pass and plain decoding must pick the same greedy
            # tokens, and bf16 rounding (which differs per CPU ISA) could flip a near-tie.
            dtype="float32",
            max_model_len=1024,
            enable_prefix_caching=True,
            scheduler_cls="radix_plugin.RadixScheduler",
            additional_config={
                "radix_plugin": {"jump_forward": jump_forward, "jump_forward_mode": mode}
            },
            speculative_config=SPEC,
            # vLLM's own JSON grammars allow free whitespace, which a random-weight model
            # emits forever; this engine-level switch is how vLLM users turn it off.
            structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
        )
    )


def _engine_with_only_the_scheduler_flag() -> LLM:
    return LLM(
        **cpu_llm_kwargs(
            "tiny",
            max_model_len=1024,
            enable_prefix_caching=True,
            scheduler_cls="radix_plugin.RadixScheduler",
            structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
        )
    )


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[Any, LLM]]:
    llms = {
        True: _engine(True),
        False: _engine(False),
        "forced": _engine(True, "forced"),
        "flag": _engine_with_only_the_scheduler_flag(),
    }
    yield llms
    for llm in llms.values():
        shutdown_llm(llm)


@contextlib.contextmanager
def _count_model_steps(llm: LLM) -> Iterator[list[int]]:
    """Count scheduler steps that run the model (instrumenting the real scheduler; steps that
    only poll while a grammar compiles schedule nothing and are not counted)."""
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    original = scheduler.schedule
    count = [0]

    def counting(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        count[0] += out.total_num_scheduled_tokens > 0
        return out

    scheduler.schedule = counting
    try:
        yield count
    finally:
        del scheduler.schedule


XARGS_PARAMS = SamplingParams(
    temperature=0.0, max_tokens=200, extra_args={"radix_json_schema": json.dumps(SCHEMA)}
)
VLLM_PARAMS = SamplingParams(
    temperature=0.0,
    max_tokens=200,
    structured_outputs=StructuredOutputsParams(json=SCHEMA),
)


def _run(
    llm: LLM, prompts: list[str], params: SamplingParams = XARGS_PARAMS
) -> tuple[int, list[list[int]], list[str]]:
    """Run to completion; returns (model steps, token ids, texts) in prompt order."""
    engine = llm.llm_engine
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, params)
    done = {}
    with _count_model_steps(llm) as steps:
        while engine.has_unfinished_requests():
            for out in engine.step():
                if out.finished:
                    done[out.request_id] = out.outputs[0]
    ordered = [done[f"r{i}"] for i in range(len(prompts))]
    assert all(o.finish_reason == "stop" for o in ordered), "grammar did not terminate"
    return steps[0], [list(o.token_ids) for o in ordered], [o.text for o in ordered]


def _assert_fewer_steps_same_valid_outputs(
    engines: dict[Any, Any], prompts: list[str], label: str, *params: Any, on: Any = True
) -> None:
    steps_on, tokens_on, texts_on = _run(engines[on], prompts, *params)
    steps_off, tokens_off, _ = _run(engines[False], prompts, *params)
    if on is True:  # verify mode: exactly plain decoding
        assert tokens_on == tokens_off
    for text in texts_on:
        jsonschema.validate(json.loads(text), SCHEMA)
    print(f"{label}, engine steps: jump-forward {steps_on}, masking only {steps_off}")
    # Over half of every output is forced key text; the drafts must remove a clear share of
    # the steps (the exact ratio is reported by the benchmark, not asserted).
    assert steps_on < 0.75 * steps_off


def test_forced_keys_cut_engine_steps_and_outputs_stay_identical_and_valid(
    engines: dict[bool, Any],
) -> None:
    prompts = [f"Customer record {i}:" for i in range(6)]
    _assert_fewer_steps_same_valid_outputs(engines, prompts, "radix xargs")


def test_vllm_structured_outputs_also_jump_forward(engines: dict[bool, Any]) -> None:
    prompts = [f"Order {i}:" for i in range(4)]
    _assert_fewer_steps_same_valid_outputs(engines, prompts, "vLLM structured outputs", VLLM_PARAMS)


@pytest.mark.parametrize("params", [XARGS_PARAMS, VLLM_PARAMS], ids=["xargs", "vllm"])
def test_forced_mode_cuts_more_steps_and_stays_valid(engines: dict[Any, Any], params: Any) -> None:
    prompts = [f"Customer record {i}:" for i in range(6)]
    _assert_fewer_steps_same_valid_outputs(engines, prompts, "forced", params, on="forced")


@pytest.mark.parametrize("on", [True, "forced"], ids=["verify", "forced"])
def test_requests_without_grammar_are_untouched(engines: dict[Any, Any], on: Any) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    got = engines[on].generate(["plain text prompt"], params, use_tqdm=False)
    off = engines[False].generate(["plain text prompt"], params, use_tqdm=False)
    assert got[0].outputs[0].token_ids == off[0].outputs[0].token_ids


EBNF = '''root ::= "Shipment " id " is " state "."
id ::= [A-Z] [A-Z] [0-9] [0-9] [0-9]
state ::= "delivered" | "delayed in transit" | "returned to sender"'''
EBNF_RE = r"Shipment [A-Z]{2}[0-9]{3} is (delivered|delayed in transit|returned to sender)\."


def _xargs_cases() -> list[tuple[dict[str, Any], Any]]:
    """(vllm_xargs, check(text) -> bool) for several schemas, a regex, an EBNF and a choice."""
    from test_structured_logits import CHOICES, REGEX, SCHEMAS

    def schema_check(schema: dict[str, Any]) -> Any:
        def check(text: str) -> bool:
            jsonschema.validate(json.loads(text), schema)
            return True

        return check

    cases: list[tuple[dict[str, Any], Any]] = [
        ({"radix_json_schema": json.dumps(s)}, schema_check(s)) for s in SCHEMAS
    ]
    cases.append(({"radix_regex": REGEX}, lambda t: re.fullmatch(REGEX, t) is not None))
    cases.append(({"radix_ebnf": EBNF}, lambda t: re.fullmatch(EBNF_RE, t) is not None))
    cases.append(({"radix_choice": CHOICES}, lambda t: t in CHOICES))
    return cases


def _vllm_cases() -> list[tuple[StructuredOutputsParams, Any]]:
    """The same kinds as vLLM's own ``structured_outputs`` (what ``response_format`` and
    the ``structured_outputs`` request field become): json, regex, grammar and choice."""
    from test_structured_logits import CHOICES, REGEX, SCHEMAS

    def schema_check(schema: dict[str, Any]) -> Any:
        return lambda t: jsonschema.validate(json.loads(t), schema) is None

    cases: list[tuple[StructuredOutputsParams, Any]] = [
        (StructuredOutputsParams(json=s), schema_check(s)) for s in SCHEMAS
    ]
    cases.append((StructuredOutputsParams(regex=REGEX), lambda t: re.fullmatch(REGEX, t)))
    cases.append((StructuredOutputsParams(grammar=EBNF), lambda t: re.fullmatch(EBNF_RE, t)))
    cases.append((StructuredOutputsParams(choice=CHOICES), lambda t: t in CHOICES))
    return cases


def _grammar_requests(source: str, batch: int) -> list[tuple[SamplingParams, Any]]:
    """``batch`` greedy requests cycling through every grammar kind of ``source`` (vLLM's
    ``structured_outputs`` or the plugin's ``radix_*`` xargs), each with its output check."""
    if source == "structured_outputs":
        cases = [({"structured_outputs": so}, check) for so, check in _vllm_cases()]
    else:
        cases = [({"extra_args": x}, check) for x, check in _xargs_cases()]
    picks = [cases[i % len(cases)] for i in range(batch)]
    return [(SamplingParams(temperature=0.0, max_tokens=160, **kw), check) for kw, check in picks]


@pytest.mark.parametrize("source", ["structured_outputs", "radix_xargs"])
@pytest.mark.parametrize("on", [True, "forced", "flag"], ids=["verify", "forced", "auto"])
@pytest.mark.parametrize("batch", [1, 32])
def test_every_grammar_kind_stays_valid_with_jump_forward(
    engines: dict[Any, Any], batch: int, on: Any, source: str
) -> None:
    requests = _grammar_requests(source, batch)
    params = [p for p, _ in requests]
    prompts = [f"Item {i}:" for i in range(batch)]
    got = engines[on].generate(prompts, params, use_tqdm=False)
    off = engines[False].generate(prompts, params, use_tqdm=False)
    for (_, check), a, b in zip(requests, got, off, strict=True):
        assert a.outputs[0].finish_reason == "stop"
        assert check(a.outputs[0].text)
        if on is True:
            assert a.outputs[0].token_ids == b.outputs[0].token_ids


def test_a_request_can_choose_its_jump_forward_mode(engines: dict[Any, Any]) -> None:
    """``radix_jump_forward`` per request: ``verify`` on a forced-mode engine decodes exactly
    as masking only, in fewer steps; ``off`` takes one model step per output token."""
    prompts = [f"Customer record {i}:" for i in range(4)]
    extra = XARGS_PARAMS.extra_args
    verify = SamplingParams(
        temperature=0.0, max_tokens=200, extra_args={**extra, "radix_jump_forward": "verify"}
    )
    off = SamplingParams(
        temperature=0.0, max_tokens=200, extra_args={**extra, "radix_jump_forward": "off"}
    )
    steps_plain, tokens_plain, _ = _run(engines[False], prompts)
    steps_verify, tokens_verify, _ = _run(engines["forced"], prompts, verify)
    steps_off, tokens_off, _ = _run(engines["forced"], prompts, off)
    assert tokens_verify == tokens_plain == tokens_off
    assert steps_verify < 0.75 * steps_plain
    assert steps_off >= max(len(t) for t in tokens_off)


def test_scheduler_flag_alone_turns_jump_forward_on(engines: dict[Any, Any]) -> None:
    """No speculative config written: the plugin supplies it (CPU), and steps drop."""
    spec = engines["flag"].llm_engine.vllm_config.speculative_config
    assert spec is not None and spec.method == "custom_class"
    prompts = [f"Customer record {i}:" for i in range(6)]
    for params in (XARGS_PARAMS, VLLM_PARAMS):
        _assert_fewer_steps_same_valid_outputs(engines, prompts, "one flag", params, on="flag")


FREE_TEXT_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 24},
        "notes": {"type": "string", "minLength": 4, "maxLength": 40},
    },
    "required": ["title", "notes"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("on", [False, "forced"], ids=["masking", "forced"])
def test_vllm_json_requests_parse_strictly_with_the_plugin(
    engines: dict[Any, Any], on: Any
) -> None:
    """vLLM's own xgrammar JSON grammars let raw control bytes into length-bounded strings:
    these 16 seeded requests on plain vLLM 0.32 gave 3 outputs `json.loads` rejects (raw
    \\x03, \\x10, \\x00 inside strings). With the plugin's scheduler every output parses."""
    params = [
        SamplingParams(
            temperature=1.0,
            seed=i,
            max_tokens=120,
            structured_outputs=StructuredOutputsParams(json=FREE_TEXT_SCHEMA),
        )
        for i in range(16)
    ]
    prompts = [f"Note {i}:" for i in range(16)]
    outs = engines[on].generate(prompts, params, use_tqdm=False)
    for out in outs:
        assert out.outputs[0].finish_reason == "stop"
        jsonschema.validate(json.loads(out.outputs[0].text), FREE_TEXT_SCHEMA)
