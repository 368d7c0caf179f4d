"""What ``radix_pin`` holds in one engine, as the scheduler reports it and /metrics shows it."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class PinStats:
    pinned_blocks: int = 0
    """KV blocks pinned in the radix tree (what the ``pin_share`` budget bounds)."""
    pinned_prefixes: int = 0
    """Distinct pinned prefixes (``radix_pin`` requests on one prompt count once)."""
    budget_blocks: int = 0
    """The budget: ``pin_share`` of the usable KV blocks."""

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


METRICS: dict[str, tuple[str, str]] = {
    "pinned_blocks": (
        "radix_plugin:pinned_kv_blocks",
        "KV cache blocks held by radix_pin pins (freed by radix_unpin, radix_pin_ttl, "
        "pin_ttl_s, or newer pins over the pin_share budget).",
    ),
    "pinned_prefixes": (
        "radix_plugin:pinned_prefixes",
        "Distinct prompt prefixes pinned by radix_pin requests.",
    ),
    "budget_blocks": (
        "radix_plugin:pin_budget_kv_blocks",
        "Most KV cache blocks pins may hold (pin_share of the pool).",
    ),
}
"""PinStats field -> (Prometheus gauge name, help text)."""
