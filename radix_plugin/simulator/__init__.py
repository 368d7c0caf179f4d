"""Trace-driven simulator: replays prefix-cache traces on vLLM's real KV cache manager and on
the radix tree under each eviction policy, with the same capacity accounting."""
