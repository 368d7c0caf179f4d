"""Host-side token bitmask buffer shared by the V1 and V2 drivers.

xgrammar fills masks on the CPU (the matchers live there); they are applied on the logits'
device by our Triton kernel (``kernels.token_bitmask``) on GPU and by xgrammar's CPU kernel on
CPU, so the buffer is a CPU int32 tensor sized to the model vocabulary (which
may be padded beyond the tokenizer's) and copied to the device only when rows need masking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class BitmaskBuffer:
    """A growable `(rows, ceil(vocab / 32))` int32 bitmask plus the apply step."""

    def __init__(self, vocab_size: int, rows: int = 0, *, pin_memory: bool = False) -> None:
        self._vocab_size = vocab_size
        self._pin_memory = pin_memory
        self._tensor: torch.Tensor | None = None
        if rows:
            self._allocate(rows)

    def rows(self, count: int) -> torch.Tensor:
        """The buffer, grown to at least `count` rows (contents are undefined until filled)."""
        if self._tensor is None or self._tensor.shape[0] < count:
            self._allocate(max(count, 2 * (0 if self._tensor is None else self._tensor.shape[0])))
        assert self._tensor is not None
        return self._tensor

    def apply(self, logits: torch.Tensor, indices: list[int]) -> None:
        """Set logits of tokens outside each listed row's mask to -inf, in place."""
        if not indices:
            return
        import xgrammar as xgr

        bitmask = self.rows(max(indices) + 1)
        vocab_size = min(self._vocab_size, logits.shape[-1])
        if logits.device.type == "cpu":
            # xgrammar's CPU kernel: the fallback where our Triton kernel cannot run.
            xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=vocab_size, indices=indices)
        else:
            import torch

            from radix_plugin.worker.kernels.token_bitmask import apply_token_bitmask_inplace

            device = logits.device
            bitmask = bitmask[: max(indices) + 1].to(device, non_blocking=True)
            rows = torch.tensor(indices, dtype=torch.int32).to(device, non_blocking=True)
            apply_token_bitmask_inplace(logits, bitmask, indices=rows, vocab_size=vocab_size)
        if logits.shape[-1] > self._vocab_size:
            # Padded ids past the grammar's vocabulary are never legal.
            logits[indices, self._vocab_size :] = float("-inf")

    def _allocate(self, rows: int) -> None:
        import xgrammar as xgr

        tensor = xgr.allocate_token_bitmask(rows, self._vocab_size)
        self._tensor = tensor.pin_memory() if self._pin_memory else tensor
