"""xgrammar glue shared by three processes (API-server validation, EngineCore jump-forward
drafts, worker masking): grammar building, strict JSON, forced-text search. No vLLM import."""
