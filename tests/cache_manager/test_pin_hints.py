"""``radix_unpin`` / ``radix_pin_ttl`` hints and the ``pin_ttl_s`` setting: strict validation."""

from __future__ import annotations

import pytest

from radix_plugin.cache_manager.core.hints import HintError, parse_hints
from radix_plugin.config import RadixConfigError, RadixPluginConfig


def test_unpin_and_ttl_parse() -> None:
    assert parse_hints({"radix_unpin": True}).unpin
    assert parse_hints({"radix_unpin": "true"}).unpin
    hints = parse_hints({"radix_pin": True, "radix_pin_ttl": 30})
    assert hints.pin and hints.pin_ttl_s == 30.0 and not hints.unpin
    assert parse_hints({"radix_pin": True, "radix_pin_ttl": "2.5"}).pin_ttl_s == 2.5
    assert parse_hints({"radix_pin": True}).pin_ttl_s is None  # the setting decides


@pytest.mark.parametrize(
    ("xargs", "message"),
    [
        ({"radix_unpin": "maybe"}, "radix_unpin must be a boolean"),
        ({"radix_unpin": 2}, "radix_unpin must be a boolean"),
        ({"radix_unpin": True, "radix_pin": True}, "radix_unpin and radix_pin cannot both"),
        ({"radix_pin": True, "radix_pin_ttl": True}, "radix_pin_ttl must be a number"),
        ({"radix_pin": True, "radix_pin_ttl": False}, "radix_pin_ttl must be a number"),
        ({"radix_pin": True, "radix_pin_ttl": 0}, "radix_pin_ttl must be a number"),
        ({"radix_pin": True, "radix_pin_ttl": -1}, "radix_pin_ttl must be a number"),
        ({"radix_pin": True, "radix_pin_ttl": float("nan")}, "radix_pin_ttl must be a number"),
        ({"radix_pin": True, "radix_pin_ttl": float("inf")}, "radix_pin_ttl must be a number"),
        ({"radix_pin": True, "radix_pin_ttl": 1e9}, "radix_pin_ttl must be a number"),
        ({"radix_pin": True, "radix_pin_ttl": "soon"}, "radix_pin_ttl must be a number"),
        ({"radix_pin": True, "radix_pin_ttl": [5]}, "radix_pin_ttl must be a number"),
        ({"radix_pin_ttl": 5}, "radix_pin_ttl needs radix_pin"),
    ],
)
def test_bad_unpin_and_ttl_hints_name_the_key(xargs: dict, message: str) -> None:
    with pytest.raises(HintError, match=message):
        parse_hints(xargs)


def test_pin_ttl_setting() -> None:
    assert RadixPluginConfig().pin_ttl_s == 0.0  # default: pins last until released
    cfg = RadixPluginConfig.from_additional_config({"radix_plugin": {"pin_ttl_s": 600}})
    assert cfg.pin_ttl_s == 600
    for bad in (-1, float("inf"), 1e9, True, "60"):
        with pytest.raises(RadixConfigError, match="pin_ttl_s"):
            RadixPluginConfig.from_additional_config({"radix_plugin": {"pin_ttl_s": bad}})
