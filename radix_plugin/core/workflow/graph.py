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


def parse_steps_hint(raw: Any) -> dict[str, int]:
    """Decode ``radix_steps`` (a JSON object of agent -> non-negative int, or a mapping)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise WorkflowHintError(f"radix_steps is not JSON: {exc.msg}") from None
    if not isinstance(raw, Mapping):
        raise WorkflowHintError(f"radix_steps must be an object of agent -> steps, got {raw!r}")
    for key, value in raw.items():
        # bool is an int subclass: True must not pass as step 1.
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int):
            raise WorkflowHintError(
                f"radix_steps[{key!r}] must be a non-negative integer keyed by agent name, "
                f"got {value!r}"
            )
        if value < 0:
            raise WorkflowHintError(
                f"radix_steps values must be non-negative integers, got {key!r}: {value}"
            )
    return dict(raw)
