"""The HTTP answer for an error from vLLM's engine client, on the SGLang endpoint.

``AsyncLLM.generate`` raises where a request cannot run; these are the classes it raises,
the same hierarchy in vLLM 0.32.0 and 0.33.0 (``vllm/exceptions.py``,
``vllm/v1/engine/exceptions.py``), and the status each gets here:

- ``VLLMValidationError`` / other ``VLLMClientError``: 400 (404 for ``VLLMNotFoundError``).
  0.33.0 raises it for a grammar that failed to compile or start in the engine core
  (``RequestError("validation_error")``, ``v1/outputs.py`` ``to_exception``); both versions
  for their own admission checks.
- ``GracefulHTTPError``: its own status; the overload rejections (``QueueOverflowError``,
  ``MaxQueuedTokensError``: ``--max-num-queued-reqs`` / ``--max-num-queued-tokens``, both
  versions) are 503.
- ``RetryableRequestError``: 503. 0.33.0 raises it for a request sent while generation is
  paused (``RequestError("engine_paused", retryable=True)``); 0.32.0 queues such requests.
- ``EngineDeadError``: 503 without ``Retry-After``: the engine core is gone, this server will
  not recover (vLLM's watchdog stops it), another instance should take the request.
- ``GenerationError`` (not retryable), ``EngineGenerateError``: 500, a failure inside vLLM.
- ``ValueError``: 400 (vLLM's older validation paths).

Every 503 that the same server can serve later carries ``Retry-After``.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

RETRY_AFTER_S = 1
"""Seconds a client should wait before retrying an overloaded or paused engine."""


@dataclass(frozen=True)
class HttpError:
    status: int
    message: str
    err_type: str
    retry_after_s: int | None = None
    param: str | None = None


def http_error(exc: BaseException) -> HttpError | None:
    """The answer for ``exc``, or None for an exception that is a bug (let it surface)."""
    from vllm.exceptions import (
        GenerationError,
        GracefulHTTPError,
        RetryableRequestError,
        VLLMClientError,
        VLLMNotFoundError,
        VLLMValidationError,
    )
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    message = str(exc)
    if isinstance(exc, VLLMValidationError):
        return HttpError(400, message, "BadRequestError", param=exc.parameter)
    if isinstance(exc, VLLMNotFoundError):
        return HttpError(404, message, "NotFoundError")
    if isinstance(exc, VLLMClientError):
        return HttpError(400, message, "BadRequestError")
    if isinstance(exc, GracefulHTTPError):
        status = int(exc.http_status)
        retry = RETRY_AFTER_S if status == HTTPStatus.SERVICE_UNAVAILABLE else None
        return HttpError(status, exc.message, HTTPStatus(status).phrase, retry)
    if isinstance(exc, RetryableRequestError):
        return HttpError(503, message, "ServiceUnavailableError", RETRY_AFTER_S)
    if isinstance(exc, EngineDeadError):
        return HttpError(503, "The engine is not running; retry on another instance.", "EngineDead")
    if isinstance(exc, (GenerationError, EngineGenerateError)):
        return HttpError(500, message, "InternalServerError")
    if isinstance(exc, ValueError):
        return HttpError(400, message, "BadRequestError")
    return None
