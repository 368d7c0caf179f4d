"""Policy lookup by name through a pluggy plugin manager (built-ins plus entry points)."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import pluggy

from radix_plugin.cache_manager.policies import hookspecs


class UnknownPolicyError(ValueError):
    """An unknown policy name or option; the message lists the valid choices."""


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager: built-in policies plus every ``radix_plugin`` entry point."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    from radix_plugin.cache_manager import scheduling
    from radix_plugin.cache_manager.policies import builtin, workflow

    pm.register(builtin, name="radix_plugin.builtin")
    pm.register(workflow, name="radix_plugin.workflow")
    pm.register(scheduling, name="radix_plugin.scheduling")
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    return pm


def collect_policies(hook_results: list[list[type]], kind: str) -> dict[str, type]:
    found: dict[str, type] = {}
    for classes in hook_results:
        for cls in classes or ():
            name = getattr(cls, "name", "")
            if not name:
                raise TypeError(f"{kind} policy {cls!r} has no 'name'")
            if name in found and found[name] is not cls:
                raise ValueError(f"two {kind} policies are named {name!r}: {found[name]} and {cls}")
            found[name] = cls
    return found


def eviction_policy_classes() -> dict[str, type]:
    """Every registered eviction policy class by name."""
    return collect_policies(plugin_manager().hook.radix_eviction_policies(), "eviction")


def eviction_policy_names(*, include_offline: bool = True) -> list[str]:
    """Registered eviction policy names, sorted."""
    return sorted(
        n for n, c in eviction_policy_classes().items() if include_offline or not c.offline_only
    )


def make_eviction_policy(name: str, *, online: bool = False, **options: Any):
    """Build the eviction policy ``name`` with ``options``.

    ``online=True`` refuses policies that need the future (an engine cannot run Belady).
    Raises :class:`UnknownPolicyError` naming the bad value and the valid choices.
    """
    classes = eviction_policy_classes()
    cls = classes.get(name)
    if cls is None or (online and cls.offline_only):
        valid = eviction_policy_names(include_offline=not online)
        raise UnknownPolicyError(
            f"unknown eviction policy {name!r}; valid choices: {', '.join(valid)}"
        )
    return instantiate(cls, options, f"eviction policy {name!r}")


def instantiate(cls: type, options: dict[str, Any], what: str) -> Any:
    """``cls(**options)`` with an error naming unknown options and the accepted ones."""
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p != "self" and params[p].kind is params[p].KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UnknownPolicyError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for {what}; "
            f"valid options: {', '.join(accepted) or '(none)'}"
        )
    return cls(**options)
