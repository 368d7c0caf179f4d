"""Unit tests run Triton kernels through the interpreter (no GPU here). Triton decides
compile-vs-interpret when a kernel is decorated, so the flag must be set before any test
module imports Triton, vLLM or our kernels; engine tests live in integration_tests/ and run
in their own pytest process without it."""

import os

os.environ["TRITON_INTERPRET"] = "1"
