"""Server-side merge of workflow hints into one steps-to-execution per agent."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping


class WorkflowTracker:
    """Latest steps-to-execution map of each live workflow; an agent's value is the minimum
    over workflows (an agent due soon in any workflow is due soon).

    At most ``max_workflows`` are kept; the least recently updated is forgotten first, so
    abandoned workflows age out instead of protecting their agents forever.
    """

    def __init__(self, max_workflows: int = 1024) -> None:
        self.max_workflows = max_workflows
        self._maps: OrderedDict[str, dict[str, int]] = OrderedDict()

    def __len__(self) -> int:
        """Workflows whose map is kept."""
        return len(self._maps)

    def update(self, workflow_id: str, steps: Mapping[str, int]) -> None:
        """Record a workflow's current map (the most recently updated one is kept longest)."""
        self._maps.pop(workflow_id, None)
        self._maps[workflow_id] = dict(steps)
        while len(self._maps) > self.max_workflows:
            self._maps.popitem(last=False)

    def agent_steps(self) -> dict[str, int]:
        merged: dict[str, int] = {}
        for steps in self._maps.values():
            for agent, s in steps.items():
                if s < merged.get(agent, s + 1):
                    merged[agent] = s
        return merged
