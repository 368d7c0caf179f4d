"""Code that runs in vLLM's API-server process: ``radix_*`` request validation (HTTP 400
before a request reaches the engine), the plugin's metrics on ``/metrics``, and SGLang's
native API (``sglang_*``; its request parsing is pure, in ``core/``)."""
