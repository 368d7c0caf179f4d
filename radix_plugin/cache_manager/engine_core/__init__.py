"""The cache manager in vLLM's EngineCore process: the scheduler (``--scheduler-cls``) and
its collaborators, the radix block pool, KV events and the host tier's scheduler side."""
