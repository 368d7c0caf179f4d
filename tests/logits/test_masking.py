"""The host bitmask buffer: a buffer whose copy to the device may still be in flight is never
refilled (double buffering, each buffer guarded by the event recorded after its copy)."""

from __future__ import annotations

from radix_plugin.logits.worker.masking import BitmaskBuffer

VOCAB = 100


class FakeEvent:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def synchronize(self) -> None:
        self.log.append(f"wait {self.name}")


def test_a_buffer_is_refilled_only_after_its_copy_completed() -> None:
    log: list[str] = []
    names = iter(["copy0", "copy1", "copy2"])
    buffer = BitmaskBuffer(VOCAB, new_event=lambda: FakeEvent(log, next(names)))
    first = buffer.rows(2)
    buffer.copied()  # the first step's copy is enqueued
    second = buffer.rows(2)
    assert second.data_ptr() != first.data_ptr()  # the other buffer: no wait needed
    assert log == []
    buffer.copied()
    third = buffer.rows(4)  # the first buffer again (grown): only after its copy is done
    assert log == ["wait copy0"]
    assert third.shape[0] >= 4
    buffer.copied()
    buffer.rows(1)
    assert log == ["wait copy0", "wait copy1"]


def test_without_device_copies_nothing_is_awaited() -> None:
    buffer = BitmaskBuffer(VOCAB)
    a = buffer.rows(3)
    b = buffer.rows(3)
    assert a.shape == b.shape and a.shape[0] >= 3
