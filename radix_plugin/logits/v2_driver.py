"""Grammar enforcement for Model Runner V2's logits-processor interface (the GPU runner).

V2 differs from V1 in three ways that shape this driver:

* State is keyed by persistent request *slot*. `add_request` is the only lifecycle call (slots
  are recycled without a removal call), so a slot's row is replaced or dropped there, and
  `apply` only touches slots present in this step's `idx_mapping`.
* There is no live token list. Committed tokens live in `req_states.all_token_ids` on the
  device; a logits row at position `p` has committed tokens `[0, p]`, of which the request's
  output is `[prompt_len, p]`. The token at `p` is this row's input token, which is all a
  decode step needs; longer gaps (resumed requests) are read back from `all_token_ids`.
* Under speculative decoding a request owns consecutive logits rows at `p, p+1, ...` whose
  input tokens are the drafts. Row `k` is masked with the matcher state after drafts `1..k`,
  then the drafts are rolled back, so the rejection sampler sees exact per-position masks.

All device reads for a step are batched into one transfer; `apply` returns before any transfer
when no request in the batch has a grammar (and vLLM skips processing entirely when
`add_request` returned False for every request in the batch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from radix_plugin.logits.masking import BitmaskBuffer, cuda_event
from radix_plugin.logits.request_rows import row_for_request
from radix_plugin.logits.row_state import GrammarRow, RowStatus

if TYPE_CHECKING:
    import torch
    from vllm import SamplingParams
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState

    from radix_plugin.logits.compile_service import GrammarCompileService


class V2GrammarDriver:
    """Per-slot grammar rows for Model Runner V2."""

    def __init__(
        self,
        service: GrammarCompileService,
        req_states: LogitsProcRequestState,
        *,
        pin_memory: bool = False,
    ) -> None:
        self._service = service
        self._req_states = req_states
        self._rows: dict[int, GrammarRow] = {}
        # Committed output tokens per slot, mirrored on the host as the rows consume them.
        self._outputs: dict[int, list[int]] = {}
        self._bitmask = BitmaskBuffer(
            service.vocab_size, pin_memory=pin_memory, new_event=cuda_event if pin_memory else None
        )

    @property
    def rows(self) -> dict[int, GrammarRow]:
        """Current `slot -> row` map (read-only use)."""
        return self._rows

    def add_request(self, req_idx: int, params: SamplingParams) -> bool:
        """(Re)initialize `req_idx`; returns whether the request's logits need masking."""
        row = row_for_request(self._service, params, label=f"request slot {req_idx}")
        if row is None:
            self._rows.pop(req_idx, None)
            self._outputs.pop(req_idx, None)
            return False
        self._rows[req_idx] = row
        self._outputs[req_idx] = []
        return True

    def apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        """Mask every logits row that belongs to a grammar request."""
        if not self._rows or not any(int(slot) in self._rows for slot in ctx.idx_mapping_np):
            return logits
        import torch

        layout = torch.stack(
            [
                ctx.expanded_idx_mapping.to(torch.int64),
                ctx.pos.to(torch.int64),
                ctx.input_ids.to(torch.int64),
            ]
        ).cpu()
        slots, positions, input_ids = (layout[i].tolist() for i in range(3))
        groups = _group_rows(slots, self._rows)
        self._catch_up(groups, positions, input_ids)

        bitmask = self._bitmask.rows(logits.shape[0])
        indices: list[int] = []
        for slot, rows in groups.items():
            row = self._rows[slot]
            drafts = 0
            for k, logits_row in enumerate(rows):
                if k > 0:
                    if not row.try_accept_draft(input_ids[logits_row]):
                        break
                    drafts += 1
                if row.fill_bitmask(bitmask, logits_row):
                    indices.append(logits_row)
            row.rollback_drafts(drafts)
        self._bitmask.apply(logits, indices)
        return logits

    def _catch_up(
        self, groups: dict[int, list[int]], positions: list[int], input_ids: list[int]
    ) -> None:
        """Feed each row the output tokens committed up to its first logits row."""
        prompt_len = self._req_states.prompt_len.np
        gaps: list[tuple[int, int, int]] = []  # (slot, start, end) read from the device
        for slot, rows in groups.items():
            first = rows[0]
            committed_outputs = positions[first] + 1 - int(prompt_len[slot])
            known = self._outputs[slot]
            missing = committed_outputs - len(known)
            if missing == 1:
                known.append(input_ids[first])
            elif missing > 1:
                start = int(prompt_len[slot]) + len(known)
                gaps.append((slot, start, start + missing))
            elif missing < 0:
                del known[committed_outputs:]
        if gaps:
            self._read_gaps(gaps)
        for slot in groups:
            row = self._rows[slot]
            if row.status is not RowStatus.FAILED:
                row.sync(self._outputs[slot])

    def _read_gaps(self, gaps: list[tuple[int, int, int]]) -> None:
        import torch

        all_token_ids = self._req_states.all_token_ids.gpu
        slot_index = torch.tensor(
            [slot for slot, start, end in gaps for _ in range(start, end)], dtype=torch.int64
        )
        col_index = torch.tensor(
            [col for _, start, end in gaps for col in range(start, end)], dtype=torch.int64
        )
        device = all_token_ids.device
        values = all_token_ids[slot_index.to(device), col_index.to(device)].cpu().tolist()
        offset = 0
        for slot, start, end in gaps:
            self._outputs[slot].extend(values[offset : offset + end - start])
            offset += end - start


def _group_rows(slots: list[int], rows: dict[int, GrammarRow]) -> dict[int, list[int]]:
    """`slot -> [logits rows]` for grammar slots, rows in order (drafts follow the first)."""
    groups: dict[int, list[int]] = {}
    for logits_row, slot in enumerate(slots):
        if slot in rows:
            groups.setdefault(slot, []).append(logits_row)
    return groups
