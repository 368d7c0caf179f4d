"""Grammar enforcement for vLLM's V1 logits-processor interface (the CPU runner).

V1 tells processors about batch changes through `BatchUpdate`s keyed by persistent-batch
index, and each added request comes with a *live* reference to its output-token list that the
runner appends to after every step. The driver keeps `index -> (row, live list)` and, when the
logits arrive, syncs each row's matcher with its list, fills the rows' masks and applies them
in one call. With no grammar rows it returns immediately, so ordinary requests cost nothing.
Without speculative decoding V1 has exactly one logits row per batch index, in batch order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from radix_plugin.logits.worker.masking import BitmaskBuffer, cuda_event
from radix_plugin.logits.worker.request_rows import row_for_request
from radix_plugin.logits.worker.row_state import GrammarRow

if TYPE_CHECKING:
    import torch
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate

    from radix_plugin.logits.worker.compile_service import GrammarCompileService


class V1GrammarDriver:
    """Per-batch-index grammar rows for the V1 runner."""

    def __init__(
        self, service: GrammarCompileService, max_num_reqs: int, *, pin_memory: bool = False
    ) -> None:
        self._service = service
        self._rows: dict[int, tuple[GrammarRow, list[int]]] = {}
        self._bitmask = BitmaskBuffer(
            service.vocab_size, pin_memory=pin_memory, new_event=cuda_event if pin_memory else None
        )
        self._max_num_reqs = max_num_reqs

    @property
    def rows(self) -> dict[int, tuple[GrammarRow, list[int]]]:
        """Current `batch index -> (row, live output list)` map (read-only use)."""
        return self._rows

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Apply removals, additions and moves, in the order the interface prescribes."""
        if batch_update is None:
            return
        from vllm.v1.sample.logits_processor import MoveDirectionality

        for index in batch_update.removed:
            self._rows.pop(index, None)
        for index, params, _prompt_ids, output_ids in batch_update.added:
            entry = self._new_entry(index, params, output_ids)
            if entry is None:
                self._rows.pop(index, None)
            else:
                self._rows[index] = entry
        for src, dst, direction in batch_update.moved:
            src_entry = self._rows.pop(src, None)
            dst_entry = self._rows.pop(dst, None)
            if src_entry is not None:
                self._rows[dst] = src_entry
            if dst_entry is not None and direction == MoveDirectionality.SWAP:
                self._rows[src] = dst_entry

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Mask each grammar row's logits to its grammar's next allowed tokens."""
        if not self._rows:
            return logits
        bitmask = self._bitmask.rows(max(logits.shape[0], self._max_num_reqs))
        indices: list[int] = []
        for index, (row, output_ids) in self._rows.items():
            if index >= logits.shape[0]:
                continue
            row.sync(output_ids)
            if row.fill_bitmask(bitmask, index):
                indices.append(index)
        self._bitmask.apply(logits, indices)
        return logits

    def _new_entry(
        self, index: int, params: SamplingParams, output_ids: list[int]
    ) -> tuple[GrammarRow, list[int]] | None:
        row = row_for_request(self._service, params, label=f"batch row {index}")
        return None if row is None else (row, output_ids)
