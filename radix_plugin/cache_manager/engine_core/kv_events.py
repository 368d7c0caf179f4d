"""vLLM KV-cache events for block content the plugin moves between the device and the host.

vLLM reports what its device pool caches and evicts: ``BlockStored`` / ``BlockRemoved`` with
``medium="GPU"`` (the device pool's medium on every platform), and ``AllBlocksCleared`` on a
reset. The radix pool emits those through vLLM's own code. What vLLM's code never sees is the
host tier moving content, so the plugin reports it in vLLM's format, as vLLM's own offloading
connector does:

* an evicted block copied to host memory: ``BlockStored(medium="CPU")``, same hash, parent
  and tokens as its device announcement (the replica still holds the prefix, one copy away);
* its host copy dropped (slot reused, connector reset): ``BlockRemoved(medium="CPU")``;
* a block a prefetch loaded into the device pool: ``BlockStored(medium="GPU")``, as if a
  request had computed it (a demand load is cached by vLLM's code when its request runs).

A block can be on both media at once (a host copy stays after a load back), so a consumer
keys blocks by (hash, medium), as vLLM's offloading events already require.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vllm.distributed.kv_events import BlockRemoved, BlockStored


@dataclass(frozen=True, slots=True)
class StoredBlock:
    """One block of a ``BlockStored`` event: what it takes to announce the same content
    again, on another medium, after the request that computed it is gone."""

    block_hash: Any
    parent_hash: Any
    token_ids: tuple[int, ...]
    extra_keys: Any
    lora_id: int | None
    lora_name: str | None
    group_idx: int | None


def split_stored(event: BlockStored) -> list[StoredBlock]:
    """The blocks of ``event``, each with its own parent and tokens."""
    n = len(event.block_hashes)
    size = event.block_size
    extra = event.extra_keys if event.extra_keys is not None else [None] * n
    return [
        StoredBlock(
            block_hash=h,
            parent_hash=event.parent_block_hash if i == 0 else event.block_hashes[i - 1],
            token_ids=tuple(event.token_ids[i * size : (i + 1) * size]),
            extra_keys=extra[i],
            lora_id=event.lora_id,
            lora_name=event.lora_name,
            group_idx=event.group_idx,
        )
        for i, h in enumerate(event.block_hashes)
    ]


def parents_first(blocks: Iterable[StoredBlock]) -> list[StoredBlock]:
    """``blocks`` with every block after its parent (when its parent is among them), each
    chain contiguous (depth-first), so a consumer never sees a child before its parent and
    a chain goes out as one event."""
    blocks = list(blocks)
    present = {b.block_hash for b in blocks}
    children: dict[Any, list[StoredBlock]] = {}
    for b in blocks:
        children.setdefault(b.parent_hash, []).append(b)
    out: list[StoredBlock] = []
    stack = [b for b in reversed(blocks) if b.parent_hash not in present]
    while stack:
        block = stack.pop()
        out.append(block)
        stack.extend(reversed(children.get(block.block_hash, ())))
    return out


def stored_events(blocks: Iterable[StoredBlock], medium: str) -> list[BlockStored]:
    """``BlockStored`` events for ``blocks``, one per run that chains parent to child (the
    shape vLLM gives a request's newly cached blocks)."""
    runs: list[list[StoredBlock]] = []
    for block in blocks:
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and block.parent_hash == last.block_hash
            and (block.lora_id, block.lora_name, block.group_idx)
            == (last.lora_id, last.lora_name, last.group_idx)
        ):
            runs[-1].append(block)
        else:
            runs.append([block])
    return [_stored_event(run, medium) for run in runs]


def _stored_event(run: Sequence[StoredBlock], medium: str) -> BlockStored:
    first = run[0]
    return BlockStored(
        block_hashes=[b.block_hash for b in run],
        parent_block_hash=first.parent_hash,
        token_ids=[t for b in run for t in b.token_ids],
        block_size=len(first.token_ids),
        lora_id=first.lora_id,
        medium=medium,
        lora_name=first.lora_name,
        extra_keys=[b.extra_keys for b in run],
        group_idx=first.group_idx,
    )


def removed_event(block: StoredBlock, medium: str) -> BlockRemoved:
    """vLLM's shape: one ``BlockRemoved`` per block hash."""
    return BlockRemoved(block_hashes=[block.block_hash], medium=medium, group_idx=block.group_idx)
