"""Plain-torch references for every kernel in this package.

They are deliberately naive (per-sequence gathers, dense masks, float64 maths where it matters)
so that they are obviously right by reading; tests compare the Triton kernels against them and
CPU code paths may use them directly where launching Triton makes no sense.
"""

from __future__ import annotations

import torch


def gather_kv(cache: torch.Tensor, block_table_row: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Contiguous [seq_len, kv_heads, head_dim] view of one sequence's paged K or V."""
    block_size = cache.shape[1]
    num_blocks = -(-seq_len // block_size)
    blocks = cache[block_table_row[:num_blocks].long()]  # [nb, bs, h, d]
    return blocks.reshape(-1, cache.shape[2], cache.shape[3])[:seq_len]


def prefix_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    block_table: torch.Tensor,
    softmax_scale: float,
    causal: bool = True,
    compute_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Reference for `prefix_attention`; returns [qsl[-1], num_q_heads, head_dim] in compute_dtype.

    Query i of a sequence with q_len queries and seq_len keys sits at position
    seq_len - q_len + i; causally it sees keys 0..that position.
    """
    qsl = query_start_loc.tolist()
    lens = seq_lens.tolist()
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    group = num_q_heads // k_cache.shape[2]
    out = torch.zeros((qsl[-1], num_q_heads, head_dim), dtype=compute_dtype, device=q.device)
    for b in range(len(lens)):
        start, end, seq_len = qsl[b], qsl[b + 1], lens[b]
        q_len = end - start
        if q_len == 0:
            continue
        qb = q[start:end].to(compute_dtype)  # [q_len, hq, d]
        kb = gather_kv(k_cache, block_table[b], seq_len).to(compute_dtype)
        vb = gather_kv(v_cache, block_table[b], seq_len).to(compute_dtype)
        kb = kb.repeat_interleave(group, dim=1)  # [seq_len, hq, d]
        vb = vb.repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", qb, kb) * softmax_scale
        if causal:
            q_pos = torch.arange(seq_len - q_len, seq_len, device=q.device)
            k_pos = torch.arange(seq_len, device=q.device)
            scores = scores.masked_fill(k_pos[None, :] > q_pos[:, None], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[start:end] = torch.einsum("hqk,khd->qhd", probs, vb)
    return out


def write_kv_cache_ref(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Reference for `write_kv_cache`: token t goes to slot_mapping[t]; negative slots skip."""
    block_size = k_cache.shape[1]
    num_tokens = slot_mapping.shape[0]
    for t, slot in enumerate(slot_mapping.tolist()[:num_tokens]):
        if slot < 0:
            continue
        k_cache[slot // block_size, slot % block_size] = key[t]
        v_cache[slot // block_size, slot % block_size] = value[t]


def apply_token_bitmask_ref(
    logits: torch.Tensor,
    bitmask: torch.Tensor,
    indices: torch.Tensor | None = None,
    vocab_size: int | None = None,
) -> None:
    """Reference for `apply_token_bitmask_inplace` (xgrammar's layout and semantics).

    Bit j of int32 word i of a row allows token 32 * i + j; disallowed logits become -inf.
    With `indices`, only logits rows `indices[k]` are masked, each with bitmask row `indices[k]`.
    """
    if vocab_size is None:
        vocab_size = min(logits.shape[-1], bitmask.shape[-1] * 32)
    rows = (
        torch.arange(logits.shape[0], device=logits.device) if indices is None else indices.long()
    )
    bits = torch.arange(32, device=bitmask.device, dtype=torch.int32)
    words = bitmask[rows]  # [r, words]
    allowed = ((words[:, :, None] >> bits) & 1).bool().reshape(len(rows), -1)[:, :vocab_size]
    sub = logits[rows, :vocab_size]
    logits[rows, :vocab_size] = sub.masked_fill(~allowed, float("-inf"))
