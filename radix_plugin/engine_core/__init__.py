"""Code that runs in vLLM's EngineCore process: the scheduler (``--scheduler-cls``), the
radix block pool, the host tier's scheduler side, and jump-forward drafts."""
