"""The metric catalog: vLLM-style names, bounded labels, sample keys that survive the trip,
per-step changes that add up, and a README that lists every metric."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from radix_plugin import plugin_metrics as m

README = Path(__file__).resolve().parents[1] / "README.md"
PROMETHEUS_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
BOUNDED_LABELS = {"policy", "reason", "tier", "mode", "structure"}
"""Labels whose values come from closed sets (never a request or session id)."""


def test_names_follow_vllms_style() -> None:
    assert len(m.BY_NAME) == len(m.METRICS)
    for metric in m.METRICS:
        assert PROMETHEUS_NAME.match(metric.name), metric.name
        assert metric.name.startswith("radix_plugin:"), metric.name
        assert metric.name.endswith("_total") == (metric.kind == m.COUNTER), metric.name
        assert set(metric.labels) <= BOUNDED_LABELS, metric.name
        assert metric.help.strip(), metric.name


def _label_values(metric: m.Metric) -> st.SearchStrategy[tuple[str, ...]]:
    closed = {
        "reason": st.sampled_from(m.EVICTION_REASONS + m.REFUSAL_REASONS),
        "tier": st.sampled_from(m.TIERS),
        "mode": st.sampled_from(m.SESSION_MODES),
    }
    name = st.from_regex(r"[a-z_]{1,20}", fullmatch=True)
    return st.tuples(*(closed.get(label, name) for label in metric.labels))


@given(st.sampled_from(m.METRICS).flatmap(lambda mt: st.tuples(st.just(mt), _label_values(mt))))
def test_sample_keys_round_trip(case: tuple[m.Metric, tuple[str, ...]]) -> None:
    metric, values = case
    key = m.sample_key(metric, *values)
    assert key.startswith(m.PREFIX)
    assert m.split_sample_key(key) == (metric, values)


@given(st.text(max_size=40))
def test_unknown_keys_are_ignored_not_misread(key: str) -> None:
    parsed = m.split_sample_key(key)
    if parsed is not None:
        metric, values = parsed
        assert m.sample_key(metric, *values) == key


_COUNTER_KEYS = [m.LOOKUP_TOKENS.name, m.sample_key(m.EVICTED_BLOCKS, "capacity", "lru")]
_GAUGE_KEYS = [m.CACHED_BLOCKS.name, m.sample_key(m.STATE_ENTRIES, "hints")]


@st.composite
def _sample_runs(draw: st.DrawFn) -> list[dict[str, int]]:
    """Successive samples of one engine: counters never fall, gauges go anywhere, and a
    labelled series may appear late (a first eviction, a new structure)."""
    runs: list[dict[str, int]] = []
    current: dict[str, int] = {}
    for _ in range(draw(st.integers(1, 8))):
        current = dict(current)
        for key in _COUNTER_KEYS:
            if draw(st.booleans()):
                current[key] = current.get(key, 0) + draw(st.integers(0, 50))
        for key in _GAUGE_KEYS:
            if draw(st.booleans()):
                current[key] = draw(st.integers(-5, 50))
        runs.append(current)
    return runs


@given(_sample_runs())
def test_step_changes_add_up_to_the_samples(runs: list[dict[str, int]]) -> None:
    """What the stat logger rebuilds (counters summed, gauges set) equals the samples."""
    changes = m.StepChanges()
    seen: dict[str, int] = {}
    for samples in runs:
        for key, value in changes.take(samples).items():
            is_counter = key.split(m.SEPARATOR)[0] in m.COUNTER_NAMES
            if is_counter:
                assert value >= 0
            seen[key] = seen.get(key, 0) + value if is_counter else value
        assert seen == samples
    assert changes.take(runs[-1]) == {}  # nothing changed: nothing sent


def test_readme_lists_every_metric_and_no_other() -> None:
    text = README.read_text()
    section = text.split("\n## Metrics", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(radix_plugin:[a-z_]+)`", section))
    assert listed == set(m.BY_NAME)
    assert "dashboards/radix_plugin.json" in section
