"""Code that runs in vLLM's worker processes: grammar logits drivers, the attention backend,
the Triton kernels, and the host tier's worker side (block copies)."""
