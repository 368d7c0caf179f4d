"""`RadixGrammarLogitsProcessor`: per-request grammars for vLLM, on both runner interfaces.

Requests opt in through `vllm_xargs` (see `request_spec`): `radix_json_schema`, `radix_regex`,
`radix_ebnf` or `radix_choice`, plus `radix_any_whitespace` for JSON. Everything else is
untouched.

Why one class implements two interfaces: vLLM loads every class registered under the
`vllm.logits_processors` entry-point group in *both* runners. The V1 runner (CPU) constructs it
as `cls(vllm_config, device, is_pin_memory)`; Model Runner V2 (GPU) requires a subclass of its
own `LogitsProcessor` and constructs it as `cls(vllm_config, req_states)`, and raises on a
V1-only class. Subclassing both ABCs and dispatching on the constructor arguments lets a single
entry point (and a single `--logits-processors` name) work on either runner; the work itself is
done by `V1GrammarDriver` or `V2GrammarDriver`.

`validate_params` runs in the API server at admission (both runners' loaders call it), so a bad
schema, regex or grammar fails that one request with `VLLMValidationError` (HTTP 400) and never
reaches the engine.

Limitations:

* V1 disables custom logits processors when speculative decoding is configured (it loads no
  plugins and rejects `--logits-processors`); there the xargs are still validated but must be
  enforced scheduler-side (see `jump_forward_drafts.attach_xargs_grammar`).
* On the V1 runner with async scheduling (GPU with `VLLM_USE_V2_MODEL_RUNNER=0`), vLLM only
  resolves output-token placeholders for processors named in `--logits-processors`; loaded
  through the entry point alone, grammar requests are stopped with a logged error. CPU runs
  synchronously and MRV2 reads tokens from its own buffers, so neither is affected.

Environment: `RADIX_GRAMMAR_COMPILE_THREADS` sets the compile pool size (default: half the
cores, at most 4); `VLLM_XGRAMMAR_CACHE_MB` bounds xgrammar's compiled-grammar cache.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import TYPE_CHECKING, Any

from vllm.v1.sample.logits_processor.interface import LogitsProcessor as V1LogitsProcessor
from vllm.v1.worker.gpu.sample.logits_processor.interface import (
    LogitsProcessor as V2LogitsProcessor,
)

from radix_plugin.api_server.validation import validate_radix_xargs
from radix_plugin.logits.core.grammar_spec import GrammarSpecError
from radix_plugin.logits.worker.compile_service import GrammarCompileService
from radix_plugin.logits.worker.v1_driver import V1GrammarDriver
from radix_plugin.logits.worker.v2_driver import V2GrammarDriver

if TYPE_CHECKING:
    import torch
    from vllm import SamplingParams
    from vllm.config import VllmConfig
    from vllm.v1.sample.logits_processor import BatchUpdate
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState

logger = logging.getLogger(__name__)

# One active instance per runner: the entry point and an explicit `--logits-processors` flag
# would otherwise both load the class and enforce every grammar twice.
_ACTIVE_BY_CONFIG: dict[int, weakref.ref[RadixGrammarLogitsProcessor]] = {}


class RadixGrammarLogitsProcessor(V1LogitsProcessor, V2LogitsProcessor):
    """Enforces the grammar named in each request's `vllm_xargs` (V1 and V2 runners)."""

    def __init__(self, vllm_config: VllmConfig, *args: Any) -> None:
        self._v1: V1GrammarDriver | None = None
        self._v2: V2GrammarDriver | None = None
        self._service: GrammarCompileService | None = None
        if len(args) not in (1, 2):
            raise TypeError(
                "RadixGrammarLogitsProcessor expects (vllm_config, device, is_pin_memory) or "
                f"(vllm_config, req_states); got {1 + len(args)} arguments"
            )
        if not self._claim(vllm_config):
            logger.info("radix grammar processor already active for this engine; duplicate idle")
            return
        self._service = _make_service(vllm_config)
        if len(args) == 2:  # V1: (device, is_pin_memory)
            _device, is_pin_memory = args
            max_num_reqs = vllm_config.scheduler_config.max_num_seqs
            self._v1 = V1GrammarDriver(self._service, max_num_reqs, pin_memory=bool(is_pin_memory))
        else:  # V2: (req_states,)
            req_states: LogitsProcRequestState = args[0]
            pin = req_states.device.type == "cuda"
            spec = vllm_config.speculative_config
            drafts = spec.num_speculative_tokens if spec is not None else 0
            self._v2 = V2GrammarDriver(
                self._service, req_states, pin_memory=pin, max_new_tokens=1 + (drafts or 0)
            )

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Reject malformed grammar xargs and cache hints at admission (vLLM turns this into
        HTTP 400), so the engine core only ever sees well-formed ``radix_*`` keys."""
        validate_radix_xargs(sampling_params)

    # --- V1 interface -------------------------------------------------------------------

    def is_argmax_invariant(self) -> bool:
        """Masking changes the argmax, so V1 must run this processor for greedy requests."""
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """V1: track requests joining, leaving and moving within the persistent batch."""
        if self._v1 is not None:
            self._v1.update_state(batch_update)

    # --- V2 interface -------------------------------------------------------------------

    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        """V2: (re)initialize a slot; True if the request has a grammar."""
        return self._v2.add_request(req_idx, sampling_params) if self._v2 is not None else False

    def apply_staged_writes(self) -> None:
        """V2, before each forward pass: start copying the token history `apply` needs."""
        if self._v2 is not None:
            self._v2.apply_staged_writes()

    # --- both ---------------------------------------------------------------------------

    def apply(self, logits: torch.Tensor, ctx: LogitsContext | None = None) -> torch.Tensor:
        """Mask grammar rows in place (V1 calls `apply(logits)`, V2 `apply(logits, ctx)`)."""
        if self._v1 is not None:
            return self._v1.apply(logits)
        if self._v2 is not None and ctx is not None:
            return self._v2.apply(logits, ctx)
        return logits

    def __del__(self) -> None:
        service = getattr(self, "_service", None)
        if service is not None:
            service.shutdown()

    def _claim(self, vllm_config: VllmConfig) -> bool:
        # Holding the config keeps its id from being reused while this instance lives.
        self._vllm_config = vllm_config
        key = id(vllm_config)
        owner_ref = _ACTIVE_BY_CONFIG.get(key)
        if owner_ref is not None and owner_ref() is not None:
            return False

        def release(ref: weakref.ref[RadixGrammarLogitsProcessor]) -> None:
            if _ACTIVE_BY_CONFIG.get(key) is ref:
                del _ACTIVE_BY_CONFIG[key]

        _ACTIVE_BY_CONFIG[key] = weakref.ref(self, release)
        return True


def _make_service(vllm_config: VllmConfig) -> GrammarCompileService:
    model_config = vllm_config.model_config

    def load_tokenizer() -> Any:
        from vllm.tokenizers import cached_tokenizer_from_config

        return cached_tokenizer_from_config(model_config)

    workers = int(os.environ.get("RADIX_GRAMMAR_COMPILE_THREADS", "0")) or None
    return GrammarCompileService(load_tokenizer, model_config.get_vocab_size(), max_workers=workers)


__all__ = ["GrammarSpecError", "RadixGrammarLogitsProcessor"]
