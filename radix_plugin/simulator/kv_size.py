"""KV cache sizes for the capacity planner: bytes (``4GiB``) or blocks, and the bytes one
block of a model takes, from its Hugging Face ``config.json``."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "bfloat16": 2,
    "float16": 2,
    "half": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*")


class KvSizeError(ValueError):
    """A size, a model config or a dtype the planner cannot use; names the bad value."""


@dataclass(frozen=True, slots=True)
class KvSize:
    label: str
    blocks: int


def parse_bytes(text: str) -> int:
    """``"4GiB"``, ``"512 MiB"``, ``"1.5GB"`` or a plain number of bytes."""
    m = _SIZE.fullmatch(text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in UNITS:
        raise KvSizeError(
            f"bad KV size {text!r}: expected a number and a unit, one of "
            "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"
        )
    value = float(m.group(1)) * UNITS[unit]
    if not value < 2**63:
        raise KvSizeError(f"bad KV size {text!r}: too large")
    return int(value)


def load_model_config(path: str | Path) -> dict[str, Any]:
    """A model directory's ``config.json`` (or that file itself)."""
    p = Path(path)
    p = p / "config.json" if p.is_dir() else p
    try:
        config = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise KvSizeError(f"cannot read the model config {p}: {exc}") from None
    if not isinstance(config, dict):
        raise KvSizeError(f"{p}: not a JSON object")
    return config


def bytes_per_block(config: dict[str, Any], block_size: int, kv_dtype: str = "auto") -> int:
    """K and V of ``block_size`` tokens over every layer: 2 x layers x KV heads x head dim x
    dtype bytes x tokens (full attention; what vLLM allocates per block)."""
    cfg = config.get("text_config", config)
    try:
        layers = int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError) as exc:
        raise KvSizeError(
            f"the model config lacks {exc}; pass --bytes-per-block or --kv-blocks instead"
        ) from None
    model_dtype = cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"
    dtype = kv_dtype if kv_dtype != "auto" else str(model_dtype)
    if dtype not in DTYPE_BYTES:
        raise KvSizeError(f"unknown KV dtype {dtype!r}; choices: {', '.join(DTYPE_BYTES)}")
    return 2 * layers * kv_heads * head_dim * DTYPE_BYTES[dtype] * block_size


def kv_sizes(sizes: str | None, blocks: str | None, per_block: int | None) -> list[KvSize]:
    """``--kv-sizes 1GiB,4GiB`` (needs ``per_block``) or ``--kv-blocks 1000,5000``."""
    out: list[KvSize] = []
    for item in _items(blocks):
        if not (item.isascii() and item.isdigit()) or int(item) < 1:
            raise KvSizeError(f"bad --kv-blocks entry {item!r}: expected a positive integer")
        out.append(KvSize(f"{int(item):,} blocks", int(item)))
    for item in _items(sizes):
        if per_block is None:
            raise KvSizeError("--kv-sizes needs --model DIR (its config.json) or --bytes-per-block")
        n = parse_bytes(item) // per_block
        if n < 1:
            raise KvSizeError(f"KV size {item!r} holds no block of {per_block:,} bytes")
        out.append(KvSize(item, n))
    if not out:
        raise KvSizeError("give --kv-sizes (e.g. 1GiB,4GiB) or --kv-blocks (e.g. 1000,5000)")
    return sorted(out, key=lambda k: k.blocks)


def _items(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]
