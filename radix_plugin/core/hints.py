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


def _optional_str(extra_args: Mapping[str, Any], key: str) -> str | None:
    value = extra_args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise HintError(f"{key} must be a string, got {value!r}")
    return str(value)
