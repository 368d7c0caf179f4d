"""Forced rows in vLLM's grammar bitmask, in each version's layout, read by that version's
readers (ported to numpy below, with the file and lines they were ported from).

A batch: structured requests with different draft counts (forced runs among them) and
non-structured requests with and without drafts, in a persistent-batch order different
from the grammar order. vLLM's writer is replayed for what it sees (the forced requests'
drafts hidden: one row each), the plugin's splice runs in the layout ``compat`` selects, and
each reader must hand every request exactly its own intended rows: one-hot rows for its
forced drafts then vLLM's row, or vLLM's rows unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from radix_plugin.compat import BitmaskLayout, grammar_bitmask_layout
from radix_plugin.logits.engine_core.jump_forward_drafts import one_hot_rows, splice_forced_rows

WORDS = 3  # 96-token vocabulary
K = 4  # num_speculative_tokens
STALE = 7777  # what a 0.33 block's unwritten rows hold (an earlier step's masks)

Reader = Callable[[list[str], np.ndarray, dict[str, list[int]], list[str]], np.ndarray]


# --- vLLM's readers, ported -------------------------------------------------------------


def _logit_indices(
    grammar_ids: list[str], spec: dict[str, list[int]], batch: list[str]
) -> tuple[dict[str, int], int]:
    """Both versions, v1/structured_output/utils.py:129-137: each request's first logit row
    in the persistent batch (every request's drafts shift the later ones)."""
    structured, indices, offset = set(grammar_ids), {}, 0
    for batch_index, req_id in enumerate(batch):
        logit_index = batch_index + offset
        offset += len(spec.get(req_id, ()))
        if req_id in structured:
            indices[req_id] = logit_index
    return indices, len(batch) + offset


def read_v032(
    grammar_ids: list[str], bitmask: np.ndarray, spec: dict[str, list[int]], batch: list[str]
) -> np.ndarray:
    """vLLM 0.32.0 ``apply_grammar_bitmask``, v1/structured_output/utils.py:139-157."""
    indices, num_logits = _logit_indices(grammar_ids, spec, batch)
    out = np.full((num_logits, bitmask.shape[1]), -1, dtype=np.int32)
    cumulative_index = 0
    for req_id in grammar_ids:
        num_spec_tokens = len(spec.get(req_id, ()))
        if (logit_idx := indices.get(req_id)) is not None:
            for i in range(1 + num_spec_tokens):
                out[logit_idx + i] = bitmask[cumulative_index + i]
        cumulative_index += 1 + num_spec_tokens
    return out


def read_v033(
    grammar_ids: list[str], bitmask: np.ndarray, spec: dict[str, list[int]], batch: list[str]
) -> np.ndarray:
    """vLLM 0.33.0 ``apply_grammar_bitmask``, v1/structured_output/utils.py:141-160."""
    indices, num_logits = _logit_indices(grammar_ids, spec, batch)
    out = np.full((num_logits, bitmask.shape[1]), -1, dtype=np.int32)
    mask_stride = bitmask.shape[0] // len(grammar_ids)
    cumulative_index = 0
    for req_id in grammar_ids:
        num_rows = 1 + len(spec.get(req_id, ()))
        if (logit_idx := indices.get(req_id)) is not None:
            out[logit_idx : logit_idx + num_rows] = bitmask[
                cumulative_index : cumulative_index + num_rows
            ]
        cumulative_index += mask_stride
    return out


def read_v033_mrv2(
    grammar_ids: list[str], bitmask: np.ndarray, spec: dict[str, list[int]], batch: list[str]
) -> np.ndarray:
    """vLLM 0.33.0 Model Runner V2, v1/worker/gpu/structured_outputs.py:86-110 (the mapping,
    ``assert num_masks == len(mapping)``) and the kernel's row placement, :155-165 (a
    position at or past the request's logit count is skipped)."""
    mask_stride = K + 1  # decode_query_len, v1/worker/gpu/model_runner.py:439-442
    req_id_to_idx = {req_id: i for i, req_id in enumerate(batch)}
    mapping = [
        req_id_to_idx[req_id] * mask_stride + position
        for req_id in grammar_ids
        for position in range(mask_stride)
    ]
    assert bitmask.shape[0] == len(mapping)
    cu_num_logits = np.cumsum([0] + [1 + len(spec.get(r, ())) for r in batch])
    out = np.full((cu_num_logits[-1], bitmask.shape[1]), -1, dtype=np.int32)
    for bitmask_idx, mapping_idx in enumerate(mapping):
        req_idx, position = divmod(mapping_idx, mask_stride)
        start = cu_num_logits[req_idx]
        if position < cu_num_logits[req_idx + 1] - start:
            out[start + position] = bitmask[bitmask_idx]
    return out


# --- vLLM's writer, replayed ------------------------------------------------------------


def vllm_row(request: int, position: int) -> np.ndarray:
    """A mask vLLM's writer fills (distinct per request and position)."""
    return np.full(WORDS, request * 100 + position + 1, dtype=np.int32)


def write(layout: BitmaskLayout, grammar_ids: list[str], visible: dict[str, list[int]]):
    """``StructuredOutputManager.grammar_bitmask`` for the drafts vLLM sees: 0.32.0 packs
    ``1 + len(drafts)`` rows per request (v1/structured_output/__init__.py:416-455); 0.33.0
    writes them at the start of each request's ``K + 1`` rows and leaves the rest as an
    earlier step left them (:393-395,451-452,524-526)."""
    if layout is BitmaskLayout.PACKED:
        rows = [
            vllm_row(r, p)
            for r, rid in enumerate(grammar_ids)
            for p in range(1 + len(visible.get(rid, ())))
        ]
        return np.stack(rows)
    out = np.full((len(grammar_ids) * (K + 1), WORDS), STALE, dtype=np.int32)
    for r, rid in enumerate(grammar_ids):
        for p in range(1 + len(visible.get(rid, ()))):
            out[r * (K + 1) + p] = vllm_row(r, p)
    return out


# --- the batch ----------------------------------------------------------------------------

GRAMMAR_IDS = ["a", "b", "c", "d", "e"]  # structured, in the scheduler's order
BATCH = ["x", "d", "a", "y", "c", "e", "b"]  # the worker's persistent batch
SPEC = {  # every scheduled draft, as the worker sees them (forced ones restored)
    "a": [11, 12, 13],  # structured, 3 drafts of its own (verified)
    "b": [40, 41, 42, 43],  # structured, a forced run of K drafts
    "c": [],  # structured, no drafts
    "d": [70, 5],  # structured, a forced run of 2
    "e": [20, -1, -1],  # structured, padded drafts (vLLM's rows)
    "x": [1, 2],  # not structured, with drafts
    "y": [],  # not structured
}
FORCED = {"b": SPEC["b"], "d": SPEC["d"]}


def intended(forced: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """What each structured request must read: forced one-hot rows then vLLM's (bonus) row,
    or all of vLLM's rows."""
    out = {}
    for r, rid in enumerate(GRAMMAR_IDS):
        if rid in forced:
            out[rid] = np.concatenate([one_hot_rows(forced[rid], WORDS), vllm_row(r, 0)[None]])
        else:
            out[rid] = np.stack([vllm_row(r, p) for p in range(1 + len(SPEC[rid]))])
    return out


def rows_read(reader: Reader, bitmask: np.ndarray) -> dict[str, np.ndarray]:
    """Each request's logit rows after ``reader`` placed the bitmask."""
    placed = reader(GRAMMAR_IDS, bitmask, SPEC, BATCH)
    cu = np.cumsum([0] + [1 + len(SPEC[r]) for r in BATCH])
    return {rid: placed[cu[i] : cu[i + 1]] for i, rid in enumerate(BATCH)}


def spliced(layout: BitmaskLayout, forced: dict[str, list[int]]) -> np.ndarray:
    visible = {rid: t for rid, t in SPEC.items() if rid not in forced}
    bitmask = write(layout, GRAMMAR_IDS, visible)
    if not forced:  # the drafter returns vLLM's bitmask untouched
        return bitmask
    out = splice_forced_rows(bitmask.copy(), GRAMMAR_IDS, visible, forced, layout)
    assert out is not bitmask
    return out


def assert_each_reads_its_own(reader: Reader, bitmask: np.ndarray, forced: dict) -> None:
    got, want = rows_read(reader, bitmask), intended(forced)
    for rid in GRAMMAR_IDS:
        assert np.array_equal(got[rid], want[rid]), rid
    for rid in set(BATCH) - set(GRAMMAR_IDS):  # allow-all, untouched
        assert (got[rid] == -1).all(), rid


READERS = {
    BitmaskLayout.PACKED: [read_v032],
    BitmaskLayout.REQUEST_BLOCKS: [read_v033, read_v033_mrv2],
}
CASES = [
    (layout, reader, forced)
    for layout, readers in READERS.items()
    for reader in readers
    for forced in (FORCED, {"b": FORCED["b"]}, {})
]


@pytest.mark.parametrize(
    ("layout", "reader", "forced"),
    CASES,
    ids=[f"{c[0].value}-{c[1].__name__}-{'+'.join(c[2]) or 'none'}" for c in CASES],
)
def test_every_request_reads_exactly_its_own_rows(
    layout: BitmaskLayout, reader: Reader, forced: dict[str, list[int]]
) -> None:
    assert_each_reads_its_own(reader, spliced(layout, forced), forced)


def test_request_blocks_keep_vllms_shape_and_define_the_unread_rows() -> None:
    out = spliced(BitmaskLayout.REQUEST_BLOCKS, FORCED)
    assert out.shape == (len(GRAMMAR_IDS) * (K + 1), WORDS)
    d = GRAMMAR_IDS.index("d") * (K + 1)
    assert (out[d + 3 : d + K + 1] == -1).all()  # after d's bonus row: allow-all, not stale
    a = GRAMMAR_IDS.index("a") * (K + 1)
    assert (out[a + 4] == STALE).all()  # a request that is not forced keeps vLLM's block


@pytest.mark.parametrize(
    ("layout", "reader"),
    [(BitmaskLayout.PACKED, read_v033), (BitmaskLayout.REQUEST_BLOCKS, read_v032)],
    ids=["packed-read-by-0.33", "blocks-read-by-0.32"],
)
def test_the_other_versions_layout_hands_requests_wrong_rows(
    layout: BitmaskLayout, reader: Reader
) -> None:
    """Why the layout is chosen by version: the other one misreads (what 0.33 would do
    with the 0.32 splice)."""
    with pytest.raises((AssertionError, IndexError, ValueError)):
        assert_each_reads_its_own(reader, spliced(layout, FORCED), FORCED)


def test_layout_is_chosen_by_the_vllm_version() -> None:
    assert grammar_bitmask_layout("0.32.0+cpu") is BitmaskLayout.PACKED
    assert grammar_bitmask_layout("0.32.0") is BitmaskLayout.PACKED
    assert grammar_bitmask_layout("0.33.0") is BitmaskLayout.REQUEST_BLOCKS
    assert grammar_bitmask_layout("0.34.1rc1") is BitmaskLayout.REQUEST_BLOCKS
    import vllm

    assert grammar_bitmask_layout() is grammar_bitmask_layout(vllm.__version__)


def test_a_block_too_small_for_the_forced_run_is_refused() -> None:
    bitmask = write(BitmaskLayout.REQUEST_BLOCKS, ["a"], {})
    with pytest.raises(ValueError, match="5 forced drafts in a block of 5 rows"):
        splice_forced_rows(bitmask, ["a"], {}, {"a": [1] * 5}, BitmaskLayout.REQUEST_BLOCKS)
