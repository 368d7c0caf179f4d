"""``VLLM_PLUGINS`` and the plugin's entry points: a missing name fails loudly.

vLLM loads endpoint plugins only when ``VLLM_PLUGINS`` names them, and once it is set the
same list also filters ``vllm.general_plugins`` and ``vllm.stat_logger_plugins`` (not
``vllm.logits_processors``). Naming only the SGLang endpoint would silently drop the general
plugin (config check, jump-forward's speculative config, attention backend) and the pin
gauges; a failed import is only logged by vLLM. Both the endpoint (at app build) and the
scheduler (at engine start) check the list instead. Pure: reads the environment only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

GENERAL_PLUGIN = "radix_plugin"
STAT_LOGGER_PLUGIN = "radix_pins"
SGLANG_ENDPOINT_PLUGIN = "radix_sglang"
FILTERED_ENTRY_POINTS = (GENERAL_PLUGIN, STAT_LOGGER_PLUGIN, SGLANG_ENDPOINT_PLUGIN)
"""Our entry points in the groups ``VLLM_PLUGINS`` filters (pyproject.toml)."""
RECOMMENDED_VALUE = ",".join(FILTERED_ENTRY_POINTS)


class PluginAllowlistError(RuntimeError):
    """``VLLM_PLUGINS`` leaves out one of the plugin's entry points."""


def allowlist(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The names in ``VLLM_PLUGINS`` (vLLM splits on commas), or None when it is unset."""
    env = os.environ if environ is None else environ
    raw = env.get("VLLM_PLUGINS")
    return None if raw is None else raw.split(",")


def check_allowlist(
    required: tuple[str, ...] = FILTERED_ENTRY_POINTS, environ: Mapping[str, str] | None = None
) -> None:
    """Raise when ``VLLM_PLUGINS`` is set and leaves out any of ``required``."""
    names = allowlist(environ)
    if names is None:
        return
    missing = [name for name in required if name not in names]
    if missing:
        raise PluginAllowlistError(
            f"VLLM_PLUGINS={','.join(names)!r} leaves out radix-plugin's "
            f"{', '.join(missing)}: vLLM would silently skip "
            f"{'them' if len(missing) > 1 else 'it'}. Set VLLM_PLUGINS={RECOMMENDED_VALUE} "
            "(plus any other plugins you use), or unset it when not serving the SGLang API."
        )
