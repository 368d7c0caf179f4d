"""Client and server helpers for KVFlow-style workflow hints.

Client side: describe a workflow as an :class:`AgentStepGraph` and attach
:meth:`AgentStepGraph.hints` to each request's ``vllm_xargs``; works with the plain OpenAI
client (``extra_body={"vllm_xargs": ...}``). Server side: :class:`WorkflowTracker` merges the
hints of all live workflows into one steps-to-execution per agent.
"""

from radix_plugin.core.workflow.graph import AgentStepGraph, WorkflowHintError
from radix_plugin.core.workflow.tracker import WorkflowTracker

__all__ = ["AgentStepGraph", "WorkflowHintError", "WorkflowTracker"]
