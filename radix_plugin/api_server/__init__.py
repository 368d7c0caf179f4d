"""Code that runs in vLLM's API-server process: request validation (HTTP 400 before a request
reaches the engine)."""
