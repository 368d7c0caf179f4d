"""The plugin's settings, read from ``--additional-config '{"radix_plugin": {...}}'``.

Validated once at engine start-up so that a typo fails fast with a message that names the bad
key or value and the valid choices, instead of a traceback from deep inside vLLM.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from radix_plugin.cache_manager.core.hints import MAX_PIN_TTL_S
from radix_plugin.cache_manager.core.registry import (
    UnknownPolicyError,
    make_eviction_policy,
    make_ordering,
)
from radix_plugin.logits.core.jump_forward_mode import DEFAULT_MIN_FORCED_TOKENS, ENGINE_MODES

CONFIG_KEY = "radix_plugin"
JUMP_FORWARD_PROPOSER = "radix_plugin.logits.engine_core.jump_forward_drafts.NoDraftProposer"
"""The ``--speculative-config`` model that turns jump-forward drafts on (no draft model)."""
JUMP_FORWARD_MODES = ENGINE_MODES
HOST_TIER_CONNECTOR = "RadixHostTierConnector"
HOST_TIER_CONNECTOR_MODULE = "radix_plugin.cache_manager.connector"


WATCHDOG_ENV = "RADIX_PLUGIN_WATCHDOG"
"""``1`` turns the watchdog on for every plugin engine started with this environment: how
benchmarks and the soak watch engines whose ``--additional-config`` is what they measure."""


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
    pin_ttl_s: float = 0.0
    """Seconds a ``radix_pin`` lasts when the request sets no ``radix_pin_ttl``; 0: until
    unpinned (``radix_unpin``), displaced by newer pins over the budget, or a cache reset."""
    jump_forward: bool = True
    """Compressed-FSM jump-forward for structured output (masking only when False)."""
    jump_forward_mode: str = "auto"
    """``forced`` (SGLang's semantics: the grammar's forced text is appended in its canonical
    tokenization without asking the model), ``verify`` (the model verifies every forced
    token, so outputs are exactly those of plain decoding, in more steps) or ``auto``
    (forced for runs of at least ``jump_forward_min_forced_tokens``, verified for shorter
    ones); see ``core.jump_forward_mode``. Requests override it with ``radix_jump_forward``."""
    jump_forward_min_forced_tokens: int = DEFAULT_MIN_FORCED_TOKENS
    """``auto`` mode: shortest forced run (in tokens) appended without verification."""
    host_tier: bool = False
    """Turn the host-memory KV tier on (the plugin supplies ``--kv-transfer-config`` for
    ``RadixHostTierConnector`` unless the user gave one); ``host_tier_gib > 0`` also does."""
    host_tier_gib: float = 0.0
    """Host-memory tier size in GiB; 0 means twice the device KV pool."""
    prefetch: bool = True
    """Host tier: load the prefixes of agents due soon before their requests arrive."""
    load_ahead_steps: int = 2
    """Host tier: prefetch agents whose steps-to-execution is at most this."""
    watchdog: bool = False
    """Fail the engine (with a dump of the scheduler's view) when a request cannot progress
    (see ``cache_manager.engine_core.watchdog``); also on with ``RADIX_PLUGIN_WATCHDOG=1``."""

    @classmethod
    def from_additional_config(cls, additional_config: Any) -> RadixPluginConfig:
        """Parse and validate the ``radix_plugin`` section (missing section: defaults).

        Every problem is reported in one ``RadixConfigError`` (joined by ``"; "``), so a user
        fixing a config does not restart the engine once per typo.
        """
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
        problems: list[str] = []
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            problems.append(
                f"unknown {CONFIG_KEY} setting(s) {', '.join(map(repr, unknown))}; "
                f"valid settings: {', '.join(fields)}"
            )
        typed = {}
        for name, value in raw.items():
            if name in fields:
                problem = _type_problem(name, value, fields[name].type)
                if problem:
                    problems.append(problem)
                else:
                    typed[name] = value
        problems.extend(cls(**typed)._problems())
        if problems:
            raise RadixConfigError("; ".join(problems))
        return cls(**typed)

    @property
    def host_tier_on(self) -> bool:
        """Whether this config asks for the host tier by itself."""
        return self.host_tier or self.host_tier_gib > 0

    @classmethod
    def from_vllm_config(cls, vllm_config: Any) -> RadixPluginConfig:
        return cls.from_additional_config(getattr(vllm_config, "additional_config", None))

    @property
    def watchdog_on(self) -> bool:
        """The ``watchdog`` setting, or ``RADIX_PLUGIN_WATCHDOG=1`` in the environment."""
        return self.watchdog or os.environ.get(WATCHDOG_ENV) == "1"

    def _problems(self) -> list[str]:
        problems = []
        try:
            make_eviction_policy(self.eviction, online=True, **self.eviction_options)
        except (UnknownPolicyError, ValueError, TypeError) as exc:
            problems.append(f"{CONFIG_KEY}: {exc}")
        try:
            make_ordering(self.schedule, **self.schedule_options)
        except (UnknownPolicyError, ValueError, TypeError) as exc:
            problems.append(f"{CONFIG_KEY}: {exc}")
        if self.max_wait_steps < 1:
            problems.append(f"{CONFIG_KEY}: max_wait_steps must be >= 1, got {self.max_wait_steps}")
        if self.jump_forward_mode not in JUMP_FORWARD_MODES:
            problems.append(
                f"{CONFIG_KEY}: jump_forward_mode must be one of "
                f"{', '.join(JUMP_FORWARD_MODES)}, got {self.jump_forward_mode!r}"
            )
        if self.jump_forward_min_forced_tokens < 1:
            problems.append(
                f"{CONFIG_KEY}: jump_forward_min_forced_tokens must be >= 1, "
                f"got {self.jump_forward_min_forced_tokens}"
            )
        if self.host_tier_gib < 0:
            problems.append(
                f"{CONFIG_KEY}: host_tier_gib must be >= 0 (0 = twice the device pool), "
                f"got {self.host_tier_gib}"
            )
        if self.load_ahead_steps < 0:
            problems.append(
                f"{CONFIG_KEY}: load_ahead_steps must be >= 0, got {self.load_ahead_steps}"
            )
        if not 0.0 <= self.pin_share <= 0.9:
            problems.append(
                f"{CONFIG_KEY}: pin_share must be between 0 and 0.9, got {self.pin_share}"
            )
        if not (math.isfinite(self.pin_ttl_s) and 0.0 <= self.pin_ttl_s <= MAX_PIN_TTL_S):
            problems.append(
                f"{CONFIG_KEY}: pin_ttl_s must be between 0 (no expiry) and "
                f"{MAX_PIN_TTL_S:.0f} seconds, got {self.pin_ttl_s}"
            )
        return problems


def check_plugin_config(scheduler_cls: Any, additional_config: Any) -> None:
    """Validate the plugin's config when ``scheduler_cls`` is the plugin's scheduler.

    Run in the user's process while vLLM builds its config (see ``compat``), so a bad
    ``--additional-config`` fails there, before the engine core starts and loads weights.
    """
    name = (
        scheduler_cls
        if isinstance(scheduler_cls, str)
        else getattr(scheduler_cls, "__module__", "")
    )
    if isinstance(name, str) and name.startswith("radix_plugin"):
        RadixPluginConfig.from_additional_config(additional_config)


_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
    "dict[str, Any]": dict,
}


def _type_problem(name: str, value: Any, annotation: Any) -> str:
    expected = _TYPES[str(annotation)]
    wrong_bool = isinstance(value, bool) and expected in (int, (int, float))
    if wrong_bool or not isinstance(value, expected):
        expected_name = str(annotation).replace("dict[str, Any]", "object")
        return f"{CONFIG_KEY}.{name} must be {expected_name}, got {type(value).__name__} {value!r}"
    return ""
