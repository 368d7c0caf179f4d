"""Prometheus gauges for ``radix_pin`` pins, on the API server's /metrics.

vLLM's stat loggers run in the API server process (the one that serves /metrics) and are
fed the ``SchedulerStats`` each EngineCore step sends. ``RadixPinStatLogger`` is a
``vllm.stat_logger_plugins`` entry point: it takes the pin counts the radix scheduler put in
those stats (``compat.take_pin_stats``) and sets one gauge per count and engine. vLLM lists
plugin loggers before its own, so they see the stats as vLLM filled them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Gauge
from vllm.v1.metrics.loggers import AggregateStatLoggerBase

from radix_plugin.cache_manager.core.pin_stats import METRICS
from radix_plugin.compat import take_pin_stats

LABELS = ["model_name", "engine"]
_GAUGES: dict[str, Gauge] = {}


def pin_gauges() -> dict[str, Gauge]:
    """PinStats field -> its gauge; registered once per process (vLLM's re-registration of
    its own metrics only covers names containing ``vllm``)."""
    if not _GAUGES:
        for field, (name, doc) in METRICS.items():
            _GAUGES[field] = Gauge(name, doc, LABELS, multiprocess_mode="mostrecent")
    return _GAUGES


class RadixPinStatLogger(AggregateStatLoggerBase):
    """Sets ``radix_plugin:pinned_kv_blocks``, ``radix_plugin:pinned_prefixes`` and
    ``radix_plugin:pin_budget_kv_blocks`` per engine; idle without the radix scheduler."""

    def __init__(self, vllm_config: Any, engine_indexes: list[int] | None = None) -> None:
        model = vllm_config.model_config.served_model_name
        self._gauges = {
            idx: {field: gauge.labels(model, str(idx)) for field, gauge in pin_gauges().items()}
            for idx in engine_indexes or [0]
        }

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        values = take_pin_stats(scheduler_stats) if scheduler_stats is not None else None
        gauges = self._gauges.get(engine_idx)
        if not values or gauges is None:
            return
        for field, value in values.items():
            if field in gauges:
                gauges[field].set(value)

    def log_engine_initialized(self) -> None:
        pass
