"""The cache manager's pure floor: data structures and decisions, no vLLM, torch, xgrammar
or Triton import (``tests/test_layering.py`` imports it with those made unimportable).

The radix tree, eviction policies, waiting-queue orderings and their one registry, request
hints, the workflow step graph and step-order learner, the host tier's slot index.
"""
