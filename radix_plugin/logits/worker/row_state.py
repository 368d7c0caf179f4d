"""Per-request grammar state: an xgrammar matcher kept in step with the committed output.

Both vLLM runners expose a request's generated tokens as "everything so far" (a live list in
V1, a token buffer in V2) rather than "the token sampled last step", so the row tracks how many
output tokens its matcher has consumed and feeds it the difference at each step. The list can
also shrink (V1 trims outputs after a KV-load failure), which is handled by rolling back.

A row never raises into the engine: a failed compile, a timeout or a token the grammar rejects
puts the row into FAILED, where it only allows the request's stop tokens. The request then ends
at once with a visibly truncated output instead of silently continuing unconstrained.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    import xgrammar as xgr

logger = logging.getLogger(__name__)

# vLLM's async scheduling writes -1 for tokens whose value is still on the device.
PLACEHOLDER_TOKEN = -1
DEFAULT_COMPILE_TIMEOUT_S = 60.0


class RowStatus(enum.Enum):
    """Lifecycle of a grammar row."""

    PENDING = "pending"  # compile submitted, matcher not built yet
    ACTIVE = "active"  # matcher built and in sync
    TERMINATED = "terminated"  # grammar accepted a stop token; nothing left to constrain
    FAILED = "failed"  # cannot be enforced; only stop tokens are allowed


class GrammarRow:
    """The matcher of one request and how many of its output tokens it has consumed."""

    def __init__(
        self,
        compiled: Future[xgr.CompiledGrammar],
        stop_token_ids: Iterable[int],
        *,
        label: str = "request",
        compile_timeout_s: float = DEFAULT_COMPILE_TIMEOUT_S,
    ) -> None:
        self._compiled = compiled
        self._stop_token_ids = sorted(set(stop_token_ids))
        self._label = label
        self._compile_timeout_s = compile_timeout_s
        self._matcher: xgr.GrammarMatcher | None = None
        self.status = RowStatus.PENDING
        # Output tokens seen, and how many of them the matcher holds (tokens that arrive after
        # termination, e.g. with ignore_eos, are seen but not fed).
        self.consumed = 0
        self._accepted = 0

    @classmethod
    def failed(cls, reason: str, stop_token_ids: Iterable[int], *, label: str) -> GrammarRow:
        """A row that can only stop: used when the request's grammar could not be built."""
        future: Future[xgr.CompiledGrammar] = Future()
        future.set_exception(RuntimeError(reason))
        row = cls(future, stop_token_ids, label=label)
        row._fail(reason)
        return row

    @property
    def matcher(self) -> xgr.GrammarMatcher | None:
        """The live matcher (None until the compile finished, or after a failure)."""
        return self._matcher

    def sync(self, output_ids: Sequence[int]) -> None:
        """Advance (or roll back) the matcher so it has consumed exactly `output_ids`."""
        if self.status is RowStatus.FAILED or not self._ensure_matcher():
            return
        target = len(output_ids)
        if target < self.consumed:
            self._rewind(target)
        for index in range(self.consumed, target):
            token = output_ids[index]
            if token == PLACEHOLDER_TOKEN:
                self._fail(
                    "output token ids are still placeholders (async scheduling without "
                    "--logits-processors on the V1 runner); pass the processor explicitly"
                )
                return
            self.consumed += 1
            if self.status is RowStatus.TERMINATED:
                continue
            if not self._accept(token):
                self._fail(f"grammar rejected sampled token {token}")
                return

    def try_accept_draft(self, token: int) -> bool:
        """Tentatively feed a speculative token; undo with `rollback_drafts`."""
        if self._matcher is None or self.status is not RowStatus.ACTIVE:
            return False
        if not self._matcher.accept_token(token):
            return False
        if self._matcher.is_terminated():
            self.status = RowStatus.TERMINATED
        return True

    def rollback_drafts(self, count: int) -> None:
        """Undo `count` successful `try_accept_draft` calls."""
        if count and self._matcher is not None and self.status is not RowStatus.FAILED:
            self._matcher.rollback(count)
            self.status = (
                RowStatus.TERMINATED if self._matcher.is_terminated() else RowStatus.ACTIVE
            )

    def fill_bitmask(self, bitmask: torch.Tensor, index: int) -> bool:
        """Write this row's allowed tokens into `bitmask[index]`; False means "do not mask"."""
        if self.status is RowStatus.FAILED:
            return self._fill_stop_only(bitmask, index)
        if self.status is not RowStatus.ACTIVE or self._matcher is None:
            return False
        return bool(self._matcher.fill_next_token_bitmask(bitmask, index))

    def _ensure_matcher(self) -> bool:
        if self._matcher is not None:
            return True
        import xgrammar as xgr

        try:
            compiled = self._compiled.result(timeout=self._compile_timeout_s)
        except FutureTimeout:
            self._fail(f"grammar compile took longer than {self._compile_timeout_s:.0f}s")
            return False
        except Exception as exc:
            self._fail(f"grammar compile failed: {exc}")
            return False
        self._matcher = xgr.GrammarMatcher(
            compiled, override_stop_tokens=self._stop_token_ids or None
        )
        self.status = RowStatus.ACTIVE
        return True

    def _accept(self, token: int) -> bool:
        assert self._matcher is not None
        if not self._matcher.accept_token(token):
            return False
        self._accepted += 1
        if self._matcher.is_terminated():
            self.status = RowStatus.TERMINATED
        return True

    def _rewind(self, target: int) -> None:
        assert self._matcher is not None
        if target < self._accepted:
            self._matcher.rollback(self._accepted - target)
            self._accepted = target
        self.consumed = target
        self.status = RowStatus.TERMINATED if self._matcher.is_terminated() else RowStatus.ACTIVE

    def _fail(self, reason: str) -> None:
        if self.status is not RowStatus.FAILED:
            logger.error("radix grammar for %s disabled, forcing stop: %s", self._label, reason)
        self.status = RowStatus.FAILED
        self._matcher = None

    def _fill_stop_only(self, bitmask: torch.Tensor, index: int) -> bool:
        if not self._stop_token_ids:
            return False
        row = bitmask[index]
        row.zero_()
        for token in self._stop_token_ids:
            word, bit = divmod(token, 32)
            if word < row.shape[0]:
                # int32 words: bit 31 is the sign bit, so build the value in two's complement.
                value = (int(row[word]) & 0xFFFFFFFF) | (1 << bit)
                row[word] = value - (1 << 32) if value >= 1 << 31 else value
        return True
