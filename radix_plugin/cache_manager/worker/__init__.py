"""The cache manager in vLLM's worker processes: the host tier's block copies between the
device KV cache and host memory."""
