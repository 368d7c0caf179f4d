"""The SGLang endpoint's answer for each error vLLM's engine client raises.

The exception classes are the installed vLLM's (the same hierarchy in 0.32.0 and 0.33.0).
What 0.33.0 raises and 0.32.0 cannot (a grammar that failed in the engine core, a paused
engine) is built the way 0.33.0 builds it: ``RequestError.to_exception``
(``vllm/outputs.py:30-35`` in 0.33.0), ported below over 0.32.0's ``RequestError``.
"""

from __future__ import annotations

import pytest
from vllm.exceptions import (
    GenerationError,
    MaxQueuedTokensError,
    QueueOverflowError,
    RetryableRequestError,
    VLLMNotFoundError,
    VLLMValidationError,
)
from vllm.outputs import RequestError
from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

from radix_plugin.api_server.core.sglang_request import parse_generate
from radix_plugin.api_server.errors import RETRY_AFTER_S, http_error
from radix_plugin.api_server.sglang_generate import (
    Prepared,
    SequenceFailed,
    error_body,
    failure_answer,
    grammar_field,
)
from radix_plugin.api_server.sglang_output import ItemState
from radix_plugin.api_server.sglang_sampling import EngineLimits, plan_item

LIMITS = EngineLimits(max_model_len=256, radix_scheduler=True)


def to_exception_033(error: RequestError) -> Exception:
    """vLLM 0.33.0 ``RequestError.to_exception`` (vllm/outputs.py:30-35)."""
    if error.code == "validation_error":
        return VLLMValidationError(error.message)
    if error.retryable:
        return RetryableRequestError(error.message)
    return GenerationError(error.message)


def prepared(sampling: dict) -> Prepared:
    request = parse_generate({"input_ids": [1, 2, 3], "sampling_params": sampling})
    item = request.items[0]
    plan = plan_item(item, 3, LIMITS)
    state = ItemState(item, [1, 2, 3], plan.prefill_only, plan.params.max_tokens)
    return Prepared(state, plan, [1, 2, 3], grammar_field(item, "sampling_params"))


# 0.33.0: v1/core/sched/scheduler.py:3541-3544 (a grammar the engine core could not start
# or compile) and v1/engine/core.py:1808-1812 (a request sent while generation is paused).
GRAMMAR_FAILED = RequestError(
    code="validation_error",
    message="Invalid structured outputs: radix_regex: the radix scheduler compiles this "
    "grammar with the xgrammar structured-output backend, but this engine already uses "
    "'guidance'",
)
PAUSED = RequestError(
    code="engine_paused",
    message="Generation is paused. Please retry after it resumes.",
    retryable=True,
)


@pytest.mark.parametrize(
    ("error", "status", "retry"),
    [
        (to_exception_033(GRAMMAR_FAILED), 400, None),
        (to_exception_033(PAUSED), 503, RETRY_AFTER_S),
        (QueueOverflowError(), 503, RETRY_AFTER_S),  # --max-num-queued-reqs, both versions
        (MaxQueuedTokensError(), 503, RETRY_AFTER_S),
        (VLLMValidationError("bad", parameter="top_k"), 400, None),
        (VLLMNotFoundError("no such adapter"), 404, None),
        (EngineDeadError(), 503, None),  # gone for good: no Retry-After
        (to_exception_033(RequestError(code="kv_load_failed", message="x")), 500, None),
        (EngineGenerateError("x"), 500, None),
        (ValueError("bad value"), 400, None),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_status_per_exception(error: Exception, status: int, retry: int | None) -> None:
    answer = http_error(error)
    assert answer is not None
    assert (answer.status, answer.retry_after_s) == (status, retry)


def test_a_bug_is_not_classified() -> None:
    assert http_error(KeyError("x")) is None
    answer = failure_answer(SequenceFailed(prepared({}), KeyError("x")))
    assert answer.status == 500


def test_grammar_failure_is_a_400_naming_the_sglang_grammar_field() -> None:
    prep = prepared({"regex": "[0-9]+", "max_new_tokens": 4})
    failure = SequenceFailed(prep, to_exception_033(GRAMMAR_FAILED))
    body = error_body(failure)["error"]
    assert body["code"] == 400 and body["param"] == "sampling_params.regex"
    # SGLang clients sent `regex`, not the plugin's key.
    assert body["message"].startswith("sampling_params.regex: Invalid structured outputs")
    assert "radix_regex" not in body["message"] and "'guidance'" in body["message"]


def test_paused_engine_is_a_503_even_with_a_grammar() -> None:
    prep = prepared({"json_schema": '{"type": "integer"}'})
    answer = failure_answer(SequenceFailed(prep, to_exception_033(PAUSED)))
    assert (answer.status, answer.retry_after_s, answer.param) == (503, RETRY_AFTER_S, None)


def test_openai_api_answers_the_same_errors_with_400_and_503() -> None:
    """The OpenAI routes are vLLM's: a non-streaming completion's exception reaches the
    app's ``VLLMError`` handler, which answers with ``create_error_response`` (0.33.0:
    entrypoints/serve/exception_handling/handlers/vllm_error.py, exception.py:14-24). Its
    branches for these classes are the same in 0.32.0 (installed, run here) and 0.33.0
    (diffed: 0.33 only adds an ``EngineDeadError`` branch), so the 0.33-built grammar
    failure is a 400 naming the plugin's key and a paused engine a 503."""
    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response

    grammar = create_error_response(to_exception_033(GRAMMAR_FAILED)).error
    assert grammar.code == 400 and grammar.type == "BadRequestError"
    assert "radix_regex" in grammar.message
    paused = create_error_response(to_exception_033(PAUSED)).error
    assert (paused.code, paused.type) == (503, "ServiceUnavailableError")
