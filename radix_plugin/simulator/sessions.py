"""Conversations of a Mooncake trace, which has no session field, from its hash-id chains.

A request whose full prompt blocks start with *all* the full prompt blocks of an earlier,
shorter request continues that request's conversation (a chat client re-sends the history).
The first request to continue a turn stays in its session; a later one forks a new session
from there (as a client does when it branches or regenerates), so sessions are linear chains.
Hash ids name a block's content and prefix, so an earlier prompt is identified by the id of
its last full block: one dict lookup per block of each prompt.

The replay then sends what a real client could: the session id on every request, and for a
configurable share of sessions a "last turn" hint on their final request.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from radix_plugin.simulator.trace import TraceRequest


@dataclass(frozen=True, slots=True)
class Turn:
    """Request ``index``'s place in its conversation."""

    session: int
    turn: int
    last: bool
    gap: int | None
    """Requests since the previous turn of the session (``None`` for a first turn)."""


def derive_sessions(trace: Sequence[TraceRequest], block_size: int) -> list[Turn]:
    """One :class:`Turn` per request; the first request of a conversation names it."""
    ends: dict[int, int] = {}  # last full block id of a prompt -> latest request with it
    parent: list[int | None] = []
    for index, req in enumerate(trace):
        full = req.hash_ids[: req.input_length // block_size]
        prev = None
        for j in range(len(full) - 1, -1, -1):
            q = ends.get(full[j])
            if q is not None and trace[q].input_length < req.input_length:
                prev = q
                break
        parent.append(prev)
        if full:
            ends[full[-1]] = index
    continued: set[int] = set()
    session: list[int] = []
    turn: list[int] = []
    out: list[Turn] = []
    for index, prev in enumerate(parent):
        forks = prev is None or prev in continued
        session.append(index if forks else session[prev])
        turn.append(0 if prev is None else turn[prev] + 1)
        if prev is not None:
            continued.add(prev)
    for index, prev in enumerate(parent):
        gap = None if prev is None else index - prev
        out.append(Turn(session[index], turn[index], index not in continued, gap))
    return out


def trace_sessions(trace: Sequence[TraceRequest], block_size: int) -> list[Turn]:
    """The trace's own conversations when every request names one (``extra["session"]``, as
    the synthetic generators do), else :func:`derive_sessions`."""
    if not trace or any("session" not in r.extra for r in trace):
        return derive_sessions(trace, block_size)
    final: dict[object, int] = {r.extra["session"]: i for i, r in enumerate(trace)}
    seen: dict[object, tuple[int, int]] = {}  # session -> (first index, last index so far)
    count: dict[object, int] = {}
    out = []
    for index, r in enumerate(trace):
        s = r.extra["session"]
        first, prev = seen.get(s, (index, None))  # type: ignore[arg-type]
        seen[s] = (first, index)
        count[s] = count.get(s, -1) + 1
        gap = None if prev is None else index - prev
        out.append(Turn(first, count[s], final[s] == index, gap))
    return out


@dataclass(frozen=True, slots=True)
class ClientHints:
    """What the replay tells the cache about one request, as a client's request would."""

    session: str | None
    session_end: bool | None
    """``radix_session_end`` as the client sends it: true on the last turn, false on the
    others, ``None`` from a client that does not know."""


def client_hints(
    turns: Sequence[Turn], *, ids: bool = True, end_share: float = 0.0, seed: int = 0
) -> list[ClientHints]:
    """Session ids on every request (``ids``); ``end_share`` of the sessions (drawn per
    session with ``seed``) come from a client that knows when a conversation ends, which
    sends ``radix_session_end`` on every turn (true on the final one)."""
    if not 0.0 <= end_share <= 1.0:
        raise ValueError(f"end_share must be in [0, 1], got {end_share}")
    rng = random.Random(seed)
    sends_end: dict[int, bool] = {}
    out = []
    for t in turns:
        if t.session not in sends_end:
            sends_end[t.session] = rng.random() < end_share
        out.append(
            ClientHints(
                session=f"s{t.session}" if ids else None,
                session_end=t.last if ids and sends_end[t.session] else None,
            )
        )
    return out


def session_stats(turns: Sequence[Turn]) -> dict[str, float]:
    """Share of requests that get a next turn and the distribution of the gaps to it."""
    gaps = sorted(t.gap for t in turns if t.gap is not None)
    sessions = {t.session for t in turns}

    def pct(q: float) -> float:
        return float(gaps[min(len(gaps) - 1, int(q * len(gaps)))]) if gaps else 0.0

    return {
        "requests": len(turns),
        "sessions": len(sessions),
        "continued_share": sum(not t.last for t in turns) / max(1, len(turns)),
        "gap_p10": pct(0.1),
        "gap_median": pct(0.5),
        "gap_p90": pct(0.9),
    }
