"""KVFlow's workflow-aware eviction: evict what the agent workflow needs last.

Each node records the agents whose prompts pass through it (a shared prefix records several).
A node's distance is the smallest steps-to-execution among those agents, so a prefix shared by
an agent about to run stays protected. Leaves furthest from use are evicted first, LRU among
equals; nodes of agents running now (0 steps) go last; nodes of unknown agents count as far
away, which makes an untagged workload plain LRU. A node never hit again is most likely a
request's own tail (its step context) rather than an agent's prompt: it ranks one horizon
later than reused prefixes, so per-request context does not outlive the prompts the next
steps need, while a cold start still keeps the agents due soonest.

The ordering is the correct one: the largest steps-to-execution is evicted first (the notes
on SGLang PR #24993 describe the inverted min-heap variant that evicts the next agent first).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

from radix_plugin.cache_manager.core.hookspecs import hookimpl
from radix_plugin.cache_manager.core.policies.base import EvictionPolicy

if TYPE_CHECKING:
    from radix_plugin.cache_manager.core.radix_tree import RadixNode, RadixTree

AGENTS_KEY = "agents"
MAX_NODE_AGENTS = 64
"""Agents a node remembers: a hot shared prefix (a system prompt nothing evicts) would
otherwise collect every agent name clients ever sent, and each re-key takes a minimum over
them. Past it, the agent due latest is forgotten: the node's distance, the minimum, stays."""


class WorkflowPolicy(EvictionPolicy):
    name = "workflow"
    description = "KVFlow: largest steps-to-execution first (min over a node's agents), then LRU"

    def __init__(self, *, far: int = 1_000_000) -> None:
        super().__init__()
        self.far = far
        self._steps: dict[Hashable, int] = {}
        self._horizon = 1

    def update_steps(self, steps: Mapping[Hashable, int]) -> None:
        """Replace every agent's steps-to-execution (agents not named count as far)."""
        bad = {a: s for a, s in steps.items() if not isinstance(s, int) or s < 0}
        if bad:
            raise ValueError(f"steps-to-execution must be non-negative ints, got {bad}")
        if dict(steps) != self._steps:
            self._steps = dict(steps)
            self._horizon = max(self._steps.values(), default=0) + 1
            self.version += 1

    def steps_of(self, agent: Hashable) -> int:
        return self._steps.get(agent, self.far)

    def agents_due_within(self, steps: int) -> list[tuple[int, Hashable]]:
        """``(steps, agent)`` of the agents due within ``steps`` steps, soonest first."""
        return sorted(((s, a) for a, s in self._steps.items() if s <= steps), key=lambda p: p[0])

    def node_steps(self, node: RadixNode) -> int:
        agents = node.meta(AGENTS_KEY)
        if not agents:
            return self.far
        steps = min(self._steps.get(a, self.far) for a in agents)
        if node.hit_count == 0 and steps < self.far:
            # Never reused yet: most likely a request's own tail (its step context), else an
            # agent prompt seen once. Rank it one whole horizon later than reused prefixes,
            # still ordered by its agent's distance.
            steps += self._horizon
        return steps

    def key(self, node: RadixNode) -> Any:
        return (-self.node_steps(node), node.last_access)

    def on_split(self, upper: RadixNode, lower: RadixNode) -> None:
        upper.metadata[AGENTS_KEY] = set(lower.meta(AGENTS_KEY, ()))


def tag_agent(tree: RadixTree, node: RadixNode, agent: Hashable) -> None:
    """Record that ``agent``'s prompt passes through the prefix ending at ``node`` (O(D))."""
    policy = tree.policy
    steps_of = policy.steps_of if isinstance(policy, WorkflowPolicy) else lambda a: 0
    for n in node.path_to_root():
        agents = n.metadata.setdefault(AGENTS_KEY, set())
        if agent not in agents:
            agents.add(agent)
            if len(agents) > MAX_NODE_AGENTS:
                agents.discard(max(agents, key=lambda a: (steps_of(a), str(a))))
            tree.refresh(n)


@hookimpl
def radix_eviction_policies() -> list[type]:
    return [WorkflowPolicy]
