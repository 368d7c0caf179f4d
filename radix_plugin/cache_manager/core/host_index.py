"""Scheduler-side index of the host tier: which evicted blocks the host pool holds, and where.

Keyed by vLLM's chained block hash (with its KV-group id), so a host copy is found by the same
key as the device copy it replaced and can never be confused with other content. Slots are
reused least-recently-used first, but never while a load still reads them (``acquire``) or
while a lookup of the current step has promised them to a request (``protect``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator


class HostIndex:
    """Block hash -> host slot, with LRU reuse of slots nobody reads."""

    def __init__(self, num_slots: int, on_drop: Callable[[Hashable], None] | None = None) -> None:
        """``on_drop`` is called with every block hash whose copy is forgotten (its slot
        reused, or :meth:`clear`)."""
        if num_slots < 1:
            raise ValueError(f"the host tier needs at least 1 slot, got {num_slots}")
        self.num_slots = num_slots
        self._slot_of: OrderedDict[Hashable, int] = OrderedDict()  # oldest use first
        self._hash_of: dict[int, Hashable] = {}
        self._free = list(range(num_slots - 1, -1, -1))
        self._readers: dict[int, int] = {}
        self._protected: set[int] = set()
        self._on_drop = on_drop

    def __len__(self) -> int:
        return len(self._slot_of)

    def __iter__(self) -> Iterator[Hashable]:
        """Block hashes held, least recently used first."""
        return iter(self._slot_of)

    def __contains__(self, block_hash: Hashable) -> bool:
        return block_hash in self._slot_of

    def get(self, block_hash: Hashable) -> int | None:
        return self._slot_of.get(block_hash)

    def touch(self, block_hash: Hashable) -> None:
        """Mark a use (a hit, or the same content evicted from the device again)."""
        self._slot_of.move_to_end(block_hash)

    def store(self, block_hash: Hashable) -> int | None:
        """A slot for a new copy of ``block_hash``: a free one, else the least recently used
        one nobody reads. ``None`` when every slot is being read (the save is skipped: the
        host tier is a best-effort cache)."""
        if block_hash in self._slot_of:
            raise ValueError(f"block {block_hash!r} is already in the host tier")
        slot = self._free.pop() if self._free else self._reuse_lru_slot()
        if slot is None:
            return None
        self._slot_of[block_hash] = slot
        self._hash_of[slot] = block_hash
        return slot

    def protect(self, slots: Iterable[int]) -> None:
        """Keep ``slots`` until :meth:`end_step`: a lookup counted them as a hit this step."""
        self._protected.update(slots)

    def end_step(self) -> None:
        self._protected.clear()

    def acquire(self, slots: Iterable[int]) -> None:
        """A load starts reading ``slots``; they cannot be reused until :meth:`release`."""
        for slot in slots:
            if slot not in self._hash_of:
                raise KeyError(f"host slot {slot} holds nothing")
            self._readers[slot] = self._readers.get(slot, 0) + 1

    def release(self, slots: Iterable[int]) -> None:
        for slot in slots:
            left = self._readers[slot] - 1
            if left:
                self._readers[slot] = left
            else:
                del self._readers[slot]

    def clear(self) -> int:
        """Forget every copy nobody reads; returns how many were dropped."""
        dropped = [h for h, s in self._slot_of.items() if s not in self._readers]
        for block_hash in dropped:
            self._drop(block_hash)
        return len(dropped)

    def _reuse_lru_slot(self) -> int | None:
        for block_hash, slot in self._slot_of.items():
            if slot not in self._readers and slot not in self._protected:
                self._drop(block_hash)
                return self._free.pop()
        return None

    def _drop(self, block_hash: Hashable) -> None:
        slot = self._slot_of.pop(block_hash)
        del self._hash_of[slot]
        self._free.append(slot)
        if self._on_drop is not None:
            self._on_drop(block_hash)
