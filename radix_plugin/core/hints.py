"""Per-request cache hints carried in ``vllm_xargs`` (``SamplingParams.extra_args``).

Parsed in two places: the API server validates them (a bad value is an HTTP 400 naming the
key) and the engine-core scheduler reads them. Imports neither vLLM nor torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from radix_plugin.core.workflow.graph import WorkflowHintError, parse_steps_hint
from radix_plugin.core.xargs import parse_flag

XARG_PRIORITY = "radix_priority"
XARG_PIN = "radix_pin"
XARG_WORKFLOW = "radix_workflow"
XARG_AGENT = "radix_agent"
XARG_STEPS = "radix_steps"
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
    return RequestHints(priority, pin, workflow, agent, steps)


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
