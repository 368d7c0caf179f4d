"""Host-side token bitmask buffer shared by the V1 and V2 drivers.

xgrammar fills masks on the CPU (the matchers live there); they are applied on the logits'
device by our Triton kernel (``kernels.token_bitmask``) on GPU and by xgrammar's CPU kernel on
CPU, so the buffer is a CPU int32 tensor sized to the model vocabulary (which
may be padded beyond the tokenizer's) and copied to the device only when rows need masking.

The copy to the device is asynchronous (pinned memory), so the buffer just copied may still
be read by the GPU when the next step fills masks. Two buffers alternate, and each is refilled
only after the event recorded behind its last copy has completed; with one step in between,
that wait is normally already over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch


class CopyEvent(Protocol):
    def synchronize(self) -> None: ...


def cuda_event() -> CopyEvent:
    """An event recorded now on the current CUDA stream."""
    import torch

    event = torch.cuda.Event()
    event.record()
    return event


class BitmaskBuffer:
    """Two growable `(rows, ceil(vocab / 32))` int32 bitmasks used in turn, plus the apply step.

    ``new_event`` records an event on the stream of the device copy (:func:`cuda_event` on
    GPU); without it, copies are synchronous and nothing is awaited.
    """

    def __init__(
        self,
        vocab_size: int,
        rows: int = 0,
        *,
        pin_memory: bool = False,
        new_event: Callable[[], CopyEvent] | None = None,
    ) -> None:
        self._vocab_size = vocab_size
        self._pin_memory = pin_memory
        self._new_event = new_event
        self._tensors: list[torch.Tensor | None] = [None, None]
        self._copied: list[CopyEvent | None] = [None, None]
        self._current = 1
        if rows:
            self._tensors[0] = self._allocate(rows)

    def rows(self, count: int) -> torch.Tensor:
        """The next buffer, grown to at least `count` rows, once its last copy to the device
        has completed (contents are undefined until filled). Call once per step."""
        self._current = 1 - self._current
        copied = self._copied[self._current]
        if copied is not None:
            copied.synchronize()
            self._copied[self._current] = None
        return self._grown(count)

    def copied(self) -> None:
        """The current buffer's copy to the device was enqueued: guard it until it completes."""
        if self._new_event is not None:
            self._copied[self._current] = self._new_event()

    def apply(self, logits: torch.Tensor, indices: list[int]) -> None:
        """Set logits of tokens outside each listed row's mask to -inf, in place, using the
        buffer the last :meth:`rows` returned."""
        if not indices:
            return
        import xgrammar as xgr

        bitmask = self._grown(max(indices) + 1)
        vocab_size = min(self._vocab_size, logits.shape[-1])
        if logits.device.type == "cpu":
            # xgrammar's CPU kernel: the fallback where our Triton kernel cannot run.
            xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=vocab_size, indices=indices)
        else:
            import torch

            from radix_plugin.kernels.token_bitmask import apply_token_bitmask_inplace

            device = logits.device
            bitmask = bitmask[: max(indices) + 1].to(device, non_blocking=True)
            self.copied()
            rows = torch.tensor(indices, dtype=torch.int32).to(device, non_blocking=True)
            apply_token_bitmask_inplace(logits, bitmask, indices=rows, vocab_size=vocab_size)
        if logits.shape[-1] > self._vocab_size:
            # Padded ids past the grammar's vocabulary are never legal.
            logits[indices, self._vocab_size :] = float("-inf")

    def _grown(self, count: int) -> torch.Tensor:
        tensor = self._tensors[self._current]
        if tensor is None or tensor.shape[0] < count:
            old = 0 if tensor is None else tensor.shape[0]
            tensor = self._tensors[self._current] = self._allocate(max(count, 2 * old))
        return tensor

    def _allocate(self, rows: int) -> torch.Tensor:
        import xgrammar as xgr

        tensor = xgr.allocate_token_bitmask(rows, self._vocab_size)
        return tensor.pin_memory() if self._pin_memory else tensor
