"""Client and server helpers for KVFlow-style workflow hints.

Client side: describe a workflow as an :class:`AgentStepGraph` and attach
:meth:`AgentStepGraph.hints` to each request's ``vllm_xargs``; works with the plain OpenAI
client (``extra_body={"vllm_xargs": ...}``). A client with no graph may send only
``radix_workflow`` and ``radix_agent``. Server side: :class:`StepOrderLearner` predicts
steps-to-execution from those tags, and :class:`WorkflowTracker` merges the hints (sent or
learned) of all live workflows into one steps-to-execution per agent.
"""

from radix_plugin.cache_manager.core.workflow.graph import AgentStepGraph, WorkflowHintError
from radix_plugin.cache_manager.core.workflow.learner import StepOrderLearner
from radix_plugin.cache_manager.core.workflow.tracker import WorkflowTracker

__all__ = ["AgentStepGraph", "StepOrderLearner", "WorkflowHintError", "WorkflowTracker"]
