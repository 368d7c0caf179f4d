"""The logits processor in vLLM's workers: per-request grammar masks (V1 and Model Runner
V2 drivers), compiled in a background service; see ``radix_plugin.logits``."""
