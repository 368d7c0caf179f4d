"""The plugin's settings, read from ``--additional-config '{"radix_plugin": {...}}'``.

Validated once at engine start-up so that a typo fails fast with a message that names the bad
key or value and the valid choices, instead of a traceback from deep inside vLLM.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from radix_plugin.core.registry import UnknownPolicyError, make_eviction_policy, make_ordering

CONFIG_KEY = "radix_plugin"
JUMP_FORWARD_MODES = ("forced", "verify")


class RadixConfigError(ValueError):
    """Bad ``--additional-config`` for the plugin; the message says what to change."""


@dataclass(frozen=True)
class RadixPluginConfig:
    eviction: str = "lru"
    """Eviction policy name (see ``eviction_policy_names()``)."""
    eviction_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the eviction policy."""
    schedule: str = "lpm"
    """Waiting-queue order: ``fcfs`` (vLLM's), ``lpm`` or ``dfs``."""
    schedule_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the scheduling policy."""
    max_wait_steps: int = 64
    """A waiting request passed over for this many steps goes first (starvation bound)."""
    in_batch_sharing: bool = True
    """Hold back a waiting request while another one is prefilling the same new prefix."""
    pin_share: float = 0.25
    """Largest share of the KV pool that ``radix_pin`` requests may keep pinned."""
    jump_forward: bool = True
    """Compressed-FSM jump-forward for structured output (masking only when False)."""
    jump_forward_mode: str = "forced"
    """``forced`` (SGLang's semantics: the grammar's forced text is appended in its canonical
    tokenization without asking the model) or ``verify`` (the model verifies every forced
    token, so outputs are exactly those of plain decoding, in more steps)."""
    host_tier_gib: float = 0.0
    """Host-memory tier size in GiB (with ``--kv-transfer-config`` naming
    ``RadixHostTierConnector``); 0 means twice the device KV pool."""
    prefetch: bool = True
    """Host tier: load the prefixes of agents due soon before their requests arrive."""
    load_ahead_steps: int = 2
    """Host tier: prefetch agents whose steps-to-execution is at most this."""

    @classmethod
    def from_additional_config(cls, additional_config: Any) -> RadixPluginConfig:
        """Parse and validate the ``radix_plugin`` section (missing section: defaults)."""
        raw = {}
        if isinstance(additional_config, dict):
            raw = additional_config.get(CONFIG_KEY, {})
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise RadixConfigError(
                f"--additional-config {CONFIG_KEY!r} must be a JSON object, got {raw!r}"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise RadixConfigError(
                f"unknown {CONFIG_KEY} setting(s) {', '.join(map(repr, unknown))}; "
                f"valid settings: {', '.join(fields)}"
            )
        for name, value in raw.items():
            _check_type(name, value, fields[name].type)
        config = cls(**raw)
        config._validate()
        return config

    @classmethod
    def from_vllm_config(cls, vllm_config: Any) -> RadixPluginConfig:
        return cls.from_additional_config(getattr(vllm_config, "additional_config", None))

    def _validate(self) -> None:
        try:
            make_eviction_policy(self.eviction, online=True, **self.eviction_options)
            make_ordering(self.schedule, **self.schedule_options)
        except (UnknownPolicyError, ValueError, TypeError) as exc:
            raise RadixConfigError(f"{CONFIG_KEY}: {exc}") from None
        if self.max_wait_steps < 1:
            raise RadixConfigError(
                f"{CONFIG_KEY}: max_wait_steps must be >= 1, got {self.max_wait_steps}"
            )
        if self.jump_forward_mode not in JUMP_FORWARD_MODES:
            raise RadixConfigError(
                f"{CONFIG_KEY}: jump_forward_mode must be one of "
                f"{', '.join(JUMP_FORWARD_MODES)}, got {self.jump_forward_mode!r}"
            )
        if self.host_tier_gib < 0:
            raise RadixConfigError(
                f"{CONFIG_KEY}: host_tier_gib must be >= 0 (0 = twice the device pool), "
                f"got {self.host_tier_gib}"
            )
        if self.load_ahead_steps < 0:
            raise RadixConfigError(
                f"{CONFIG_KEY}: load_ahead_steps must be >= 0, got {self.load_ahead_steps}"
            )
        if not 0.0 <= self.pin_share <= 0.9:
            raise RadixConfigError(
                f"{CONFIG_KEY}: pin_share must be between 0 and 0.9, got {self.pin_share}"
            )


_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
    "dict[str, Any]": dict,
}


def _check_type(name: str, value: Any, annotation: Any) -> None:
    expected = _TYPES[str(annotation)]
    wrong_bool = isinstance(value, bool) and expected in (int, (int, float))
    if wrong_bool or not isinstance(value, expected):
        expected_name = str(annotation).replace("dict[str, Any]", "object")
        raise RadixConfigError(
            f"{CONFIG_KEY}.{name} must be {expected_name}, got {type(value).__name__} {value!r}"
        )
