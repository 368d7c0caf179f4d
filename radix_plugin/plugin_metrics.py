"""Every metric the plugin puts on ``/metrics``: name, type, labels, meaning; and what one
engine step sends of them.

Counters and gauges are counted where their events happen (tree, block pool, waiting
queue, drafter, policies, host tier; all in EngineCore), read into one flat ``dict[str, int]``
of *samples* by the scheduler's ``make_stats``, and turned into Prometheus metrics by the
API server's stat logger (``api_server/metrics.py``). A sample's key is its metric name,
then its label values, joined by ``|`` (``sample_key``): names start with ``radix_plugin:``,
which is how the carrier (``compat.put_plugin_stats``) finds them again. Label values come
from closed sets (reasons, tiers, modes, the configured policy's name, the scheduler's
structure names), never from requests or sessions, so the number of series is bounded.

Each step sends only what changed (``StepChanges``): a counter's increase since the previous
step's stats, and a gauge's new value. Increases, as vLLM's own per-step counter stats, add
up correctly whichever API-server process a step's stats reach (vLLM sends them to one).

Pure: no vLLM import (the catalog is read by the docs test and the dashboard test too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "radix_plugin:"
COUNTER = "counter"
GAUGE = "gauge"
SEPARATOR = "|"

EVICTION_REASONS = ("capacity", "invalidation", "reset")
"""Why a cached block left the tree: the pool needed it, vLLM dropped its hash from outside
(``evict_blocks``, a KV-connector load error), or a prefix-cache reset."""
TIERS = ("device", "host")
SESSION_MODES = ("lru", "learned")
REFUSAL_REASONS = ("malformed", "conflict", "invalid", "cannot_finish")
"""Why the API server refused a request's grammar: bad ``radix_*`` keys or values, a
``radix_*`` grammar combined with vLLM's own structured outputs, a grammar xgrammar rejects,
or one that can never finish."""


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    """The Prometheus name as ``/metrics`` shows it (counters end in ``_total``)."""
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    """Labels besides ``model_name`` and ``engine``, which every EngineCore metric has."""
    api_server: bool = False
    """Counted in the API server itself (no ``engine`` label; not carried in the stats)."""


def _c(name: str, help: str, *labels: str) -> Metric:
    return Metric(PREFIX + name + "_total", COUNTER, help, labels)


def _g(name: str, help: str, *labels: str) -> Metric:
    return Metric(PREFIX + name, GAUGE, help, labels)


# The names, one constant each: the scheduler's snapshot, the stat logger and the tests use them.
CACHED_BLOCKS = _g("cached_kv_blocks", "KV blocks whose content the radix tree indexes.")
EVICTABLE_BLOCKS = _g(
    "evictable_kv_blocks", "Cached KV blocks nobody uses or pins: what eviction can free now."
)
TREE_NODES = _g("tree_nodes", "Nodes of the radix tree (one per cached block in the engine).")
EVICTED_BLOCKS = _c(
    "evicted_kv_blocks",
    "Cached KV blocks that left the radix tree, by reason and eviction policy.",
    "reason",
    "policy",
)
LOOKUP_TOKENS = _c(
    "prefix_lookup_tokens",
    "Tokens the plugin's prefix lookups could have hit (each lookup's prompt less its last "
    "token), as vLLM's prefix_cache_queries counts per lookup.",
)
HIT_TOKENS = _c(
    "prefix_hit_tokens",
    "Prompt tokens the plugin's prefix lookups found cached: on the device (radix tree) or "
    "in the host tier (continuing the device hit).",
    "tier",
)
PINNED_BLOCKS = _g(
    "pinned_kv_blocks",
    "KV cache blocks held by radix_pin pins (freed by radix_unpin, radix_pin_ttl, pin_ttl_s, "
    "or newer pins over the pin_share budget).",
)
PINNED_PREFIXES = _g("pinned_prefixes", "Distinct prompt prefixes pinned by radix_pin requests.")
PIN_BUDGET_BLOCKS = _g(
    "pin_budget_kv_blocks", "Most KV cache blocks pins may hold (pin_share of the pool)."
)
HELD_BACK = _c(
    "held_back_requests",
    "Waiting requests held back for a step while another request prefilled their new "
    "prefix (in-batch sharing; one per request and step).",
)
REORDERS = _c(
    "queue_reorders",
    "Steps in which the cache-aware order (schedule) changed the waiting queue's order.",
)
PROMOTED = _c(
    "queue_promoted_requests",
    "Waiting requests put first because they were passed over max_wait_steps times "
    "(one per request and step).",
)
JF_FORCED = _c(
    "jump_forward_forced_tokens",
    "Grammar-forced tokens appended as unrejectable drafts (forced mode, and auto mode's "
    "long runs).",
)
JF_VERIFIED = _c(
    "jump_forward_verified_tokens",
    "Grammar-forced draft tokens the model verified and accepted (verify mode, and auto "
    "mode's short runs).",
)
JF_REJECTED = _c(
    "jump_forward_rejected_tokens",
    "Grammar-forced draft tokens the model rejected (it preferred another tokenization).",
)
JF_STEPS_SAVED = _c(
    "jump_forward_steps_saved",
    "Model steps jump-forward saved: draft tokens accepted, forced or verified (each is a "
    "token that needed no step of its own).",
)
HOST_SAVED = _c("host_saved_blocks", "Evicted KV blocks copied to the host tier.")
HOST_LOADED = _c(
    "host_loaded_blocks", "KV blocks loaded back from the host tier for a waiting request."
)
HOST_PREFETCHED = _c(
    "host_prefetched_blocks",
    "KV blocks prefetched from the host tier for an agent due soon (issued).",
)
HOST_PREFETCH_IN_TIME = _c(
    "host_prefetch_in_time_blocks",
    "Prefetched KV blocks a request hit on the device after their load finished.",
)
HOST_PREFETCH_LATE = _c(
    "host_prefetch_late_blocks",
    "Prefetched KV blocks a request looked up while their load was still running (it "
    "waited for them).",
)
HOST_PREFETCH_WASTED = _c(
    "host_prefetch_wasted_blocks",
    "Prefetched KV blocks no request used: the load failed, the prefix they continue was "
    "gone or cached meanwhile, or they were evicted or reset before a hit.",
)
HOST_BYTES = _g("host_kv_bytes", "Bytes of KV blocks resident in the host tier.")
HOST_CAPACITY_BYTES = _g("host_capacity_kv_bytes", "Bytes the host tier may hold.")
SESSION_MODE = _g(
    "session_policy_mode",
    "1 for the ranking the session policy follows now (lru until its learned ranking's "
    "shadow leads significantly, then learned), 0 for the other.",
    "mode",
)
SESSION_SWITCHES = _c(
    "session_policy_switches", "Times the session policy switched between lru and learned."
)
SESSION_LEAD = _g(
    "session_shadow_hit_lead_blocks",
    "Hits (KV blocks, decayed over the policy's window of requests) by which the learned "
    "ranking's shadow cache leads the LRU shadow; negative when LRU leads.",
)
SESSION_MARGIN = _g(
    "session_shadow_lead_margin_blocks",
    "The lead the session policy needs to switch (lru_z standard errors of the per-request "
    "differences).",
)
SESSION_LIVE = _g(
    "session_live_sessions",
    "Sessions whose latest turn is within the stale horizon and that the client did not end.",
)
WORKFLOW_AGENTS = _g(
    "workflow_agents",
    "Agents the workflow learner has seen followed by another agent: where its learned "
    "transitions start.",
)
WORKFLOWS_TRACKED = _g(
    "workflows_tracked",
    "Workflows whose steps-to-execution feed the workflow policy (sent or learned).",
)
STATE_ENTRIES = _g(
    "state_entries",
    "Entries in the scheduler's per-request and per-session structures (radix_state_sizes), "
    "by structure: what the plugin keeps in memory beside the KV cache.",
    "structure",
)
GRAMMAR_REFUSALS = Metric(
    PREFIX + "grammar_refusals_total",
    COUNTER,
    "Requests the API server refused (HTTP 400) for their radix_* grammar, by reason.",
    ("reason",),
    api_server=True,
)

METRICS: tuple[Metric, ...] = tuple(v for v in tuple(globals().values()) if isinstance(v, Metric))
BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
COUNTER_NAMES = frozenset(m.name for m in METRICS if m.kind == COUNTER)


def sample_key(metric: Metric, *label_values: str) -> str:
    """The key of one sample of ``metric`` in the stats dict (label values in order)."""
    if len(label_values) != len(metric.labels):
        raise ValueError(f"{metric.name} takes labels {metric.labels}, got {label_values}")
    return SEPARATOR.join((metric.name, *label_values))


def split_sample_key(key: str) -> tuple[Metric, tuple[str, ...]] | None:
    """The metric and label values of a sample key; ``None`` for a key this version does
    not know (an engine of another plugin version)."""
    name, *values = key.split(SEPARATOR)
    metric = BY_NAME.get(name)
    if metric is None or len(values) != len(metric.labels):
        return None
    return metric, tuple(values)


class StepChanges:
    """What each step's stats carry of the samples: counters' increases since the last
    step, gauges whose value changed (every sample on the first step). O(samples) a step."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def take(self, samples: Mapping[str, int]) -> dict[str, int]:
        last = self._last
        out: dict[str, int] = {}
        for key, value in samples.items():
            old = last.get(key)
            if old == value:
                continue
            if key.split(SEPARATOR, 1)[0] in COUNTER_NAMES:
                out[key] = value - (old or 0)
            else:
                out[key] = value
        self._last = dict(samples)
        return out
