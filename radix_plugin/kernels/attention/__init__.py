"""vLLM attention backend built on `radix_plugin.kernels` (see `backend.py`).

Importing this package does not import vLLM; `registration.register_attention_backends` and
`backend` do, when vLLM calls them.
"""
