"""Triton kernels of the plugin: paged prefix/extend attention with a split-KV decode path,
the KV-cache slot write, and the token-bitmask apply used by the compressed FSM, plus the
vLLM attention backend built on them (``kernels.attention``, worker process).

Each kernel has a plain-torch reference in ``radix_plugin.kernels.reference``. Names load
lazily (``radix_plugin.lazy_exports``): importing Triton and compiling decorators is not
free. On CPU the kernels only run under the Triton interpreter, which must be enabled
(``TRITON_INTERPRET=1``) before these modules are imported.
"""

from radix_plugin.lazy_exports import lazy_exports

__all__ = lazy_exports(
    __name__,
    {
        "prefix_attention": "radix_plugin.kernels.prefix_attention",
        "decode_attention": "radix_plugin.kernels.decode_attention",
        "write_kv_cache": "radix_plugin.kernels.kv_cache_write",
        "apply_token_bitmask_inplace": "radix_plugin.kernels.token_bitmask",
        "prefix_attention_ref": "radix_plugin.kernels.reference",
        "write_kv_cache_ref": "radix_plugin.kernels.reference",
        "apply_token_bitmask_ref": "radix_plugin.kernels.reference",
    },
)
