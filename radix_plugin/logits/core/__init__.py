"""The logits component's pure floor: the ``radix_*`` grammar keys and jump-forward modes,
parsed with bounds; no vLLM, torch or xgrammar import."""
