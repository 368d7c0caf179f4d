"""What ``radix_pin`` holds in one engine, as the scheduler reports it (and /metrics shows it:
``radix_plugin.plugin_metrics``)."""

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
