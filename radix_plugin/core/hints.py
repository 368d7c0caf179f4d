"""Per-request cache hints carried in ``vllm_xargs`` (``SamplingParams.extra_args``).

Parsed in two places: the API server validates them (a bad value is an HTTP 400 naming the
key) and the engine-core scheduler reads them, once per request (:class:`RequestHintsMap`).
Imports neither vLLM nor torch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from radix_plugin.core.workflow.graph import WorkflowHintError, parse_steps_hint
from radix_plugin.core.xargs import parse_flag

logger = logging.getLogger(__name__)

XARG_PRIORITY = "radix_priority"
XARG_PIN = "radix_pin"
XARG_WORKFLOW = "radix_workflow"
XARG_AGENT = "radix_agent"
XARG_STEPS = "radix_steps"


class HintError(ValueError):
    """A malformed ``radix_*`` cache hint (ValueError: vLLM turns it into HTTP 400)."""


@dataclass(frozen=True)
class RequestHints:
    priority: int = 0
    pin: bool = False
    workflow: str | None = None
    agent: str | None = None
    steps: dict[str, int] = field(default_factory=dict)


def parse_hints(extra_args: Mapping[str, Any] | None) -> RequestHints:
    """Validate and normalise the cache hints of one request (other keys are ignored)."""
    if not extra_args:
        return RequestHints()
    priority = extra_args.get(XARG_PRIORITY, 0)
    if isinstance(priority, str) and priority.lstrip("-").isdigit():
        priority = int(priority)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise HintError(f"{XARG_PRIORITY} must be an integer, got {priority!r}")
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
    return RequestHints(priority, pin, workflow, agent, steps)


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


def _optional_str(extra_args: Mapping[str, Any], key: str) -> str | None:
    value = extra_args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise HintError(f"{key} must be a string, got {value!r}")
    return str(value)
