"""Validation of ``--additional-config '{"radix_plugin": {...}}'``."""

from __future__ import annotations

import pytest

from radix_plugin.config import RadixConfigError, RadixPluginConfig, check_plugin_config


def parse(section: object) -> RadixPluginConfig:
    return RadixPluginConfig.from_additional_config({"radix_plugin": section})


def test_missing_section_gives_defaults() -> None:
    assert RadixPluginConfig.from_additional_config({}) == RadixPluginConfig()
    assert RadixPluginConfig.from_additional_config(None).eviction == "lru"


def test_valid_settings_round_trip() -> None:
    cfg = parse(
        {
            "eviction": "adaptive",
            "eviction_options": {"junk_weight": 1.5},
            "schedule": "dfs",
            "max_wait_steps": 8,
            "pin_share": 0.1,
            "jump_forward": False,
            "host_tier_gib": 4,
            "prefetch": False,
            "load_ahead_steps": 3,
        }
    )
    assert (cfg.host_tier_gib, cfg.prefetch, cfg.load_ahead_steps) == (4, False, 3)
    assert (cfg.eviction, cfg.schedule, cfg.max_wait_steps, cfg.jump_forward) == (
        "adaptive",
        "dfs",
        8,
        False,
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ([], r"must be a JSON object, got \[\]"),
        ({"eviciton": "lru"}, r"unknown radix_plugin setting\(s\) 'eviciton'; valid settings: "),
        ({"eviction": "fifo"}, r"unknown eviction policy 'fifo'; valid choices: adaptive, lfu"),
        ({"eviction": "belady"}, r"unknown eviction policy 'belady'"),
        ({"eviction_options": {"x": 1}}, r"unknown option\(s\) 'x' for eviction policy 'lru'"),
        ({"schedule": "random"}, r"unknown scheduling policy 'random'; valid choices: dfs,"),
        ({"schedule_options": {"max_queue": 0}}, r"max_queue must be >= 1, got 0"),
        ({"max_wait_steps": 2.5}, r"max_wait_steps must be int, got float 2.5"),
        ({"max_wait_steps": True}, r"max_wait_steps must be int, got bool True"),
        ({"max_wait_steps": 0}, r"max_wait_steps must be >= 1, got 0"),
        (
            {"host_tier_gib": -1},
            r"host_tier_gib must be >= 0 \(0 = twice the device pool\), got -1",
        ),
        ({"host_tier_gib": "8G"}, r"host_tier_gib must be float, got str '8G'"),
        ({"load_ahead_steps": -1}, r"load_ahead_steps must be >= 0, got -1"),
        ({"prefetch": "yes"}, r"prefetch must be bool, got str 'yes'"),
        ({"pin_share": 1.5}, r"pin_share must be between 0 and 0.9, got 1.5"),
        ({"jump_forward": "no"}, r"jump_forward must be bool, got str 'no'"),
        (
            {"jump_forward_mode": "fast"},
            r"jump_forward_mode must be one of auto, forced, verify, got 'fast'",
        ),
        (
            {"jump_forward_min_forced_tokens": 0},
            r"jump_forward_min_forced_tokens must be >= 1, got 0",
        ),
        ({"eviction_options": []}, r"eviction_options must be object, got list"),
    ],
)
def test_bad_settings_name_the_value_and_the_choices(section: object, message: str) -> None:
    with pytest.raises(RadixConfigError, match=message):
        parse(section)


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(RadixConfigError) as info:
        parse({"eviction": "mru", "max_wait_steps": 0, "pin_share": "x", "bogus": 1})
    message = str(info.value)
    for part in ("'bogus'", "eviction policy 'mru'", "max_wait_steps must be >= 1", "pin_share"):
        assert part in message


def test_config_is_checked_only_for_the_plugins_scheduler() -> None:
    bad = {"radix_plugin": {"eviction": "mru"}}
    check_plugin_config(None, bad)
    check_plugin_config("vllm.v1.core.sched.scheduler.Scheduler", bad)
    with pytest.raises(RadixConfigError, match="mru"):
        check_plugin_config("radix_plugin.RadixScheduler", bad)
