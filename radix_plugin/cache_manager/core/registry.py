"""The one policy registry: eviction policies and waiting-queue orderings by name.

Both kinds come through pluggy (``hookspecs``): the built-ins are registered here, third
parties through the ``radix_plugin`` entry-point group. Nothing else in the core loads entry
points, so building a tree or an ordering never touches installed packages.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import pluggy

from radix_plugin.cache_manager.core import hookspecs


class UnknownPolicyError(ValueError):
    """An unknown policy name or option; the message lists the valid choices."""


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager: built-in policies plus every ``radix_plugin`` entry point."""
    from radix_plugin.cache_manager.core import orderings
    from radix_plugin.cache_manager.core.policies import builtin, session, workflow

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name="radix_plugin.builtin")
    pm.register(workflow, name="radix_plugin.workflow")
    pm.register(session, name="radix_plugin.session")
    pm.register(orderings, name="radix_plugin.orderings")
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    return pm


def _collect(hook_results: list[list[type]], kind: str) -> dict[str, type]:
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
    return _collect(plugin_manager().hook.radix_eviction_policies(), "eviction")


def eviction_policy_names(*, include_offline: bool = True) -> list[str]:
    """Registered eviction policy names, sorted."""
    return sorted(
        n for n, c in eviction_policy_classes().items() if include_offline or not c.offline_only
    )


def make_eviction_policy(name: str, *, online: bool = False, **options: Any) -> Any:
    """Build the eviction policy ``name`` with ``options``.

    ``online=True`` refuses policies that need the future (an engine cannot run Belady).
    Raises :class:`UnknownPolicyError` naming the bad value and the valid choices.
    """
    cls = eviction_policy_classes().get(name)
    if cls is None or (online and cls.offline_only):
        valid = eviction_policy_names(include_offline=not online)
        raise UnknownPolicyError(
            f"unknown eviction policy {name!r}; valid choices: {', '.join(valid)}"
        )
    return _instantiate(cls, options, f"eviction policy {name!r}")


def ordering_classes() -> dict[str, type]:
    """Every registered waiting-queue ordering class by name."""
    return _collect(plugin_manager().hook.radix_scheduling_policies(), "scheduling")


def ordering_names() -> list[str]:
    """Registered waiting-queue ordering names, sorted."""
    return sorted(ordering_classes())


def make_ordering(name: str, **options: Any) -> Any:
    """Build the waiting-queue ordering ``name``; unknown names list the valid ones."""
    cls = ordering_classes().get(name)
    if cls is None:
        raise UnknownPolicyError(
            f"unknown scheduling policy {name!r}; valid choices: {', '.join(ordering_names())}"
        )
    return _instantiate(cls, options, f"scheduling policy {name!r}")


def _instantiate(cls: type, options: dict[str, Any], what: str) -> Any:
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
