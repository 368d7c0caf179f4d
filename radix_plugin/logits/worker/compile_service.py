"""Compile grammars against the model vocabulary off the critical path, once per spec.

Compiling a grammar (building its token-mask cache over the whole vocabulary) can take tens of
milliseconds to seconds, far longer than a decode step. The processor therefore submits the
compile when a request joins the batch and only waits for the result when the request's first
logits arrive, so the compile overlaps with that step's forward pass. Futures are memoized per
`GrammarSpec` (on top of xgrammar's own compiler cache), so a burst of requests with the same
schema shares one compile instead of queueing duplicates.

The tokenizer is loaded lazily on the pool, the first time a grammar is requested: an engine
that never sees a grammar request pays nothing for this plugin.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from radix_plugin.logits.core.grammar_spec import GrammarSpec
from radix_plugin.logits.grammar.builder import build_grammar

if TYPE_CHECKING:
    import xgrammar as xgr

logger = logging.getLogger(__name__)

# Compiled grammars kept alive by this service's future cache (a JSON schema compiled for a
# 128k vocabulary can take megabytes); xgrammar's own cache is bounded in bytes on top.
DEFAULT_MAX_CACHED = 64
DEFAULT_CACHE_LIMIT_BYTES = 512 * 1024 * 1024


class GrammarCompileService:
    """Thread-pool grammar compiler with a per-spec future cache.

    `tokenizer_loader` returns a Hugging Face tokenizer (or None when the engine runs with
    `skip_tokenizer_init`, in which case every compile fails with a clear error).
    """

    def __init__(
        self,
        tokenizer_loader: Callable[[], Any],
        vocab_size: int,
        *,
        max_workers: int | None = None,
        max_cached: int = DEFAULT_MAX_CACHED,
        cache_limit_bytes: int = DEFAULT_CACHE_LIMIT_BYTES,
    ) -> None:
        self._tokenizer_loader = tokenizer_loader
        self._vocab_size = vocab_size
        self._max_cached = max_cached
        self._cache_limit_bytes = cache_limit_bytes
        workers = max_workers or max(1, min(4, (os.cpu_count() or 2) // 2))
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="radix-grammar")
        self._lock = threading.Lock()
        self._futures: OrderedDict[GrammarSpec, Future[xgr.CompiledGrammar]] = OrderedDict()
        self._compiler: xgr.GrammarCompiler | None = None
        self._tokenizer: Any = None
        self._info: xgr.TokenizerInfo | None = None
        self._compiler_lock = threading.Lock()

    @property
    def vocab_size(self) -> int:
        """Model vocabulary size (may exceed the tokenizer's because of padding)."""
        return self._vocab_size

    def submit(self, spec: GrammarSpec) -> Future[xgr.CompiledGrammar]:
        """Start compiling `spec` (or reuse the in-flight / finished compile) and return it."""
        with self._lock:
            future = self._futures.get(spec)
            if future is not None:
                self._futures.move_to_end(spec)
                return future
            future = self._executor.submit(self._compile, spec)
            self._futures[spec] = future
            while len(self._futures) > self._max_cached:
                self._futures.popitem(last=False)
        future.add_done_callback(lambda done: self._forget_failure(spec, done))
        return future

    def tokenizer(self) -> Any:
        """The tokenizer the grammars are compiled against (loads it on first use)."""
        self._ensure_compiler()
        return self._tokenizer

    def default_stop_token_ids(self) -> list[int]:
        """Stop tokens xgrammar detected from the tokenizer (EOS)."""
        self._ensure_compiler()
        assert self._info is not None
        return list(self._info.stop_token_ids)

    def shutdown(self) -> None:
        """Stop the pool without waiting for in-flight compiles."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _compile(self, spec: GrammarSpec) -> xgr.CompiledGrammar:
        compiler = self._ensure_compiler()
        return compiler.compile_grammar(build_grammar(spec))

    def _ensure_compiler(self) -> xgr.GrammarCompiler:
        with self._compiler_lock:
            if self._compiler is None:
                import xgrammar as xgr

                tokenizer = self._tokenizer_loader()
                if tokenizer is None:
                    raise RuntimeError(
                        "radix grammars need a tokenizer, but the engine runs without one "
                        "(skip_tokenizer_init)"
                    )
                info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=self._vocab_size)
                self._compiler = xgr.GrammarCompiler(
                    info,
                    max_threads=max(1, min(8, os.cpu_count() or 1)),
                    cache_enabled=True,
                    cache_limit_bytes=self._cache_limit_bytes,
                )
                self._tokenizer = tokenizer
                self._info = info
            return self._compiler

    def _forget_failure(self, spec: GrammarSpec, future: Future[xgr.CompiledGrammar]) -> None:
        """Drop failed compiles from the cache so a transient failure is not sticky."""
        if future.cancelled() or future.exception() is not None:
            with self._lock:
                if self._futures.get(spec) is future:
                    del self._futures[spec]
