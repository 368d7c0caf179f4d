"""The simulator's ``belady`` is the exact optimum: no online policy ever beats it.

Belady ranks every block by its own next use (re-ranking a leaf after each trimmed page), and
a block is never used later than its prefix, so leaf-first eviction costs it nothing. On
random prefix-sharing traces every registered online policy, the session policy with client
hints included, must hit at most as many tokens.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from radix_plugin.cache_manager.core.registry import eviction_policy_names
from radix_plugin.simulator.replay import footprint_blocks, run_policy
from radix_plugin.simulator.sessions import client_hints, derive_sessions
from radix_plugin.simulator.trace import TraceRequest

BS = 4


@st.composite
def traces(draw: st.DrawFn) -> list[TraceRequest]:
    """Requests that extend an earlier one (a next turn or a branch) or start fresh; prompts
    end in a partial block, so vLLM's last-token cap never hides a full cached page."""
    next_id = 0
    out: list[TraceRequest] = []
    for _ in range(draw(st.integers(2, 40))):
        parent = draw(st.none() | st.integers(0, max(0, len(out) - 1)))
        base = [] if parent is None or not out else list(out[parent].hash_ids[:-1])
        new = draw(st.integers(1, 3))
        ids = base + list(range(next_id, next_id + new + 1))
        next_id += new + 1
        n_in = (len(ids) - 1) * BS + draw(st.integers(1, BS - 1))
        out.append(TraceRequest(len(out), n_in, draw(st.integers(1, 2 * BS)), tuple(ids)))
    return out


@settings(max_examples=40, deadline=None)
@given(traces(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_no_online_policy_beats_exact_belady(
    trace: list[TraceRequest], size: float, end_share: float
) -> None:
    biggest = max(-(-(r.input_length + r.output_length) // BS) for r in trace)
    cap = biggest + int(size * footprint_blocks(trace, BS))
    best = run_policy("belady", trace, BS, cap).hit_tokens
    hints = client_hints(derive_sessions(trace, BS), end_share=end_share)
    for name in eviction_policy_names(include_offline=False):
        assert run_policy(name, trace, BS, cap).hit_tokens <= best, name
    assert run_policy("session", trace, BS, cap, hints=hints).hit_tokens <= best
