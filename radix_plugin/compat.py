"""Every use of a vLLM private name or patch, in one place, labelled with the version read.

The plugin is written against vLLM 0.32.0. Public seams (``--scheduler-cls``, entry points,
the KV-connector and logits-processor interfaces, ``BlockPool``'s public methods) are used
where they are; what vLLM does not expose is reached only through this module:

- ``kv_cache_coordinator.BlockPool`` (a module-level name, the only place the pool is
  built) is rebound to ``RadixBlockPool`` while the plugin's scheduler runs
  ``Scheduler.__init__``, then restored (``radix_block_pool``).
- ``FullAttentionManager.find_longest_cache_hit`` answers from the radix tree for plain
  lookups on a ``RadixBlockPool`` and calls vLLM's code for every other case
  (``install_lookup_patch``; process-wide, installed once).
- ``BlockPool._remove_cached_block_hashes`` / ``_insert_block_hash`` and the duck-typed
  ``free_block_queue`` (``BlockPoolSeam``).
- ``Scheduler._free_request``, the one place every finished or aborted request passes
  (``SchedulerSeam.on_request_freed``).
- ``KVConnectorBase_V1._get_connector_metadata`` (the step's metadata in the worker).
- ``SchedulerStats`` reaches the API server as msgpack of its declared fields only, so the
  plugin's metrics ride in its one free-form ``dict[str, int]``,
  ``num_kv_fetch_reqs_by_stage``, under ``radix_plugin:`` keys that the plugin's stat
  logger takes out again before vLLM's loggers read it (``put_plugin_stats`` /
  ``take_plugin_stats``; the same in vLLM 0.33.0).
- ``EngineArgs.create_engine_config`` runs the plugin's config check first, in the user's
  process, before any engine core starts (``install_engine_args_check``), then lets the
  plugin supply the host tier's ``--kv-transfer-config`` (``install_default_kv_transfer_config``).
- ``SamplingParams._validate_spec_decode`` and ``build_logitsprocs`` (module level, and as
  imported by ``gpu_model_runner``) let ``min_p`` / ``logit_bias`` through when the only
  drafts are jump-forward's (``allow_plain_sampling_with_drafts``).
- ``StructuredOutputsParams._backend``, ``Request.status`` and
  ``StructuredOutputManager._get_constraint_bounds`` (scheduler-side grammars for
  jump-forward).

``check_vllm_version`` refuses to patch a vLLM this module was not read from, unless the
user opts in with ``RADIX_PLUGIN_ALLOW_UNTESTED_VLLM=1`` (then it warns): the scheduler
raises before it patches anything, and plugin registration (every process) installs its
patches only where ``vllm_version_allowed()``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from vllm.v1.core.block_pool import BlockPool

if TYPE_CHECKING:
    from vllm.distributed.kv_transfer.kv_connector.v1.base import (
        KVConnectorBase_V1,
        KVConnectorMetadata,
    )
    from vllm.sampling_params import StructuredOutputsParams
    from vllm.v1.core.kv_cache_utils import KVCacheBlock
    from vllm.v1.request import Request
    from vllm.v1.structured_output import StructuredOutputManager

logger = logging.getLogger(__name__)

SUPPORTED_VLLM_VERSIONS = ("0.32.0",)
"""vLLM releases whose source every patch below was read from and tested against."""
ALLOW_UNTESTED_ENV = "RADIX_PLUGIN_ALLOW_UNTESTED_VLLM"

FREE_QUEUE_METHODS = (
    "popleft",
    "popleft_n",
    "remove",
    "append",
    "append_n",
    "prepend_n",
    "get_all_free_blocks",
    "iter_blocks_after",
)
"""What vLLM 0.32.0 calls on ``BlockPool.free_block_queue`` (``FreeKVCacheBlockQueue``),
besides reading ``num_free_blocks``."""


class UnsupportedVllmVersion(RuntimeError):
    """The installed vLLM is not one the plugin's patches were written for."""


def _release(version: str) -> str:
    """``0.32.0+cpu`` -> ``0.32.0``: local build tags do not change the Python source."""
    return version.split("+", 1)[0]


def check_vllm_version(version: str | None = None) -> None:
    """Refuse (or, with the opt-in, warn about) a vLLM version the patches were not read from."""
    if version is None:
        import vllm

        version = vllm.__version__
    if _release(version) in SUPPORTED_VLLM_VERSIONS:
        return
    message = (
        f"radix_plugin supports vLLM {', '.join(SUPPORTED_VLLM_VERSIONS)}, but vLLM {version} "
        "is installed: its scheduler and block-pool patches were written against those "
        f"versions' private code. Install a supported vLLM, or set {ALLOW_UNTESTED_ENV}=1 to "
        "try anyway"
    )
    if os.environ.get(ALLOW_UNTESTED_ENV) == "1":
        logger.warning("%s (%s=1: continuing)", message, ALLOW_UNTESTED_ENV)
        return
    raise UnsupportedVllmVersion(message)


def vllm_version_allowed() -> bool:
    """``check_vllm_version`` for code that must not raise (plugin registration in every
    process): False, with the reason logged, where the patches must stay off."""
    try:
        check_vllm_version()
    except UnsupportedVllmVersion as exc:
        logger.warning("radix_plugin: leaving vLLM unpatched: %s", exc)
        return False
    return True


# --- the block pool (vLLM 0.32.0: v1/core/kv_cache_coordinator.py, block_pool.py) --------


@contextlib.contextmanager
def radix_block_pool(pool_cls: type, **pool_kwargs: Any) -> Iterator[None]:
    """Within the block, vLLM's coordinator builds ``pool_cls(..., **pool_kwargs)``."""
    from vllm.v1.core import kv_cache_coordinator

    original = kv_cache_coordinator.BlockPool
    kv_cache_coordinator.BlockPool = functools.partial(pool_cls, **pool_kwargs)
    try:
        yield
    finally:
        kv_cache_coordinator.BlockPool = original


class BlockPoolSeam(BlockPool):
    """vLLM 0.32.0's ``BlockPool`` with its private hooks given names the plugin owns.

    Subclasses override ``on_cached_hash_removed`` (called whenever vLLM drops a block's
    hash: eviction for reuse, ``evict_blocks`` invalidation) and install their own free
    queue with ``replace_free_queue``.
    """

    def on_cached_hash_removed(self, block: KVCacheBlock) -> None:
        """vLLM is about to forget ``block``'s hash; default: nothing to do."""

    def _remove_cached_block_hashes(self, block: KVCacheBlock) -> list[Any]:
        self.on_cached_hash_removed(block)
        return super()._remove_cached_block_hashes(block)

    def insert_cached_hash(self, block_hash: Any, block: KVCacheBlock, num_tokens: int) -> None:
        """Register ``block`` under ``block_hash`` (with group id) in vLLM's hash map."""
        self._insert_block_hash(block_hash, block, num_tokens=num_tokens)

    def replace_free_queue(self, queue: Any) -> None:
        """Install a replacement for ``FreeKVCacheBlockQueue`` (checked against 0.32.0's use)."""
        missing = [m for m in FREE_QUEUE_METHODS if not callable(getattr(queue, m, None))]
        if missing or not hasattr(queue, "num_free_blocks"):
            raise TypeError(f"{type(queue).__name__} lacks free-queue methods {missing}")
        self.free_block_queue = queue


class SchedulerSeam:
    """Mixin for vLLM 0.32.0's ``Scheduler``: ``on_request_freed`` after vLLM's private
    ``_free_request``, which every finished, aborted or stopped request goes through."""

    def on_request_freed(self, request: Request) -> None:
        """``request`` left the scheduler for good; default: nothing to do."""

    def _free_request(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        result = super()._free_request(request, *args, **kwargs)  # type: ignore[misc]
        self.on_request_freed(request)
        return result


def install_lookup_patch(pool_cls: type) -> None:
    """Route plain longest-prefix lookups on a ``pool_cls`` through its tree (idempotent).

    vLLM 0.32.0, ``v1/core/single_type_kv_cache_manager.py``: the classmethod
    ``FullAttentionManager.find_longest_cache_hit`` walks the hash map block by block. For
    one group, no EAGLE drop, no context parallelism and pool-sized blocks, the pool's
    ``request_lookup`` answers instead (and counts the lookup for /metrics); every other
    call goes to vLLM's code.
    """
    from vllm.v1.core.single_type_kv_cache_manager import FullAttentionManager

    current = FullAttentionManager.find_longest_cache_hit.__func__  # type: ignore[attr-defined]
    if getattr(current, "_radix_pool_cls", None) is pool_cls:
        return
    original = getattr(current, "_radix_original", current)
    signature = inspect.signature(original)

    def find_longest_cache_hit(cls, *args: Any, **kwargs: Any):
        bound = signature.bind(cls, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        pool, spec = a["block_pool"], a["kv_cache_spec"]
        plain = (
            cls is FullAttentionManager
            and isinstance(pool, pool_cls)
            and len(a["kv_cache_group_ids"]) == 1
            and not a["drop_eagle_block"]
            and a["dcp_world_size"] == 1
            and a["pcp_world_size"] == 1
            and a["alignment_tokens"] == spec.block_size == pool.hash_block_size
        )
        if not plain:
            return original(cls, *args, **kwargs)
        blocks = pool.request_lookup(a["block_hashes"], a["max_length"], a["kv_cache_group_ids"][0])
        return (blocks,), len(blocks) * spec.block_size

    find_longest_cache_hit._radix_original = original  # type: ignore[attr-defined]
    find_longest_cache_hit._radix_pool_cls = pool_cls  # type: ignore[attr-defined]
    FullAttentionManager.find_longest_cache_hit = classmethod(find_longest_cache_hit)


def step_connector_metadata(connector: KVConnectorBase_V1) -> KVConnectorMetadata:
    """The metadata vLLM bound to a worker-side connector for this step (0.32.0:
    ``KVConnectorBase_V1._get_connector_metadata``, the base class's accessor)."""
    return connector._get_connector_metadata()


# --- scheduler-side grammars (vLLM 0.32.0: v1/request.py, v1/structured_output/) --------


def mark_xgrammar_backend(params: StructuredOutputsParams) -> None:
    """Set the backend name vLLM's frontend would have set (``_backend``) on params built
    in the engine core, so the manager compiles them with xgrammar."""
    params._backend = "xgrammar"


def hold_until_grammar_compiled(request: Request) -> None:
    """What ``Request.__init__`` does for structured requests: a waiting request waits for
    its grammar (``Request.status`` written by the scheduler)."""
    from vllm.v1.request import RequestStatus

    if request.status == RequestStatus.WAITING:
        request.status = RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR


def grammar_constrains_next_token(request: Request, manager: StructuredOutputManager) -> bool:
    """True once the grammar constrains the next token (a reasoning section, if any, ended),
    from ``StructuredOutputManager._get_constraint_bounds``."""
    return manager._get_constraint_bounds(request, ()).constraint_start == 0


# --- the plugin's metrics into the API server (vLLM 0.32.0 and 0.33.0: v1/metrics/stats.py,
# v1/core/sched/scheduler.py make_stats, v1/metrics/loggers.py) ----------------------------

PLUGIN_STATS_KEY_PREFIX = "radix_plugin:"
"""Every key the plugin adds to the carrier starts so (``radix_plugin.plugin_metrics``)."""


def put_plugin_stats(scheduler_stats: Any, samples: Mapping[str, int]) -> None:
    """EngineCore side: add the plugin's samples (``plugin_metrics.sample_key`` -> int) to
    the ``SchedulerStats`` that ``make_stats`` returns.

    Why this field: ``SchedulerStats`` crosses from EngineCore to the API server as msgpack
    of its declared dataclass fields only (an added attribute would be dropped), and
    ``num_kv_fetch_reqs_by_stage`` is its one free-form ``dict[str, int]``. vLLM fills it
    with its own KV-fetch stage names and its loggers read those with ``.get``, so extra
    ``radix_plugin:`` keys do not disturb them; only ints fit, so labels travel inside the
    keys. vLLM 0.32.0 and 0.33.0 declare the same ``SchedulerStats`` and the same
    stat-logger plugin interface (``vllm.stat_logger_plugins``, plugin loggers called
    before vLLM's own), so this seam serves both.
    """
    carrier = scheduler_stats.num_kv_fetch_reqs_by_stage
    for key, value in samples.items():
        carrier[key] = int(value)


def take_plugin_stats(scheduler_stats: Any) -> dict[str, int] | None:
    """API server side: remove and return what ``put_plugin_stats`` added (``None`` if
    nothing), so vLLM's own loggers see the dict as vLLM filled it."""
    carrier = getattr(scheduler_stats, "num_kv_fetch_reqs_by_stage", None)
    if not carrier:
        return None
    ours = [k for k in carrier if k.startswith(PLUGIN_STATS_KEY_PREFIX)]
    if not ours:
        return None
    return {k: carrier.pop(k) for k in ours}


# --- config (vLLM 0.32.0: engine/arg_utils.py) ------------------------------------------


def _before_create_engine_config(name: str, hook: Callable[[Any], None]) -> None:
    """Run ``hook(engine_args)`` before vLLM 0.32.0's ``EngineArgs.create_engine_config``
    builds ``VllmConfig``; one wrapper for every hook, which run in the order they were
    first installed (installing ``name`` again replaces its hook)."""
    from vllm.engine.arg_utils import EngineArgs

    current = EngineArgs.create_engine_config
    hooks: dict[str, Callable[[Any], None]] | None = getattr(current, "_radix_hooks", None)
    if hooks is None:
        hooks = {}
        original = current

        @functools.wraps(original)
        def create_engine_config(self: Any, *args: Any, **kwargs: Any) -> Any:
            for run in list(hooks.values()):
                run(self)
            return original(self, *args, **kwargs)

        create_engine_config._radix_hooks = hooks  # type: ignore[attr-defined]
        EngineArgs.create_engine_config = create_engine_config  # type: ignore[method-assign]
    hooks[name] = hook


def install_engine_args_check(check: Callable[[Any, Any], None]) -> None:
    """Call ``check(scheduler_cls, additional_config)`` before vLLM builds a ``VllmConfig``
    from ``EngineArgs`` (idempotent).

    vLLM 0.32.0 builds the config in the process the user started (``LLM(...)``, the API
    server) and only then starts the engine core, which loads the weights before it builds
    the scheduler. Checking here makes a bad ``--additional-config`` raise our own message
    to the user in seconds instead of the engine core dying minutes later.
    """
    _before_create_engine_config(
        "config_check", lambda args: check(args.scheduler_cls, args.additional_config)
    )


def install_default_kv_transfer_config(default: Callable[[Any], dict[str, Any] | None]) -> None:
    """Let ``default(engine_args)`` supply the ``--kv-transfer-config`` the user did not write.

    vLLM 0.32.0 (and 0.33.0) hands ``EngineArgs.kv_transfer_config`` (a ``KVTransferConfig``
    or ``None``) to ``VllmConfig`` in ``create_engine_config``, in the user's process, and
    builds the KV connector from it in EngineCore and the workers. The hook (after the
    config check, so ``default`` sees a valid ``--additional-config``) sets it from
    ``default``'s dict only when the user gave none; when the user gave one, theirs is
    used and the log says so (idempotent).
    """

    def supply(engine_args: Any) -> None:
        supplied = default(engine_args)
        if supplied is None:
            return
        given = engine_args.kv_transfer_config
        if given is None:
            from vllm.config import KVTransferConfig

            engine_args.kv_transfer_config = KVTransferConfig(**supplied)
            logger.info("radix_plugin: host tier on (kv-transfer config %s)", supplied)
            return
        name = getattr(given, "kv_connector", None)
        if isinstance(given, dict):
            name = given.get("kv_connector")
        if name == supplied["kv_connector"]:
            logger.info("radix_plugin: host tier on, with the given --kv-transfer-config")
        else:
            logger.warning(
                "radix_plugin: --additional-config asks for the host tier, but "
                "--kv-transfer-config names connector %r: that connector wins and the host "
                "tier stays off (name %s in --kv-transfer-config to use it)",
                name,
                supplied["kv_connector"],
            )

    _before_create_engine_config("kv_transfer_default", supply)


# --- min_p / logit_bias beside jump-forward drafts (vLLM 0.32.0: sampling_params.py,
# v1/sample/logits_processor/__init__.py, v1/worker/gpu_model_runner.py) ------------------


def allow_plain_sampling_with_drafts(jump_forward_only: Callable[[Any], bool]) -> None:
    """Accept and apply ``min_p`` / ``logit_bias`` when ``jump_forward_only(spec_config)``.

    vLLM 0.32.0 refuses both for every request once any speculative config is set, and its
    workers then build only the min-tokens logits processor, because drafts are verified
    without them. Jump-forward drafts are the plugin's own: its scheduler offers none while
    a request with either parameter is unfinished, so those requests always run in plain
    (draft-free) batches, where vLLM's sampler applies every built-in processor. Both
    patches defer to vLLM for any other speculative config (idempotent).
    """
    from vllm import sampling_params
    from vllm.v1.sample import logits_processor

    validate = sampling_params.SamplingParams._validate_spec_decode
    if getattr(validate, "_radix_original", None) is None:

        @functools.wraps(validate)
        def _validate_spec_decode(self: Any, speculative_config: Any) -> None:
            if speculative_config is not None and jump_forward_only(speculative_config):
                return
            validate(self, speculative_config)

        _validate_spec_decode._radix_original = validate  # type: ignore[attr-defined]
        sampling_params.SamplingParams._validate_spec_decode = _validate_spec_decode  # type: ignore[method-assign]

    if getattr(logits_processor.build_logitsprocs, "_radix_original", None) is None:
        logits_processor.build_logitsprocs = _plain_sampling_logitsprocs(
            logits_processor, jump_forward_only
        )
    runner = sys.modules.get("vllm.v1.worker.gpu_model_runner")
    if runner is not None:
        runner.build_logitsprocs = logits_processor.build_logitsprocs  # type: ignore[attr-defined]


def _plain_sampling_logitsprocs(
    logits_processor: Any, jump_forward_only: Callable[[Any], bool]
) -> Callable[..., Any]:
    """``build_logitsprocs`` building every built-in processor under jump-forward drafts."""
    original = logits_processor.build_logitsprocs

    @functools.wraps(original)
    def build_logitsprocs(
        vllm_config: Any,
        device: Any,
        is_pin_memory: bool,
        is_pooling_model: bool,
        custom_logitsprocs: Any = (),
    ) -> Any:
        spec = vllm_config.speculative_config
        if spec is None or is_pooling_model or custom_logitsprocs or not jump_forward_only(spec):
            return original(
                vllm_config, device, is_pin_memory, is_pooling_model, custom_logitsprocs
            )
        return logits_processor.LogitsProcessors(
            ctor(vllm_config, device, is_pin_memory)
            for ctor in logits_processor.BUILTIN_LOGITS_PROCESSORS
        )

    build_logitsprocs._radix_original = original  # type: ignore[attr-defined]
    return build_logitsprocs


# --- one flag for jump-forward (vLLM 0.32.0: engine/arg_utils.py) --------------------------


def install_default_speculative_config(default: Any) -> None:
    """Let ``default(engine_args)`` supply a speculative config the user did not write.

    vLLM 0.32.0 runs drafts only when ``SpeculativeConfig`` exists, and builds it in
    ``EngineArgs.create_speculative_config`` from ``engine_args.speculative_config`` (a dict)
    while ``create_engine_config`` assembles ``VllmConfig`` in the user's process. The wrapper
    fills that dict from ``default`` (which returns a dict or None) only when the user gave
    no speculative settings at all; everything else is vLLM's code (idempotent).
    """
    from vllm.engine.arg_utils import EngineArgs

    original = EngineArgs.create_speculative_config
    if getattr(original, "_radix_default", None) is not None:
        return

    @functools.wraps(original)
    def create_speculative_config(self: EngineArgs, *args: Any, **kwargs: Any) -> Any:
        given = (self.speculative_config, self.spec_method, self.spec_model, self.spec_tokens)
        if all(value is None for value in given):
            supplied = default(self)
            if supplied is not None:
                logger.info(
                    "radix_plugin: jump-forward drafts on (speculative config %s)", supplied
                )
                self.speculative_config = dict(supplied)
        return original(self, *args, **kwargs)

    create_speculative_config._radix_default = default  # type: ignore[attr-defined]
    EngineArgs.create_speculative_config = create_speculative_config  # type: ignore[method-assign]
