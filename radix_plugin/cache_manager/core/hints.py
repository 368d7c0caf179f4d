"""Per-request cache hints carried in ``vllm_xargs`` (``SamplingParams.extra_args``).

Parsed in two places: the API server validates them (a bad value is an HTTP 400 naming the
key) and the engine-core scheduler reads them, once per request (:class:`RequestHintsMap`).
Imports neither vLLM nor torch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from radix_plugin.cache_manager.core.workflow.graph import WorkflowHintError, parse_steps_hint
from radix_plugin.xargs import parse_flag

logger = logging.getLogger(__name__)

XARG_PRIORITY = "radix_priority"
XARG_PIN = "radix_pin"
XARG_WORKFLOW = "radix_workflow"
XARG_AGENT = "radix_agent"
XARG_STEPS = "radix_steps"
XARG_UNPIN = "radix_unpin"
XARG_PIN_TTL = "radix_pin_ttl"
XARG_SESSION_END = "radix_session_end"
XARG_SESSION_ID = "session_id"
"""vLLM's own session id, also accepted in ``vllm_xargs`` (the API server moves it from there
onto the request; offline ``LLM`` users may only have this spelling)."""
MAX_PIN_TTL_S = 30 * 24 * 3600.0
"""Longest ``radix_pin_ttl`` (and ``pin_ttl_s``) accepted: 30 days."""
# Priorities are compared, never computed with: a 32-bit range is plenty and keeps a
# 400-digit number from being parsed at all (int() of a long digit string is quadratic).
MAX_PRIORITY = 2**31 - 1
MAX_NAME_CHARS = 256


class HintError(ValueError):
    """A malformed ``radix_*`` cache hint (ValueError: vLLM turns it into HTTP 400)."""


@dataclass(frozen=True)
class RequestHints:
    priority: int = 0
    pin: bool = False
    workflow: str | None = None
    agent: str | None = None
    steps: dict[str, int] = field(default_factory=dict)
    unpin: bool = False
    pin_ttl_s: float | None = None
    """Seconds the pin lasts; ``None``: the ``pin_ttl_s`` setting decides."""
    session_end: bool | None = None
    """``radix_session_end``: true, this is the conversation's last turn (its tail can go);
    false, a next turn follows (keep it); ``None``, the client does not say."""
    session: str | None = None
    """A ``session_id`` given in ``vllm_xargs`` (the engine prefers the request's own)."""


def parse_hints(extra_args: Mapping[str, Any] | None) -> RequestHints:
    """Validate and normalise the cache hints of one request (other keys are ignored)."""
    if not extra_args:
        return RequestHints()
    priority = _priority(extra_args.get(XARG_PRIORITY, 0))
    pin = parse_flag(extra_args.get(XARG_PIN, False))
    if pin is None:
        raise HintError(f"{XARG_PIN} must be a boolean, got {extra_args[XARG_PIN]!r}")
    workflow = _optional_str(extra_args, XARG_WORKFLOW)
    agent = _optional_str(extra_args, XARG_AGENT)
    steps: dict[str, int] = {}
    if XARG_STEPS in extra_args:
        if workflow is None:
            raise HintError(f"{XARG_STEPS} needs {XARG_WORKFLOW} (which workflow it describes)")
        try:
            steps = parse_steps_hint(extra_args[XARG_STEPS])
        except WorkflowHintError as exc:
            raise HintError(str(exc)) from None
    unpin, pin_ttl_s = _unpin_and_ttl(extra_args, pin)
    session_end = None
    if XARG_SESSION_END in extra_args:
        session_end = parse_flag(extra_args[XARG_SESSION_END])
        if session_end is None:
            raise HintError(
                f"{XARG_SESSION_END} must be a boolean, got {_short(extra_args[XARG_SESSION_END])}"
            )
    session = extra_args.get(XARG_SESSION_ID)
    if not isinstance(session, str) or not 0 < len(session) <= MAX_NAME_CHARS:
        session = None  # vLLM's field, not ours to refuse: what it ignores, we ignore
    return RequestHints(
        priority, pin, workflow, agent, steps, unpin, pin_ttl_s, session_end, session
    )


def request_session(request: Any, hints: RequestHints) -> str | None:
    """The session an engine request belongs to: vLLM's ``session_id`` (chat body field,
    ``X-Session-ID`` header or ``vllm_xargs``), else one given in the hints."""
    session = getattr(request, "session_id", None)
    if isinstance(session, str) and session:
        return session[:MAX_NAME_CHARS]
    return hints.session


def request_hints(request: Any) -> RequestHints:
    """The hints of an engine request; malformed ones (normally rejected with HTTP 400 by the
    API server) are ignored rather than failing the engine."""
    try:
        return parse_hints(getattr(request.sampling_params, "extra_args", None))
    except HintError as exc:
        logger.warning("ignoring cache hints of request %s: %s", request.request_id, exc)
        return RequestHints()


class RequestHintsMap:
    """Hints of the live requests, parsed once when each is added (the scheduler reads them
    for every scheduled request on every step, so parsing there would repeat per step)."""

    def __init__(self) -> None:
        self._hints: dict[str, RequestHints] = {}

    def __len__(self) -> int:
        return len(self._hints)

    def add(self, request: Any) -> RequestHints:
        """Parse and keep ``request``'s hints; a request id seen before keeps its hints."""
        hints = self._hints.get(request.request_id)
        if hints is None:
            hints = self._hints[request.request_id] = request_hints(request)
        return hints

    def get(self, request: Any) -> RequestHints:
        """The hints kept for ``request``; parsed (and not kept) for a request never added,
        which only happens when the block pool runs without the radix scheduler."""
        hints = self._hints.get(request.request_id)
        return request_hints(request) if hints is None else hints

    def drop(self, request_id: str) -> None:
        """The request finished: forget its hints."""
        self._hints.pop(request_id, None)


def _priority(value: Any) -> int:
    if isinstance(value, str) and len(value) <= 12 and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise HintError(f"{XARG_PRIORITY} must be an integer, got {_short(value)}")
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        raise HintError(f"{XARG_PRIORITY} must be between {-MAX_PRIORITY} and {MAX_PRIORITY}")
    return value


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: error messages echo hostile values bounded."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**limit else "<huge int>"
    return text if len(text) <= limit else text[:limit] + "..."


def _optional_str(extra_args: Mapping[str, Any], key: str) -> str | None:
    value = extra_args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise HintError(f"{key} must be a string, got {_short(value)}")
    if isinstance(value, int):
        value = _int_name(key, value)
    if not value or len(value) > MAX_NAME_CHARS:
        raise HintError(f"{key} must be 1 to {MAX_NAME_CHARS} characters, got {_short(value)}")
    return value


def _int_name(key: str, value: int) -> str:
    """An integer id (clients send numbers) as text, refusing ones too long to be a name."""
    if abs(value) >= 10**MAX_NAME_CHARS:
        raise HintError(f"{key} must be 1 to {MAX_NAME_CHARS} characters, got <huge int>")
    return str(value)


def _unpin_and_ttl(extra_args: Mapping[str, Any], pin: bool) -> tuple[bool, float | None]:
    """``radix_unpin`` (a boolean) and ``radix_pin_ttl`` (seconds, only with ``radix_pin``)."""
    unpin = parse_flag(extra_args.get(XARG_UNPIN, False))
    if unpin is None:
        raise HintError(f"{XARG_UNPIN} must be a boolean, got {extra_args[XARG_UNPIN]!r}")
    if unpin and pin:
        raise HintError(f"{XARG_UNPIN} and {XARG_PIN} cannot both be set on one request")
    if XARG_PIN_TTL not in extra_args:
        return unpin, None
    raw = extra_args[XARG_PIN_TTL]
    ttl: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        ttl = float(raw)
    elif isinstance(raw, str):
        try:
            ttl = float(raw)
        except ValueError:
            ttl = None
    if ttl is None or not math.isfinite(ttl) or not 0 < ttl <= MAX_PIN_TTL_S:
        raise HintError(
            f"{XARG_PIN_TTL} must be a number of seconds in (0, {MAX_PIN_TTL_S:.0f}], got {raw!r}"
        )
    if not pin:
        raise HintError(f"{XARG_PIN_TTL} needs {XARG_PIN} (the pin it limits)")
    return unpin, ttl
