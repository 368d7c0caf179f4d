"""The seam check: the running vLLM (and test doubles of it) against ``compat.SEAMS``.

Test doubles are the installed vLLM 0.32.0 with one thing changed: a class copied without
one method or with one signature changed (run-time view), or a source file edited (static
view, as ``make compat`` reads wheels). Each must break exactly the seam that names it.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import vllm
from vllm.v1.core import kv_cache_coordinator
from vllm.v1.core.block_pool import BlockPool

from radix_plugin import compat
from radix_plugin.compat import (
    ALLOW_UNTESTED_ENV,
    SEAMS,
    TESTED_VLLM_VERSIONS,
    UnsupportedVllmVersion,
    check_vllm_seams,
    vllm_seams_allowed,
)
from radix_plugin.seams import Overrides, RuntimeView, StaticView, check_seams
from radix_plugin.testing.scheduler import build_scheduler

VLLM_ROOT = Path(vllm.__file__).parent.parent


@pytest.fixture(autouse=True)
def fresh_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test checks anew (the check remembers its verdict per process)."""
    monkeypatch.setattr(compat, "_verdicts", {})
    monkeypatch.setattr(compat, "_warned", set())
    monkeypatch.delenv(ALLOW_UNTESTED_ENV, raising=False)


def broken_ids(view: Any) -> set[str]:
    return {r.seam.id for r in check_seams(view, SEAMS).broken}


def test_installed_vllm_passes_every_seam_at_run_time_and_from_its_files() -> None:
    assert broken_ids(RuntimeView(vllm.__version__)) == set()
    assert broken_ids(StaticView(VLLM_ROOT, vllm.__version__)) == set()
    assert compat.release(vllm.__version__) in TESTED_VLLM_VERSIONS


def test_ids_are_unique_and_every_start_up_point_checks_something() -> None:
    ids = [s.id for s in SEAMS]
    assert len(ids) == len(set(ids))
    for at in ("registration", "scheduler", "api_server"):
        assert any(at in s.at for s in SEAMS), at


def _vllm_overrides() -> set[tuple[str, str]]:
    """(vLLM base target, our method) for every method a plugin class (or the scheduler
    mixin) defines that a vLLM base class also defines."""
    from radix_plugin.cache_manager.engine_core.scheduler import RadixScheduler

    found = set()
    modules = {s.check.ours.partition(":")[0] for s in SEAMS if isinstance(s.check, Overrides)}
    classes = [c for m in modules for c in vars(importlib.import_module(m)).values()]
    classes += [c for c in RadixScheduler.__mro__ if c.__module__.startswith("radix_plugin")]
    for cls in classes:
        if not inspect.isclass(cls) or not cls.__module__.startswith("radix_plugin"):
            continue
        mro = RadixScheduler.__mro__ if cls.__name__ == "RadixSchedulerMixin" else cls.__mro__
        bases = [b for b in mro if b.__module__.startswith("vllm")]
        for name, value in vars(cls).items():
            if not callable(value) and not isinstance(value, (classmethod, staticmethod)):
                continue
            if name.startswith("__") and name != "__init__":
                continue
            owner = next((b for b in bases if name in vars(b)), None)
            if owner is not None:
                found.add((f"{cls.__module__}:{cls.__qualname__}.{name}", owner.__name__))
    return found


def test_every_override_of_a_vllm_method_is_a_seam() -> None:
    listed = {s.check.ours for s in SEAMS if isinstance(s.check, Overrides)}
    missing = sorted(ours for ours, _ in _vllm_overrides() if ours not in listed)
    assert not missing, f"add Overrides seams for {missing}"


# --- run-time test doubles ---------------------------------------------------------------


def _module_with(
    name: str, cls_name: str, base: dict[str, Any] | None = None, **changes: Any
) -> dict[str, Any]:
    """``sys.modules`` (or ``base``) with module ``name``'s class ``cls_name`` copied, its
    attributes changed (``None``: removed)."""
    real = importlib.import_module(name)
    cls = getattr(real, cls_name)
    namespace = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    for attr, value in changes.items():
        namespace.pop(attr, None)
        if value is not None:
            namespace[attr] = value
    double = type(cls_name, cls.__bases__, namespace)
    module = types.ModuleType(name)
    module.__dict__.update(vars(real))
    setattr(module, cls_name, double)
    return {**(sys.modules if base is None else base), name: module}


def test_a_removed_private_method_breaks_its_seam() -> None:
    modules = _module_with("vllm.v1.core.block_pool", "BlockPool", _insert_block_hash=None)
    assert broken_ids(RuntimeView(vllm.__version__, modules)) == {"pool.insert_block_hash"}


def test_a_changed_signature_breaks_the_override_seam() -> None:
    def cache_full_blocks(self, request, blocks, num_cached_blocks, num_full_blocks, *, group):
        """One positional parameter became a required keyword."""

    modules = _module_with(
        "vllm.v1.core.block_pool", "BlockPool", cache_full_blocks=cache_full_blocks
    )
    view = RuntimeView(vllm.__version__, modules)
    verdict = check_seams(view, SEAMS)
    assert {r.seam.id for r in verdict.broken} == {"override.RadixBlockPool.cache_full_blocks"}
    assert "group" in verdict.message() and vllm.__version__ in verdict.message()


# --- static test doubles (edited source files) ------------------------------------------


def _edit(path: str, old: str, new: str) -> dict[str, str]:
    text = (VLLM_ROOT / path).read_text()
    assert old in text, old
    return {path: text.replace(old, new)}


def test_a_free_queue_call_our_queue_lacks_breaks_that_seam() -> None:
    """vLLM starts calling a new method on ``free_block_queue`` (found by the scan)."""
    marker = "    def touch(self"
    probe = "    def _probe(self):\n        self.free_block_queue.move_to_front([])\n\n"
    files = _edit("vllm/v1/core/block_pool.py", marker, probe + marker)
    verdict = check_seams(StaticView(VLLM_ROOT, "0.32.0", files), SEAMS)
    assert {r.seam.id for r in verdict.broken} == {"pool.free_queue_calls"}
    assert "move_to_front" in verdict.message()


def test_static_check_names_a_renamed_method() -> None:
    files = _edit("vllm/v1/core/sched/scheduler.py", "def _free_request(", "def _release(")
    view = StaticView(VLLM_ROOT, "0.32.0", files)
    assert broken_ids(view) == {"scheduler.free_request"}


def test_static_check_names_a_changed_signature() -> None:
    files = _edit(
        "vllm/v1/core/sched/scheduler.py",
        "def add_request(self, request: Request) -> None:",
        "def add_request(self, request: Request, priority: int, /) -> None:",
    )
    assert broken_ids(StaticView(VLLM_ROOT, "0.32.0", files)) == {
        "override.RadixSchedulerMixin.add_request"
    }


def test_static_check_names_each_version_branch_the_source_contradicts() -> None:
    """0.32.0's source read as if it were 0.33.0: the bitmask-layout branch and the
    backend-latch branch (0.33 reads ``backend_name``) would both be wrong."""
    assert broken_ids(StaticView(VLLM_ROOT, "0.33.0")) == {
        "grammar.bitmask_writer",
        "grammar.bitmask_reader",
        "grammar.latched_backend",
    }


# --- refusing, warning, overriding ---------------------------------------------------------


def test_broken_seams_refuse_with_one_message_naming_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    modules = _module_with("vllm.v1.core.block_pool", "BlockPool", _insert_block_hash=None)
    modules = _module_with("vllm.v1.request", "Request", modules, is_finished=None)
    with pytest.raises(UnsupportedVllmVersion) as err:
        check_vllm_seams("scheduler", RuntimeView("0.32.0", modules))
    message = str(err.value)
    assert "pool.insert_block_hash" in message and "request.attributes" in message
    assert "vLLM 0.32.0 breaks 2 seam(s)" in message and ALLOW_UNTESTED_ENV in message


def test_override_runs_despite_broken_seams_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(ALLOW_UNTESTED_ENV, "1")
    modules = _module_with("vllm.v1.core.block_pool", "BlockPool", _insert_block_hash=None)
    with caplog.at_level(logging.WARNING, logger="radix_plugin.compat"):
        verdict = check_vllm_seams("scheduler", RuntimeView("0.32.0", modules))
    assert [r.seam.id for r in verdict.broken] == ["pool.insert_block_hash"]
    assert "pool.insert_block_hash" in caplog.text and f"{ALLOW_UNTESTED_ENV}=1" in caplog.text


def test_untested_version_that_passes_runs_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="radix_plugin.compat"):
        for at in ("registration", "scheduler"):
            assert not check_vllm_seams(at, RuntimeView("0.32.1")).broken
    warnings = [r for r in caplog.records if "0.32.1" in r.getMessage()]
    assert len(warnings) == 1 and "not tested" in warnings[0].getMessage()


def test_a_version_whose_source_contradicts_its_layout_branch_is_refused() -> None:
    """0.99 would get the 0.33 layout, but this source writes 0.32's: refused, not run."""
    with pytest.raises(UnsupportedVllmVersion, match=r"grammar\.bitmask_writer"):
        check_vllm_seams("scheduler", RuntimeView("0.99.0"))


def test_scheduler_refuses_before_patching_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(BlockPool, "_insert_block_hash")
    with pytest.raises(UnsupportedVllmVersion, match=r"pool\.insert_block_hash"):
        build_scheduler(radix={"eviction": "lfu", "schedule": "dfs"})
    assert kv_cache_coordinator.BlockPool is BlockPool


def test_registration_leaves_a_broken_vllm_unpatched(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from vllm.v1.sample import logits_processor

    monkeypatch.setattr(logits_processor, "build_logitsprocs", lambda vllm_config, device: None)
    with caplog.at_level(logging.WARNING, logger="radix_plugin.compat"):
        assert not vllm_seams_allowed("registration")
    assert "logitsprocs.build" in caplog.text and "unpatched" in caplog.text
    monkeypatch.undo()
    compat._verdicts.clear()
    assert vllm_seams_allowed("registration")


def test_free_queue_names_come_from_vllms_source() -> None:
    names = compat.free_queue_names()
    assert {"popleft_n", "remove", "append_n", "num_free_blocks"} <= names
    assert "iter_blocks_after" in names  # simple_kv_offload/manager.py, not block_pool.py


def test_plain_sampling_patch_applies_only_to_jump_forward_drafts() -> None:
    """min_p / logit_bias processors are built (and accepted) when the only drafts are the
    plugin's; any other config gets vLLM's own behaviour, and installing twice is harmless."""
    from types import SimpleNamespace

    import torch
    from vllm.engine.arg_utils import EngineArgs
    from vllm.exceptions import VLLMValidationError
    from vllm.sampling_params import SamplingParams
    from vllm.v1.sample import logits_processor

    from radix_plugin.compat import allow_plain_sampling_with_drafts
    from radix_plugin.config import JUMP_FORWARD_PROPOSER
    from radix_plugin.plugin import jump_forward_only
    from radix_plugin.testing.models import get_model_path

    config = EngineArgs(model=str(get_model_path("tiny")), max_model_len=256).create_engine_config()
    allow_plain_sampling_with_drafts(jump_forward_only)
    allow_plain_sampling_with_drafts(jump_forward_only)

    def built(speculative_config: object) -> set[str]:
        config.speculative_config = speculative_config
        procs = logits_processor.build_logitsprocs(config, torch.device("cpu"), False, False)
        return {type(p).__name__ for p in procs.all}

    builtins = {cls.__name__ for cls in logits_processor.BUILTIN_LOGITS_PROCESSORS}
    assert {"MinPLogitsProcessor", "LogitBiasLogitsProcessor"} <= builtins <= built(None)
    # Grammars go scheduler-side under drafts, so the plugin's own processor is not built.
    assert built(SimpleNamespace(model=JUMP_FORWARD_PROPOSER)) == builtins
    assert built(SimpleNamespace(model="some/draft-model")) == {"MinTokensLogitsProcessor"}
    biased = SamplingParams(logit_bias={5: 1.0}, min_p=0.2)
    biased._validate_spec_decode(SimpleNamespace(model=JUMP_FORWARD_PROPOSER))
    with pytest.raises(VLLMValidationError, match="min_p and logit_bias"):
        biased._validate_spec_decode(SimpleNamespace(model="some/draft-model"))
