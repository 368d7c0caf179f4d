"""Learning a workflow's step order from its tagged requests, for clients without a graph.

A client that tags each request with ``radix_workflow`` and ``radix_agent`` but sends no
``radix_steps`` still shows, request by request, which agent follows which. The learner
counts those transitions and, from a workflow's latest agent, predicts how many steps until
each agent runs next: the steps-to-execution an explicit Agent Step Graph would have sent.

* Transitions are counted per agent across all workflows: agents are an application's roles,
  and the instances of one application (``radix_workflow`` ids) share them, so a new instance
  is predicted from the ones before it. Positions are per workflow.
* A workflow's first agent is counted as a start; an agent with no known successor (a
  workflow's last step, or one not seen to continue yet) is followed by the starts, as the
  next instance begins there. So a cyclic pipeline is known after one round.
* Branches and loops keep their observed frequencies: the mass of the current position is
  pushed along the transition probabilities, step by step, and an agent's steps-to-execution
  is the first step by which its expected runs reach ``threshold`` (about its median time to
  run). A deterministic pipeline gives exact distances; a rare branch ranks later.
* Counts decay (each new transition out of an agent scales its older ones by ``decay``), so
  a changed pipeline is re-learned within a few rounds and dead transitions disappear.
* Consecutive requests of one agent in one workflow are one step (an agent's several calls).

Memory and time are bounded whatever the tags: at most ``max_workflows`` positions and
``max_agents`` agents (least recently seen forgotten first), ``max_successors`` transitions
per agent, and a prediction walks at most ``horizon`` steps over states holding at least
``min_mass`` of the probability. Tag lengths are validated with the other hints
(:mod:`radix_plugin.cache_manager.core.hints`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

FORGOTTEN_WEIGHT = 1e-3
"""A transition decayed below this weight is dropped."""


class StepOrderLearner:
    """Online transition counts between agents, and steps-to-execution predicted from them."""

    def __init__(
        self,
        *,
        max_workflows: int = 1024,
        max_agents: int = 1024,
        max_successors: int = 8,
        horizon: int = 64,
        decay: float = 0.9,
        threshold: float = 0.5,
        min_mass: float = 0.02,
    ) -> None:
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if min(max_workflows, max_agents, max_successors, horizon) < 1:
            raise ValueError("the learner's caps and horizon must be at least 1")
        self.max_workflows = max_workflows
        self.max_agents = max_agents
        self.max_successors = max_successors
        self.horizon = horizon
        self.decay = decay
        self.threshold = threshold
        self.min_mass = min_mass
        self._position: OrderedDict[str, str] = OrderedDict()  # workflow -> latest agent
        self._next: OrderedDict[str, dict[str, float]] = OrderedDict()  # agent -> successors
        self._starts: dict[str, float] = {}

    @property
    def num_workflows(self) -> int:
        return len(self._position)

    @property
    def num_agents(self) -> int:
        return len(self._next)

    def num_transitions(self) -> int:
        """Transitions (and starts) held: bounded by ``(max_agents + 1) * max_successors``."""
        return len(self._starts) + sum(len(s) for s in self._next.values())

    def observe(self, workflow: str, agent: str) -> None:
        """``workflow`` sent a request for ``agent`` (in arrival order)."""
        previous = self._position.pop(workflow, None)
        self._position[workflow] = agent
        while len(self._position) > self.max_workflows:
            self._position.popitem(last=False)
        if previous is None:
            self._count(self._starts, agent)
        elif previous != agent:
            successors = self._next.pop(previous, None) or {}
            self._count(successors, agent)
            self._next[previous] = successors  # most recently seen last
            while len(self._next) > self.max_agents:
                self._next.popitem(last=False)

    def steps_to_execution(self, workflow: str) -> dict[str, int]:
        """Agent -> predicted steps until it next runs in ``workflow`` (0: its latest agent).

        Agents the walk reaches without their expected runs passing ``threshold`` within the
        horizon get ``horizon + 1``; agents never reached are left out (far away), as an
        explicit graph leaves out agents that do not run again.
        """
        current = self._position.get(workflow)
        if current is None:
            return {}
        steps = {current: 0}
        runs: dict[str, float] = {}
        mass = {current: 1.0}
        for k in range(1, self.horizon + 1):
            mass = self._step(mass)
            if not mass:
                break
            for agent, m in mass.items():
                if agent in steps:
                    continue
                runs[agent] = runs.get(agent, 0.0) + m
                if runs[agent] >= self.threshold - 1e-9:
                    steps[agent] = k
        for agent in runs:
            steps.setdefault(agent, self.horizon + 1)
        return steps

    def _step(self, mass: Mapping[str, float]) -> dict[str, float]:
        """The position distribution one step later (states under ``min_mass`` dropped)."""
        out: dict[str, float] = {}
        for agent, m in mass.items():
            successors = self._next.get(agent) or self._starts
            total = sum(successors.values())
            for succ, weight in successors.items():
                out[succ] = out.get(succ, 0.0) + m * weight / total
        return {a: m for a, m in out.items() if m >= self.min_mass}

    def _count(self, weights: dict[str, float], agent: str) -> None:
        """Decay ``weights``, add one for ``agent``, keep the heaviest ``max_successors``."""
        for key in list(weights):
            weights[key] *= self.decay
            if weights[key] < FORGOTTEN_WEIGHT:
                del weights[key]
        weights[agent] = weights.get(agent, 0.0) + 1.0
        while len(weights) > self.max_successors:
            lightest = min((k for k in weights if k != agent), key=weights.__getitem__)
            del weights[lightest]
