"""Entry point for vLLM's `vllm.general_plugins` group.

vLLM calls `register()` once in every process (API server, engine core, each worker) before
any config exists, so it must be cheap and idempotent and must not enable anything: the plugin
only takes effect when the user passes `--scheduler-cls radix_plugin.RadixScheduler`. The one
thing it adds to every process is the plugin's config check when vLLM builds its config
(it does nothing unless that scheduler is named), so a bad `--additional-config` fails in the
user's process before weights load; and, with jump-forward drafts configured, it lets
`min_p` / `logit_bias` through vLLM's speculative-decoding refusal (the scheduler runs those
requests in draft-free batches).
"""

from __future__ import annotations

_registered = False


def register() -> None:
    """Register the plugin's optional components with vLLM (idempotent)."""
    global _registered
    if _registered:
        return
    _registered = True

    from radix_plugin.worker.attention.registration import register_attention_backends

    register_attention_backends()  # CUSTOM backend; CPU override only if opted in via env

    from radix_plugin.compat import allow_plain_sampling_with_drafts, install_engine_args_check
    from radix_plugin.core.config import check_plugin_config

    install_engine_args_check(check_plugin_config)
    allow_plain_sampling_with_drafts(jump_forward_only)


def jump_forward_only(speculative_config: object) -> bool:
    """Whether the only drafts are the plugin's jump-forward ones (no draft model)."""
    from radix_plugin.core.config import JUMP_FORWARD_PROPOSER

    return getattr(speculative_config, "model", None) == JUMP_FORWARD_PROPOSER
