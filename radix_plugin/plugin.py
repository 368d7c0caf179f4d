"""Entry point for vLLM's `vllm.general_plugins` group.

vLLM calls `register()` once in every process (API server, engine core, each worker) before
any config exists, so it must be cheap and idempotent and must not enable anything by itself:
the plugin only takes effect when the user passes `--scheduler-cls radix_plugin.RadixScheduler`.
What it installs acts only on such engines:

- the plugin's config check when vLLM builds its config, so a bad `--additional-config` fails
  in the user's process before weights load;
- the speculative config that turns jump-forward's draft machinery on (on the CPU platform by
  default; see `jump_forward_speculative_config`);
- the KV-transfer config of the host tier when `--additional-config` asks for it
  (`host_tier: true` or `host_tier_gib > 0`; see `host_tier_kv_transfer_config`);
- with jump-forward drafts configured, `min_p` / `logit_bias` through vLLM's
  speculative-decoding refusal (the scheduler runs those requests in draft-free batches).
"""

from __future__ import annotations

import logging
from typing import Any

from radix_plugin.config import (
    HOST_TIER_CONNECTOR,
    HOST_TIER_CONNECTOR_MODULE,
    JUMP_FORWARD_PROPOSER,
    RadixConfigError,
    RadixPluginConfig,
)

logger = logging.getLogger(__name__)

_registered = False

DRAFT_SLOTS = 16


def register() -> None:
    """Register the plugin's optional components with vLLM (idempotent)."""
    global _registered
    if _registered:
        return
    _registered = True

    from radix_plugin.compat import (
        allow_plain_sampling_with_drafts,
        install_default_kv_transfer_config,
        install_default_speculative_config,
        install_engine_args_check,
        vllm_seams_allowed,
    )
    from radix_plugin.config import check_plugin_config

    if vllm_seams_allowed("registration"):  # every seam the patches below use is intact
        install_default_speculative_config(jump_forward_speculative_config)
        install_engine_args_check(check_plugin_config)
        install_default_kv_transfer_config(host_tier_kv_transfer_config)
        allow_plain_sampling_with_drafts(jump_forward_only)

    from radix_plugin.kernels.attention.registration import register_attention_backends

    register_attention_backends()  # CUSTOM backend; CPU override only if opted in via env


def jump_forward_only(speculative_config: object) -> bool:
    """Whether the only drafts are the plugin's jump-forward ones (no draft model)."""
    return getattr(speculative_config, "model", None) == JUMP_FORWARD_PROPOSER


def jump_forward_speculative_config(engine_args: Any) -> dict[str, Any] | None:
    """The no-op-proposer speculative config jump-forward needs, or None to leave vLLM alone.

    Supplied when the scheduler is `RadixScheduler` (or a subclass), `jump_forward` is not
    off, no logits processors are named (vLLM refuses them with speculative decoding), and
    vLLM's structured-output backend is `auto` or `xgrammar` (scheduler-side grammars are
    xgrammar's: with another backend vLLM 0.33 rejects them, 0.32 compiles them with that
    backend, without the matcher jump-forward reads). Where it is supplied, `auto` becomes
    `xgrammar` (`pin_xgrammar_backend`).
    vLLM 0.32 and 0.33 turn async scheduling (and Model Runner V2) off for this kind of proposer;
    the CPU backend runs without async scheduling anyway, so there it is on by default; on
    other platforms only with an explicit `{"jump_forward": true}`.
    """
    if not _names_radix_scheduler(getattr(engine_args, "scheduler_cls", None)):
        return None
    if getattr(engine_args, "logits_processors", None):
        return None
    section = (getattr(engine_args, "additional_config", None) or {}).get("radix_plugin") or {}
    jump_forward = section.get("jump_forward") if isinstance(section, dict) else None
    if jump_forward is False:
        return None
    if jump_forward is not True and not _on_cpu():
        return None
    backend = _structured_outputs_backend(engine_args)
    if backend not in ("auto", "xgrammar"):
        logger.warning(
            "radix_plugin: jump-forward off: it compiles grammars scheduler-side with xgrammar, "
            "and this engine's structured-output backend is %r (radix grammars then run in the "
            "plugin's logits processor)",
            backend,
        )
        return None
    if backend == "auto":
        pin_xgrammar_backend(engine_args)
    return {
        "method": "custom_class",
        "model": JUMP_FORWARD_PROPOSER,
        "num_speculative_tokens": DRAFT_SLOTS,
    }


def pin_xgrammar_backend(engine_args: Any) -> None:
    """Make vLLM's structured-output backend ``xgrammar`` instead of ``auto``.

    Why: a structured-output manager compiles with one backend per engine, the one its first
    structured request resolved to. Under ``auto`` a vLLM request that xgrammar rejects
    resolves to guidance (or outlines) and latches it; the plugin's scheduler-side grammars
    are xgrammar's, and then vLLM 0.33.0 refuses every one of them, while 0.32.0 hands them
    to guidance, which cannot read some (the strict JSON grammar's escapes), so the request
    fails with a 500. Pinned, such a vLLM request gets vLLM's own 400 at admission instead
    ("not supported by xgrammar"), and every grammar the engine runs is xgrammar's. Runs in
    ``create_engine_config`` before vLLM reads the setting, in each process that builds the
    config (the API server's validation and the engine core agree)."""
    config = engine_args.structured_outputs_config
    if isinstance(config, dict):
        engine_args.structured_outputs_config = {**config, "backend": "xgrammar"}
    else:
        config.backend = "xgrammar"
    logger.info(
        "radix_plugin: structured-output backend auto -> xgrammar (jump-forward compiles "
        "grammars scheduler-side with xgrammar; one backend per engine)"
    )


def _structured_outputs_backend(engine_args: Any) -> str:
    """The backend the user chose for vLLM's structured outputs (``auto`` if none)."""
    config = getattr(engine_args, "structured_outputs_config", None)
    backend = (
        config.get("backend") if isinstance(config, dict) else getattr(config, "backend", None)
    )
    return backend or "auto"


def host_tier_kv_transfer_config(engine_args: Any) -> dict[str, Any] | None:
    """The `--kv-transfer-config` of the host tier, or None to leave vLLM alone.

    Supplied when the scheduler is `RadixScheduler` (or a subclass) and its
    `--additional-config` asks for the host tier (`host_tier: true`, or `host_tier_gib > 0`),
    so one flag turns it on; a config the user wrote wins (see `compat`).
    """
    if not _names_radix_scheduler(getattr(engine_args, "scheduler_cls", None)):
        return None
    try:
        config = RadixPluginConfig.from_additional_config(
            getattr(engine_args, "additional_config", None)
        )
    except RadixConfigError:  # the config check reports it
        return None
    if not config.host_tier_on:
        return None
    return {
        "kv_connector": HOST_TIER_CONNECTOR,
        "kv_connector_module_path": HOST_TIER_CONNECTOR_MODULE,
        "kv_role": "kv_both",
    }


def _names_radix_scheduler(scheduler_cls: Any) -> bool:
    if scheduler_cls is None:
        return False
    if isinstance(scheduler_cls, str):
        if scheduler_cls == "radix_plugin.RadixScheduler":
            return True
        try:
            from vllm.utils.import_utils import resolve_obj_by_qualname

            scheduler_cls = resolve_obj_by_qualname(scheduler_cls)
        except Exception:  # vLLM reports a bad class name itself, later
            return False
    from radix_plugin.cache_manager.engine_core.scheduler import RadixScheduler

    return isinstance(scheduler_cls, type) and issubclass(scheduler_cls, RadixScheduler)


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()
