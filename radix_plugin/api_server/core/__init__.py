"""The API server's pure floor: request parsing with no vLLM, torch or xgrammar import."""
