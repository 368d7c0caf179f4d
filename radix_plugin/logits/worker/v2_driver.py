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

No device synchronisation in a step without drafts: `apply_staged_writes`, which the runner
calls before each forward pass, enqueues one copy to the host of what `apply` will need (each
grammar slot's committed length and the tokens it may have committed since the row last saw
it), so `apply` waits at most for the previous step's results, never for the forward pass
whose logits it masks. Rows, slots and positions come from the context's host arrays. Only a
step with drafts reads the layout from the device (its draft tokens exist nowhere else), and
a gap longer than the prefetched window (not expected) is read synchronously. `apply` returns
before anything when no request in the batch has a grammar (and vLLM skips processing
entirely when `add_request` returned False for every request in the batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from radix_plugin.logits.worker.masking import BitmaskBuffer, CopyEvent, cuda_event
from radix_plugin.logits.worker.request_rows import row_for_request
from radix_plugin.logits.worker.row_state import GrammarRow, RowStatus

if TYPE_CHECKING:
    import torch
    from vllm import SamplingParams
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState

    from radix_plugin.logits.worker.compile_service import GrammarCompileService


@dataclass(frozen=True)
class _Prefetched:
    """Copied to the host before the forward pass: per grammar slot its committed length, then
    `counts[i]` tokens of `all_token_ids` from the slot's first output its row has not seen,
    all in `host`."""

    slots: list[int]
    counts: list[int]
    host: torch.Tensor
    copied: CopyEvent | None


class V2GrammarDriver:
    """Per-slot grammar rows for Model Runner V2.

    `max_new_tokens` is how many tokens one step may commit per request (1 plus the number of
    speculative tokens): the prefetch window.
    """

    def __init__(
        self,
        service: GrammarCompileService,
        req_states: LogitsProcRequestState,
        *,
        pin_memory: bool = False,
        max_new_tokens: int = 1,
    ) -> None:
        self._service = service
        self._req_states = req_states
        self._pin_memory = pin_memory
        self._max_new_tokens = max_new_tokens
        self._prefetched: _Prefetched | None = None
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

    def apply_staged_writes(self) -> None:
        """Before the forward pass: enqueue the copy to the host of each grammar slot's
        committed length and of the tokens it may have committed since its row last saw it
        (the window covers a refill after preemption too). Ordered after the previous step's
        token writes and before this step's forward on the device's stream."""
        self._prefetched = None
        if not self._rows:
            return
        import torch

        states = self._req_states
        prompt_len, prefill_len = states.prompt_len.np, states.prefill_len.np
        all_token_ids = states.all_token_ids.gpu
        slots = sorted(self._rows)
        counts: list[int] = []
        token_slots: list[int] = []
        token_cols: list[int] = []
        for slot in slots:
            start = int(prompt_len[slot]) + len(self._outputs[slot])
            end = min(
                all_token_ids.shape[1], max(start, int(prefill_len[slot])) + self._max_new_tokens
            )
            counts.append(max(0, end - start))
            token_slots.extend([slot] * (end - start))
            token_cols.extend(range(start, end))
        device = all_token_ids.device
        lengths = states.total_len.gpu[self._to_device(slots, device)].to(torch.int64)
        tokens = all_token_ids[
            self._to_device(token_slots, device), self._to_device(token_cols, device)
        ].to(torch.int64)
        packed = torch.cat([lengths, tokens])
        host = torch.empty(packed.shape, dtype=torch.int64, pin_memory=self._pin_memory)
        host.copy_(packed, non_blocking=True)
        copied = cuda_event() if self._pin_memory else None
        self._prefetched = _Prefetched(slots, counts, host, copied)

    def apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        """Mask every logits row that belongs to a grammar request."""
        prefetched, self._prefetched = self._prefetched, None
        if not self._rows or not any(int(slot) in self._rows for slot in ctx.idx_mapping_np):
            return logits
        slots = [int(slot) for slot in ctx.idx_mapping_np]
        groups = _group_rows(slots, self._rows)
        no_drafts = logits.shape[0] == len(slots)
        if no_drafts and prefetched is not None and set(groups) <= set(prefetched.slots):
            input_ids: list[int] = []  # only draft rows read their input token
            self._catch_up_prefetched(groups, prefetched, ctx)
        else:
            import torch

            layout = torch.stack(
                [
                    ctx.expanded_idx_mapping.to(torch.int64),
                    ctx.pos.to(torch.int64),
                    ctx.input_ids.to(torch.int64),
                ]
            ).cpu()
            row_slots, positions, input_ids = (layout[i].tolist() for i in range(3))
            groups = _group_rows(row_slots, self._rows)
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

    def _catch_up_prefetched(
        self, groups: dict[int, list[int]], prefetched: _Prefetched, ctx: LogitsContext
    ) -> None:
        """Feed each row its committed outputs from the prefetched copy (one row per slot).

        The row's sequence length is the host's upper bound capped by the device's committed
        length: exact for a decode row (its input is the last committed token) and for a
        prefill chunk (which ends inside what was committed)."""
        if prefetched.copied is not None:
            prefetched.copied.synchronize()  # the previous step's results: no forward wait
        data = prefetched.host.tolist()
        n = len(prefetched.slots)
        committed_len = dict(zip(prefetched.slots, data[:n], strict=True))
        windows: dict[int, list[int]] = {}
        offset = n
        for slot, count in zip(prefetched.slots, prefetched.counts, strict=True):
            windows[slot] = data[offset : offset + count]
            offset += count
        prompt_len = self._req_states.prompt_len.np
        gaps: list[tuple[int, int, int]] = []
        for slot, (row, *_) in groups.items():
            seq_len = min(int(ctx.seq_lens_upper_bound_np[row]), committed_len[slot])
            prompt = int(prompt_len[slot])
            committed_outputs = max(0, seq_len - prompt)
            known = self._outputs[slot]
            missing = committed_outputs - len(known)
            if missing > 0:
                taken = windows[slot][:missing]  # the window starts at the first unknown output
                known.extend(taken)
                if len(taken) < missing:  # past the window: read the rest (not expected)
                    gaps.append((slot, prompt + len(known), prompt + committed_outputs))
            elif missing < 0:
                del known[committed_outputs:]
        self._sync_rows(groups, gaps)

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
                del known[max(0, committed_outputs) :]
        self._sync_rows(groups, gaps)

    def _sync_rows(self, groups: dict[int, list[int]], gaps: list[tuple[int, int, int]]) -> None:
        """Read the gaps still missing, then bring each row's matcher up to its outputs."""
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

    def _to_device(self, values: list[int], device: torch.device) -> torch.Tensor:
        """An index tensor on ``device``, copied without synchronising (from pinned memory
        on GPU; the host allocator keeps the block until the copy is done)."""
        import torch

        tensor = torch.tensor(values, dtype=torch.int64)
        if self._pin_memory:
            tensor = tensor.pin_memory()
        return tensor.to(device, non_blocking=True)


def _group_rows(slots: list[int], rows: dict[int, GrammarRow]) -> dict[int, list[int]]:
    """`slot -> [logits rows]` for grammar slots, rows in order (drafts follow the first)."""
    groups: dict[int, list[int]] = {}
    for logits_row, slot in enumerate(slots):
        if slot in rows:
            groups.setdefault(slot, []).append(logits_row)
    return groups
