"""Register the plugin's attention backend with vLLM's backend registry.

Called from `radix_plugin.plugin.register()` in every vLLM process. It changes nothing by
itself:

- GPU: `AttentionBackendEnum.CUSTOM` is pointed at our backend, so it is used only when the
  user asks for `--attention-backend CUSTOM` (another plugin that already claimed CUSTOM is
  left alone).
- CPU: vLLM's CPU platform ignores `--attention-backend` ("Cannot use X backend on CPU") and
  always returns `AttentionBackendEnum.CPU_ATTN.get_path()`, which honours registry overrides.
  With `RADIX_PLUGIN_CPU_ATTENTION=triton` (and `TRITON_INTERPRET=1`, since Triton has no CPU
  backend) we override CPU_ATTN with our backend, so CPU engines can run the same kernels for
  correctness tests. Without the variable CPU engines are untouched.
"""

from __future__ import annotations

import os

BACKEND_PATH = "radix_plugin.kernels.attention.backend.RadixTritonAttentionBackend"
CPU_OVERRIDE_ENV = "RADIX_PLUGIN_CPU_ATTENTION"


def register_attention_backends() -> None:
    """Make the backend selectable (CUSTOM) and apply the opt-in CPU override, if set."""
    from vllm.logger import init_logger
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    # Under the "vllm." namespace so vLLM's handlers print it in every engine process.
    logger = init_logger("vllm.plugins.radix_plugin.kernels.attention")

    custom = AttentionBackendEnum.CUSTOM
    if not custom.is_overridden():
        register_backend(custom, BACKEND_PATH)
    elif custom.get_path() != BACKEND_PATH:
        logger.warning(
            "AttentionBackendEnum.CUSTOM is already registered to %s; "
            "radix_plugin's Triton backend is not selectable as CUSTOM",
            custom.get_path(),
        )

    mode = os.environ.get(CPU_OVERRIDE_ENV, "").strip().lower()
    if mode in ("", "native", "cpu_attn"):
        return
    if mode != "triton":
        raise ValueError(f"{CPU_OVERRIDE_ENV}={mode!r}: expected 'triton' or unset")
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            f"{CPU_OVERRIDE_ENV}=triton runs Triton kernels on CPU, which needs the Triton "
            "interpreter: set TRITON_INTERPRET=1 as well"
        )
    register_backend(AttentionBackendEnum.CPU_ATTN, BACKEND_PATH)
    logger.info("radix_plugin: CPU_ATTN overridden by %s (Triton interpreter)", BACKEND_PATH)
