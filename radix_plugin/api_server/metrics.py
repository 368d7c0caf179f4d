"""The plugin's Prometheus metrics on the API server's /metrics.

vLLM's stat loggers run in the API server process (the one that serves /metrics) and are
fed the ``SchedulerStats`` each EngineCore step sends. ``RadixPinStatLogger`` (the
``vllm.stat_logger_plugins`` entry point ``radix_pins``, named for the pins it first
exported) takes out the plugin's samples the radix scheduler put in those stats
(``compat.take_plugin_stats``; see ``radix_plugin.plugin_metrics`` for what they are) and
applies them per engine, as vLLM labels its own metrics: a counter grows by the step's
increase, a gauge takes the step's value. vLLM lists plugin loggers before its own, so they
see the stats as vLLM filled them. The grammar refusals are counted here too, by the
admission check itself (``count_grammar_refusal``), not by an engine.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge
from vllm.v1.metrics.loggers import AggregateStatLoggerBase

from radix_plugin.compat import take_plugin_stats
from radix_plugin.plugin_metrics import (
    COUNTER,
    GRAMMAR_REFUSALS,
    METRICS,
    REFUSAL_REASONS,
    Metric,
    split_sample_key,
)

ENGINE_LABELS = ("model_name", "engine")
_FAMILIES: dict[str, Counter | Gauge] = {}


def engine_metric_families() -> dict[str, Counter | Gauge]:
    """Metric name -> its Prometheus family, for every metric EngineCore reports; registered
    once per process (vLLM's re-registration of its own metrics only covers names
    containing ``vllm``), so /metrics lists each family from the start."""
    if not _FAMILIES:
        for metric in METRICS:
            if not metric.api_server:
                _FAMILIES[metric.name] = _family(metric)
    return _FAMILIES


def _family(metric: Metric) -> Counter | Gauge:
    labels = [*ENGINE_LABELS, *metric.labels]
    if metric.kind == COUNTER:
        return Counter(metric.name, metric.help, labels)
    return Gauge(metric.name, metric.help, labels, multiprocess_mode="mostrecent")


_REFUSALS = Counter(GRAMMAR_REFUSALS.name, GRAMMAR_REFUSALS.help, list(GRAMMAR_REFUSALS.labels))


def count_grammar_refusal(reason: str) -> None:
    """One request refused for its grammar (``REFUSAL_REASONS``)."""
    if reason not in REFUSAL_REASONS:
        raise ValueError(f"unknown grammar refusal reason {reason!r}")
    _REFUSALS.labels(reason).inc()


class RadixPinStatLogger(AggregateStatLoggerBase):
    """Applies the radix scheduler's samples to ``radix_plugin:*`` metrics per engine; idle
    without the radix scheduler (its stats carry no samples)."""

    def __init__(self, vllm_config: Any, engine_indexes: list[int] | None = None) -> None:
        self._model = vllm_config.model_config.served_model_name
        self._families = engine_metric_families()
        self._children: dict[tuple[int, str], tuple[bool, Any]] = {}
        for idx in engine_indexes or [0]:  # unlabelled metrics show 0 from the start
            for metric in METRICS:
                if not metric.api_server and not metric.labels:
                    self._child(idx, metric.name)

    def _child(self, engine_idx: int, key: str) -> tuple[bool, Any] | None:
        """(is a counter, the labelled child) for a sample key; ``None`` if unknown."""
        child = self._children.get((engine_idx, key))
        if child is None:
            parsed = split_sample_key(key)
            if parsed is None or parsed[0].name not in self._families:
                return None
            metric, values = parsed
            family = self._families[metric.name]
            labelled = family.labels(self._model, str(engine_idx), *values)
            child = self._children[(engine_idx, key)] = (metric.kind == COUNTER, labelled)
        return child

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        samples = take_plugin_stats(scheduler_stats) if scheduler_stats is not None else None
        if not samples:
            return
        for key, value in samples.items():
            child = self._child(engine_idx, key)
            if child is None:
                continue
            is_counter, labelled = child
            if not is_counter:
                labelled.set(value)
            elif value > 0:
                labelled.inc(value)

    def log_engine_initialized(self) -> None:
        pass
