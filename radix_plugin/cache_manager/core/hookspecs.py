"""pluggy hook specifications: how third parties add eviction and scheduling policies.

A package adds policies by exposing a module with ``@hookimpl`` functions under the
``radix_plugin`` entry-point group, e.g. in its ``pyproject.toml``::

    [project.entry-points.radix_plugin]
    my_policies = "my_pkg.radix_policies"

where ``my_pkg/radix_policies.py`` defines::

    from radix_plugin.cache_manager.core.hookspecs import hookimpl

    @hookimpl
    def radix_eviction_policies():
        return [MyPolicy]   # EvictionPolicy subclasses with a unique ``name``
"""

from __future__ import annotations

import pluggy

PROJECT = "radix_plugin"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def radix_eviction_policies() -> list[type]:
    """Return eviction policy classes (subclasses of ``EvictionPolicy``)."""


@hookspec
def radix_scheduling_policies() -> list[type]:
    """Return scheduling policy classes (subclasses of ``SchedulingPolicy``)."""
