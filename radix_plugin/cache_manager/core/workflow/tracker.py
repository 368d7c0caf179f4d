"""Server-side merge of workflow hints into one steps-to-execution per agent."""

from __future__ import annotations

from collections import Counter, OrderedDict
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
        # Kept merged as maps come and go, so a request costs O(its map), not O(all maps):
        # per agent, how many kept maps give it each step value, and the minimum of those.
        self._values: dict[str, Counter[int]] = {}
        self._merged: dict[str, int] = {}

    def __len__(self) -> int:
        """Workflows whose map is kept."""
        return len(self._maps)

    def update(self, workflow_id: str, steps: Mapping[str, int]) -> None:
        """Record a workflow's current map (the most recently updated one is kept longest)."""
        old = self._maps.pop(workflow_id, None)
        if old is not None:
            self._withdraw(old)
        new = self._maps[workflow_id] = dict(steps)
        for agent, s in new.items():
            self._values.setdefault(agent, Counter())[s] += 1
            if s < self._merged.get(agent, s + 1):
                self._merged[agent] = s
        while len(self._maps) > self.max_workflows:
            self._withdraw(self._maps.popitem(last=False)[1])

    def agent_steps(self) -> dict[str, int]:
        """Each agent's minimum steps-to-execution over the kept workflows (O(agents))."""
        return dict(self._merged)

    def _withdraw(self, steps: Mapping[str, int]) -> None:
        """Take a forgotten or replaced map's values out of the merge."""
        for agent, s in steps.items():
            values = self._values[agent]
            values[s] -= 1
            if not values[s]:
                del values[s]
                if not values:
                    del self._values[agent]
                    del self._merged[agent]
                elif self._merged[agent] == s:
                    self._merged[agent] = min(values)
