"""The pure core: data structures and decisions, no vLLM, torch or xgrammar import.

The radix tree, eviction policies, waiting-queue orderings and their one registry, request
hints, the agent step graph, and the config schema. Every vLLM process may import it; a test
imports it with vLLM and torch made unimportable (``tests/test_layering.py``).
"""
