"""The Agent Step Graph: which agents run at which step of a workflow."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class WorkflowHintError(ValueError):
    """A malformed workflow description or hint; the message names the bad value."""


@dataclass(frozen=True)
class AgentStepGraph:
    """A workflow as a sequence of steps, each running one or more agents.

    ``loop=True`` means the sequence repeats (an agent loop such as plan, act, reflect), so an
    agent absent from the rest of this round is still due in the next one, and a client may
    keep counting steps across rounds (step ``n + k`` of an ``n``-step loop is step ``k``).
    """

    steps: tuple[frozenset[str], ...]
    loop: bool = False

    @classmethod
    def from_steps(cls, steps: Iterable[Iterable[str] | str], loop: bool = False) -> AgentStepGraph:
        parsed = []
        for i, step in enumerate(steps):
            agents = frozenset([step] if isinstance(step, str) else step)
            if not agents or not all(isinstance(a, str) and a for a in agents):
                raise WorkflowHintError(f"step {i} must name at least one agent, got {step!r}")
            parsed.append(agents)
        if not parsed:
            raise WorkflowHintError("a workflow needs at least one step")
        return cls(tuple(parsed), loop)

    def steps_to_execution(self, current: int) -> dict[str, int]:
        """Agent -> steps until it next runs, counting from step ``current`` (0 = running now).

        Agents that never run again are left out (the server treats them as far away).
        """
        n = len(self.steps)
        current = self._index(current)
        horizon = n if self.loop else n - current
        out: dict[str, int] = {}
        for k in range(horizon):
            for agent in self.steps[(current + k) % n]:
                out.setdefault(agent, k)
        return out

    def hints(self, workflow_id: str, current: int, agent: str) -> dict[str, Any]:
        """``vllm_xargs`` for the request that ``agent`` sends at step ``current``."""
        current = self._index(current)
        if agent not in self.steps[current]:
            raise WorkflowHintError(
                f"agent {agent!r} does not run at step {current}; "
                f"agents there: {sorted(self.steps[current])}"
            )
        return {
            "radix_workflow": str(workflow_id),
            "radix_agent": agent,
            "radix_steps": json.dumps(self.steps_to_execution(current), sort_keys=True),
        }

    def _index(self, current: int) -> int:
        """The step ``current`` names: wrapped around in a loop, else it must exist."""
        n = len(self.steps)
        if self.loop:
            if current < 0:
                raise WorkflowHintError(f"step {current} is negative")
            return current % n
        if not 0 <= current < n:
            raise WorkflowHintError(f"step {current} is outside this workflow's 0..{n - 1}")
        return current


MAX_STEPS_HINT_CHARS = 64 * 1024
MAX_STEPS_HINT_AGENTS = 1024
MAX_AGENT_CHARS = 256
MAX_STEPS = 2**31 - 1


def parse_steps_hint(raw: Any) -> dict[str, int]:
    """Decode ``radix_steps`` (a JSON object of agent -> non-negative int, or a mapping).

    Bounded: the text, the number of agents and each name are capped, and the object must be
    flat, so a hostile value is refused before ``json`` recurses into it.
    """
    if isinstance(raw, str):
        raw = _loads_flat(raw)
    if not isinstance(raw, Mapping):
        raise WorkflowHintError(
            f"radix_steps must be an object of agent -> steps, got {_short(raw)}"
        )
    if len(raw) > MAX_STEPS_HINT_AGENTS:
        raise WorkflowHintError(
            f"radix_steps names {len(raw)} agents; at most {MAX_STEPS_HINT_AGENTS} are allowed"
        )
    for agent, steps in raw.items():
        if not isinstance(agent, str) or not 0 < len(agent) <= MAX_AGENT_CHARS:
            raise WorkflowHintError(
                f"radix_steps keys must be agent names of 1 to {MAX_AGENT_CHARS} characters, "
                f"got {_short(agent)}"
            )
        # bool is an int in Python; `true` is not a number of steps.
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS:
            raise WorkflowHintError(
                f"radix_steps values must be integers from 0 to {MAX_STEPS}, got "
                f"{_short(agent)}: {_short(steps)}"
            )
    return dict(raw)


def _loads_flat(text: str) -> Any:
    if len(text) > MAX_STEPS_HINT_CHARS:
        raise WorkflowHintError(
            f"radix_steps is {len(text)} characters; at most {MAX_STEPS_HINT_CHARS} are allowed"
        )
    # A flat object has one bracket level; refusing deeper text first keeps json's recursion
    # (and its RecursionError on thousands of brackets) out of reach.
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    if deepest > 1:
        raise WorkflowHintError("radix_steps must be a flat object of agent -> steps")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowHintError(f"radix_steps is not JSON: {exc.msg}") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise WorkflowHintError(f"radix_steps is not usable JSON: {exc}") from None


def _short(value: Any, limit: int = 80) -> str:
    text = "<huge int>" if isinstance(value, int) and abs(value) > 10**limit else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
