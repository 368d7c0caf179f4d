"""A scheduler-side grammar on a manager latched to another backend, and one that cannot
start: never an exception in the engine core.

The radix scheduler attaches xgrammar grammars in ``add_request`` (EngineCore's busy loop).
vLLM 0.32.0's manager compiles every request with the backend it latched first, so the
grammar runs on that backend; 0.33.0's ``grammar_init`` raises ``VLLMValidationError`` for a
request of another backend (``v1/structured_output/__init__.py:139-147``), so the request is
failed through vLLM's own compile-error path. Either way the scheduler keeps serving. Real
``RadixScheduler``, real ``StructuredOutputManager`` (0.32.0, installed); the 0.33.0 cases
run the 0.33 branch (``vllm.__version__`` set to it) and replay its ``backend_name`` and
its ``grammar_init`` raise, which cannot run here.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import vllm
from vllm.exceptions import VLLMValidationError
from vllm.sampling_params import StructuredOutputsParams
from vllm.v1.engine import FinishReason
from vllm.v1.request import RequestStatus

from radix_plugin.compat import latched_grammar_backend
from radix_plugin.config import JUMP_FORWARD_PROPOSER
from radix_plugin.testing.scheduler import build_scheduler, make_request, runner_output, step

SPEC = {"method": "custom_class", "model": JUMP_FORWARD_PROPOSER, "num_speculative_tokens": 4}
PROMPT = list(range(40))


@pytest.fixture
def scheduler() -> Any:
    return build_scheduler(radix={}, speculative_config=SPEC)


def _finish_reasons(scheduler: Any, max_steps: int = 30, token: int = 7) -> dict[str, Any]:
    """Step (the model samples ``token``) until every request finished; each request's
    finish reason."""
    reasons: dict[str, Any] = {}
    for _ in range(max_steps):
        if not scheduler.has_unfinished_requests():
            return reasons
        out = scheduler.schedule()
        engine_outputs = scheduler.update_from_output(out, runner_output(scheduler, out, token))
        for outputs in engine_outputs.values():
            for o in outputs.outputs:
                if o.finish_reason is not None:
                    reasons[o.request_id] = o.finish_reason
    raise AssertionError("requests still unfinished")


def _latch_guidance(scheduler: Any) -> None:
    """What EngineCore.preprocess_add_request does for a vLLM request that resolved to
    guidance (``auto`` falls back to it for constraints xgrammar rejects): the manager
    latches its backend on that first ``grammar_init``."""
    params = StructuredOutputsParams(regex="[a-z]+")
    params._backend = "guidance"
    first = make_request("vllm-guidance", PROMPT, structured_outputs=params)
    scheduler.structured_output_manager.grammar_init(first)


def test_latched_backend_is_read_in_each_versions_way(scheduler: Any) -> None:
    manager = scheduler.structured_output_manager
    assert latched_grammar_backend(manager) is None
    _latch_guidance(scheduler)
    assert latched_grammar_backend(manager) == "guidance"  # 0.32.0: the backend's class
    manager.backend_name = "outlines"  # 0.33.0 records the name (__init__.py:193)
    assert latched_grammar_backend(manager) == "outlines"


def _wait_compiled(request: Any) -> None:
    deadline = time.monotonic() + 60  # compiled in the manager's pool
    while not request.structured_output_request.is_grammar_ready:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_on_0_32_a_guidance_engine_runs_the_radix_grammar_on_guidance(scheduler: Any) -> None:
    """0.32.0 compiles it with the latched backend; jump-forward is off for it."""
    _latch_guidance(scheduler)
    radix = make_request("radix", PROMPT, {"radix_regex": "[0-9]{3}"}, max_tokens=3)
    scheduler.add_request(radix)  # must not raise in the busy loop
    _wait_compiled(radix)
    assert type(radix.structured_output_request.grammar).__name__ == "GuidanceGrammar"
    digit = scheduler.structured_output_manager.tokenizer.convert_tokens_to_ids("7")
    assert _finish_reasons(scheduler, token=digit)["radix"] == FinishReason.LENGTH


@pytest.fixture
def on_033(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 0.33.0 branches of ``compat`` (selected by the running version)."""
    monkeypatch.setattr(vllm, "__version__", "0.33.0")


def test_on_0_33_a_radix_grammar_on_a_guidance_engine_fails_only_its_request(
    scheduler: Any, on_033: None
) -> None:
    _latch_guidance(scheduler)
    scheduler.structured_output_manager.backend_name = "guidance"  # 0.33.0 records it
    radix = make_request("radix", PROMPT, {"radix_regex": "[0-9]{3}"})
    plain = make_request("plain", PROMPT)
    scheduler.add_request(radix)  # must not raise in the busy loop
    scheduler.add_request(plain)
    assert radix.status == RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR
    error = radix.structured_output_request.grammar
    assert isinstance(error, VLLMValidationError)
    assert "radix_regex" in str(error) and "'guidance'" in str(error)
    reasons = _finish_reasons(scheduler)
    assert reasons["radix"] == FinishReason.ERROR
    assert reasons["plain"] == FinishReason.LENGTH
    # The engine goes on: a new request runs to completion.
    scheduler.add_request(make_request("after", PROMPT))
    assert _finish_reasons(scheduler)["after"] == FinishReason.LENGTH


def test_grammar_init_raising_as_in_0_33_fails_the_request(
    scheduler: Any, monkeypatch: pytest.MonkeyPatch, on_033: None
) -> None:
    """0.33.0's grammar_init raises on a backend mismatch (its message, verbatim)."""
    manager = scheduler.structured_output_manager

    def grammar_init_033(request: Any) -> None:
        raise VLLMValidationError(
            "Structured output processing only supports one backend per engine. "
            "The engine is already using 'guidance', but this request resolved to "
            "'xgrammar'. Configure `structured_outputs_config.backend` explicitly or use "
            "schemas supported by the initialized backend."
        )

    monkeypatch.setattr(manager, "grammar_init", grammar_init_033)
    radix = make_request("radix", PROMPT, {"radix_json_schema": '{"type": "integer"}'})
    scheduler.add_request(radix)
    assert "only supports one backend" in str(radix.structured_output_request.grammar)
    assert _finish_reasons(scheduler)["radix"] == FinishReason.ERROR


def test_0_33_backend_name_is_checked_before_grammar_init(
    scheduler: Any, monkeypatch: pytest.MonkeyPatch, on_033: None
) -> None:
    manager = scheduler.structured_output_manager
    manager.backend_name = "lm-format-enforcer"
    calls: list[Any] = []
    monkeypatch.setattr(manager, "grammar_init", calls.append)
    radix = make_request("radix", PROMPT, {"radix_ebnf": 'root ::= "yes" | "no"'})
    scheduler.add_request(radix)
    assert calls == []
    assert "radix_ebnf" in str(radix.structured_output_request.grammar)
    assert _finish_reasons(scheduler)["radix"] == FinishReason.ERROR


def test_an_xgrammar_engine_compiles_and_runs_the_grammar(scheduler: Any) -> None:
    radix = make_request("radix", PROMPT, {"radix_regex": "[0-9]{3}"}, max_tokens=3)
    scheduler.add_request(radix)
    assert latched_grammar_backend(scheduler.structured_output_manager) == "xgrammar"
    _wait_compiled(radix)
    digit = scheduler.structured_output_manager.tokenizer.convert_tokens_to_ids("7")
    assert "radix" in step(scheduler, token=digit).num_scheduled_tokens
    assert type(radix.structured_output_request.grammar).__name__ == "XgrammarGrammar"
    assert radix.status == RequestStatus.RUNNING
