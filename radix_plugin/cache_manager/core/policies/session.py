"""Session-aware eviction: keep a live conversation's tail until its next turn, drop dead ones.

Most cached blocks of a chat workload are a conversation's tail (its history so far); the tail
is reused exactly when the conversation's next turn arrives, often hundreds of requests
later, which is far beyond what LRU keeps at small capacities. This policy ranks each tail by
its *hit density*: the probability that its session is still alive given how long it has
been silent, divided by the expected wait until its next turn (LHD's argument: a block earns
its space by hits per unit of time it occupies).

* Sessions come from the client's session id (vLLM's ``session_id``) or, without one, from
  the prompts themselves: a request whose prompt contains an earlier prompt's last block
  continues that request's conversation. The earlier prompts are remembered past their
  eviction (ghost entries), so continuations are observed even for tails the cache dropped.
* What is learned online, in units of arriving requests: the distribution of gaps between a
  session's turns, per pace (the octave of the session's previous gap: a user keeps a
  pace, so a quick conversation's tail is due soon and one silent far past its pace is
  likely over), and per turn index the share of turns that get a next turn (a turn whose
  session stays silent longer than most gaps seen counts as the last until it comes back).
* A client that knows more says so: ``radix_session_end`` true marks the last turn, whose
  tail then goes first; false says a next turn follows, so the tail is alive for sure and
  ranks by its expected wait alone. Only sessions whose client says nothing teach the share
  of turns that get a next turn, so hints also make the unhinted turns look (correctly)
  more alive.
* Tails of ended or stale sessions, branches a session moved away from and blocks of a kind
  that is never reused (learned per origin, as ``adaptive`` does) have density zero: they are
  evicted first, least recently used first. Prefixes several sessions share are ranked by
  their own hit rate.

Never worse than LRU beyond noise: two key-only shadows of the cache (no KV, just the page
keys, sized like the cache once it fills; ``shadow.py``) serve every request, one under LRU
and one under the density ranking (an unguarded copy of this policy that learns from the
same requests). The real cache ranks like LRU until the density shadow's lead in hits over
the last ``window`` requests exceeds ``lru_z`` standard errors of the paired per-request
differences, and goes back to LRU when LRU's lead does. A learned ranking needs hundreds of
requests before it can be told from LRU; short traces or ones it does not learn (tree-of-
thought search over 40 problems) stay at LRU's level, at twice the
bookkeeping. A cache larger than ``shadow_blocks`` (32,768 by default: a GPU's pool, not a
simulated one) is modelled by spatial sampling, as SHARDS does for miss-ratio curves: the
shadows serve only the sessions whose key hashes below the rate ``shadow_blocks / cache``
and hold ``shadow_blocks`` blocks, so their cost per request stays flat in the pool size.
What the client said needs no learning and counts in LRU mode too: a last turn's tail goes
first, a promised one last.

Keys depend on the current time, so the policy bumps ``version`` every ``rekey_every``
requests, or sooner where sessions turn faster (every 1/32 of the stale horizon: a key
frozen for a sizeable share of the gaps it predicts ranks a tail by an age long gone, which
cost ~2% of hits against LRU on tree-of-thought traces whose turns come a few requests
apart), and the tree re-keys its leaves then (O(L log L)); between re-keys a leaf keeps the
key of its last event, as the tree's lazy heap requires. Past ``LARGE_TREE_LEAVES``
evictable leaves (a GPU's pool: thousands of cached prompts) a re-key of all at once would
stall a step for tens of milliseconds, so each request re-keys ``REFRESH_PER_REQUEST``
leaves instead, round-robin: a key is then at most L / 8 requests old (~700 at 10^5 blocks
of 16 tokens holding 5,800 prompts), which the gaps it predicts (hundreds to thousands of
requests at that size) tolerate.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict, deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from radix_plugin.cache_manager.core.hookspecs import hookimpl
from radix_plugin.cache_manager.core.policies.base import EvictionPolicy
from radix_plugin.cache_manager.core.policies.shadow import UNBOUNDED, ShadowLRU, ShadowTree
from radix_plugin.cache_manager.core.radix_tree import LARGE_TREE_LEAVES

if TYPE_CHECKING:
    from radix_plugin.cache_manager.core.radix_tree import RadixNode, RadixTree

TURN_KEY = "session_turn"
LAST_HIT_KEY = "session_last_hit"
SHARED = "*"
"""Tag of a node that prompts of several sessions pass through."""
_BUCKETS_PER_OCTAVE = 4
_NUM_BUCKETS = 100
_TURN_CLASSES = 8
_MIN_PACED = 32
"""Gaps a pace class needs before its own distribution replaces the global one."""
_REKEYS_PER_HORIZON = 32
"""Re-keys at least this often per stale horizon, however short the horizon."""
REFRESH_PER_REQUEST = 8
"""Leaves re-keyed per request once the tree is large (``LARGE_TREE_LEAVES``): the whole
cache is re-keyed every L / 8 requests, for ~8 key computations per request."""


@dataclass(slots=True)
class _Session:
    last_turn: int
    turns: int
    ended: bool = False
    promised: bool = False
    """The client said a next turn follows (``radix_session_end`` sent as false)."""
    last_gap: int | None = None
    counted_silent: bool = False
    """Its last turn was counted as a session's last (silent past the horizon); undone if
    the session comes back after all."""
    live: bool = False
    """Counted in ``SessionPolicy.live_sessions``: its latest turn is within the stale
    horizon and the client did not end it."""


class _GapModel:
    """A learned distribution of gaps (in requests) between uses: survival and expected
    remaining wait per age, from a log-bucketed histogram refreshed every few requests."""

    def __init__(self, quantile: float, initial_horizon: int = 4096) -> None:
        self.quantile = quantile
        self.counts = [0] * _NUM_BUCKETS
        self.total = 0
        self.horizon = initial_horizon
        # Before any gap is seen: every age survives, the next use is a horizon away.
        self.survival = [1.0] * _NUM_BUCKETS
        self.wait = [float(initial_horizon)] * _NUM_BUCKETS

    def observe(self, gap: int) -> None:
        self.counts[_bucket(gap)] += 1
        self.total += 1

    def alive_and_wait(self, age: int) -> tuple[float, float]:
        """P(gap > age) and the expected wait left, E[gap - age | gap > age]."""
        b = _bucket(age)
        return self.survival[b], max(1.0, self.wait[b] - age)

    def refresh(self) -> None:
        """Survival, expected gap and horizon per bucket (O(buckets))."""
        if self.total == 0:
            return
        total = float(self.total)
        tail_n = tail_sum = 0.0
        survival = [0.0] * _NUM_BUCKETS
        wait = [0.0] * _NUM_BUCKETS
        for b in range(_NUM_BUCKETS - 1, -1, -1):
            c = self.counts[b]
            tail_n += c
            tail_sum += c * _bucket_mid(b)
            survival[b] = (tail_n - c / 2.0) / total
            wait[b] = tail_sum / tail_n if tail_n else 0.0
        self.survival, self.wait = survival, wait
        cum, last = 0.0, _NUM_BUCKETS - 1
        for b in range(_NUM_BUCKETS):
            cum += self.counts[b]
            if cum >= self.quantile * total:
                last = b
                break
        self.horizon = max(64, int(_bucket_mid(last + 1)))
        if self.total > 1 << 20:  # forget slowly: halve the history
            self.counts = [c // 2 for c in self.counts]
            self.total = sum(self.counts)


class SessionPolicy(EvictionPolicy):
    name = "session"
    description = "hit density per conversation: live tails kept until their next turn"

    def __init__(
        self,
        *,
        rekey_every: int = 16,
        max_sessions: int = 1 << 16,
        stale_quantile: float = 0.9,
        window: int = 500,
        lru_z: float = 2.0,
        guard: bool = True,
        shadow_blocks: int = 1 << 15,
    ) -> None:
        super().__init__()
        if rekey_every < 1:
            raise ValueError(f"rekey_every must be >= 1, got {rekey_every}")
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if not 0.5 <= stale_quantile < 1.0:
            raise ValueError(f"stale_quantile must be in [0.5, 1), got {stale_quantile}")
        self.rekey_every = rekey_every
        self.max_sessions = max_sessions
        self.stale_quantile = stale_quantile
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if lru_z <= 0.0:
            raise ValueError(f"lru_z must be > 0, got {lru_z}")
        self.window = window
        self.lru_z = lru_z
        self.guard = guard
        if shadow_blocks < 1:
            raise ValueError(f"shadow_blocks must be >= 1, got {shadow_blocks}")
        self.shadow_blocks = shadow_blocks
        self.switches = 0
        """Switches between LRU and the learned ranking (kept across resets, for /metrics)."""
        self._shadow_limit = UNBOUNDED
        self.on_reset()

    # --- what the engine or simulator reports ---------------------------------------------

    def note_request(
        self,
        request_id: Hashable,
        session: str | None,
        pages: Sequence[Hashable] = (),
        *,
        session_end: bool | None = None,
    ) -> Hashable:
        """A request arrived; returns the session it belongs to (given, or inferred from
        ``pages``, its full prompt pages, when ``session`` is ``None``). ``session_end`` is
        the client's word: last turn (true), a next turn follows (false), or nothing."""
        self.requests += 1
        now = self.requests
        key: Hashable = ("id", session) if session is not None else self._infer(pages, now)
        state = self._sessions.get(key)
        if state is None:
            state = self._sessions[key] = _Session(last_turn=now, turns=1)
        else:
            gap = now - state.last_turn
            self._resolve(state, continued=True, gap=gap)
            state.last_turn, state.turns, state.last_gap = now, state.turns + 1, gap
            self._sessions.move_to_end(key)
        state.ended = session_end is True
        state.promised = session_end is False
        self._set_live(state, not state.ended)
        self._pending.append((now, key))
        if session is None and pages:
            self._ends[pages[-1]] = (key, state.turns)
            self._ends.move_to_end(pages[-1])
            while len(self._ends) > self.max_sessions:
                self._ends.popitem(last=False)
        self._turn_of[request_id] = (key, state.turns)
        self._expire(now)
        if self.guard:
            self._duel(key, request_id, session, pages, session_end)
        large = self.tree is not None and self.tree.num_evictable_leaves() > LARGE_TREE_LEAVES
        self._since_rekey += 1
        if self._since_rekey >= min(
            self.rekey_every, self._turn_gaps.horizon // _REKEYS_PER_HORIZON
        ):
            self._since_rekey = 0
            for model in (self._turn_gaps, self._first_gaps, *self._paced_gaps.values()):
                model.refresh()
            self._hit_gaps.refresh()
            if not large:
                self.version += 1
        if large:
            self.tree.refresh_some(REFRESH_PER_REQUEST)  # type: ignore[union-attr]
        return key

    def tag(self, request_id: Hashable, node: RadixNode) -> None:
        """``node`` ends the cached prompt of ``request_id``: its path is the session's tail
        now. Stops at the first node already tagged so (amortised O(new nodes))."""
        turn = self._turn_of.get(request_id)
        tree = self.tree
        if turn is None or tree is None:
            return
        for n in node.path_to_root():
            old = n.meta(TURN_KEY)
            if old == turn:
                break
            n.metadata[TURN_KEY] = turn if old is None or old[0] == turn[0] else (SHARED, 0)
            tree.refresh(n)

    def forget_request(self, request_id: Hashable) -> None:
        self._turn_of.pop(request_id, None)

    # --- the key --------------------------------------------------------------------------

    def density(self, node: RadixNode) -> float:
        """Expected hits per block per request while ``node`` stays cached."""
        tag = node.meta(TURN_KEY)
        if tag is None or tag[0] == SHARED:
            return self._hit_rate(node)
        key, turn = tag
        state = self._sessions.get(key)
        if state is None or state.ended or turn < state.turns:
            return 0.0  # ended, stale, or a branch the session moved away from
        return self._live_density(state) * self._origin_factor(node)

    def _hit_rate(self, node: RadixNode) -> float:
        """A shared prefix's density from the learned gaps between hits of shared prefixes:
        one hit often counts for little, a prefix silent for longer than they ever are for
        nothing (a finished problem's prompt must not hog the cache as under LFU)."""
        if node.hit_count == 0:
            return 0.0
        age = self.requests - node.meta(LAST_HIT_KEY, self.requests)
        survive, wait = self._hit_gaps.alive_and_wait(age)
        return survive / wait

    def key(self, node: RadixNode) -> Any:
        if self.lru_mode:
            return (self._client_word(node), node.last_access)
        return (self.density(node), node.last_access)

    def _client_word(self, node: RadixNode) -> int:
        """What the client said about the tail, which needs no learning: a last turn's goes
        first (0), a tail whose next turn was promised last (2), the rest by LRU (1)."""
        tag = node.meta(TURN_KEY)
        state = self._sessions.get(tag[0]) if tag is not None else None
        if state is None:
            return 1
        if state.ended:
            return 0
        return 2 if state.promised and tag[1] == state.turns else 1

    def _duel(
        self,
        key: Hashable,
        request_id: Hashable,
        session: str | None,
        pages: Sequence[Hashable],
        session_end: bool | None,
    ) -> None:
        """Serve the request in both shadows; rank like the one that leads significantly,
        like LRU until the density ranking does. Past ``shadow_blocks`` only a sample of
        the sessions is served (SHARDS: the shadows hold that share of the cache)."""
        learner, shadow = self._learner, self._shadow_own
        assert learner is not None and shadow is not None
        self._flush_paths(shadow)
        if self._sample_rate < 1.0 and not self._sampled(key):
            return
        lru_hit = self._shadow_lru.serve(pages)
        learner.note_request(request_id, session, pages, session_end=session_end)
        own_hit, node = shadow.serve(pages)
        learner.tag(request_id, node)
        learner.forget_request(request_id)
        diff = own_hit - lru_hit
        decay = 1.0 - 1.0 / self.window
        self._lead = self._lead * decay + diff
        self._lead_var = self._lead_var * decay + diff * diff
        margin = self.lru_z * math.sqrt(self._lead_var)
        if self.lru_mode and self._lead > margin:
            self._switch(lru=False)
        elif not self.lru_mode and self._lead < -margin:
            self._switch(lru=True)

    def _flush_paths(self, shadow: ShadowTree) -> None:
        """Paths the real tree cached since the last request (outputs included) reach the
        shadows, each once, by its deepest node (sampled sessions' only, when sampling)."""
        sampling = self._sample_rate < 1.0
        for node in self._new_paths:
            if sampling:
                tag = node.meta(TURN_KEY)
                if tag is None or tag[0] == SHARED or not self._sampled(tag[0]):
                    continue
            path = [p for n in reversed(list(node.path_to_root())) for p in n.pages]
            self._shadow_lru.touch(path)
            shadow.store(path)
        self._new_paths.clear()

    def _sampled(self, key: Hashable) -> bool:
        """Whether the session ``key`` is in the shadows' sample (a stable hash, so every
        turn of a session is in or out together, and runs repeat)."""
        return zlib.crc32(repr(key).encode()) < self._sample_rate * 4294967296.0

    def _switch(self, *, lru: bool) -> None:
        self.lru_mode = lru
        self.switches += 1
        self.version += 1

    def guard_state(self) -> tuple[float, float]:
        """The learned ranking's shadow's lead over the LRU shadow (hits in pages, decayed
        over ``window`` requests; negative when LRU leads) and the margin a switch needs."""
        return self._lead, self.lru_z * math.sqrt(self._lead_var)

    def state_sizes(self) -> dict[str, int]:
        """Entries of the policy's per-session and per-request structures (O(1))."""
        shadow = self._shadow_own
        return {
            "session_sessions": len(self._sessions),
            "session_turns": len(self._turn_of),
            "session_pending_turns": len(self._pending),
            "session_prompt_ends": len(self._ends),
            "session_new_paths": len(self._new_paths),
            "session_shadow_lru_pages": len(self._shadow_lru),
            "session_shadow_tree_blocks": shadow.tree.stats().cached_blocks if shadow else 0,
        }

    def _live_density(self, state: _Session) -> float:
        age = self.requests - state.last_turn
        gaps = self._gap_model(state)
        survive, wait = gaps.alive_and_wait(age)
        if state.promised:  # alive for sure; overdue, it may come any time up to the horizon
            return 1.0 / (wait if survive > 0.0 else gaps.horizon)
        if survive <= 0.0:
            return 0.0
        p = self._continue_share(state.turns)
        alive = p * survive / (p * survive + 1.0 - p)
        return alive / wait

    def _origin_factor(self, node: RadixNode) -> float:
        origin = node.origin
        if origin == "prompt":
            return 1.0
        return min(1.0, self._reuse_share(origin) / self._reuse_share("prompt"))

    # --- learning -------------------------------------------------------------------------

    def _infer(self, pages: Sequence[Hashable], now: int) -> Hashable:
        """The session whose latest prompt this one extends (deepest match); a new one when
        none does, or when it extends an older turn (a branch, as a regenerated answer)."""
        for page in reversed(pages):
            found = self._ends.get(page)
            if found is not None:
                key, turn = found
                state = self._sessions.get(key)
                if state is not None and state.turns == turn:
                    return key
                break
        return ("req", now)

    def _gap_model(self, state: _Session) -> _GapModel:
        """The gaps of sessions that kept the same pace (their previous gap in the same
        octave) once enough are seen, else every session's: users keep their pace."""
        if state.last_gap is None:
            return self._first_gaps if self._first_gaps.total >= _MIN_PACED else self._turn_gaps
        model = self._paced_gaps.get(_pace_class(state.last_gap))
        return model if model is not None and model.total >= _MIN_PACED else self._turn_gaps

    def _continue_share(self, turns: int) -> float:
        k = min(turns, _TURN_CLASSES) - 1
        cont, ended = self._continued[k], self._silent[k]
        return (cont + 1.0) / (cont + ended + 2.0)

    def _resolve(self, state: _Session, *, continued: bool, gap: int = 0) -> None:
        """The session's previous turn is resolved: continued after ``gap`` requests, or not
        (silent past the stale horizon). Whether a turn gets a next one is learned from the
        sessions whose client says nothing: a hint already says it for the others."""
        if continued and not state.ended:
            self._turn_gaps.observe(gap)
            if state.last_gap is None:
                self._first_gaps.observe(gap)
            else:
                pace = _pace_class(state.last_gap)
                if pace not in self._paced_gaps:
                    self._paced_gaps[pace] = _GapModel(self.stale_quantile)
                self._paced_gaps[pace].observe(gap)
        if state.ended or state.promised:
            return
        k = min(state.turns, _TURN_CLASSES) - 1
        if continued:
            if state.counted_silent:
                self._silent[k] -= 1
                state.counted_silent = False
            self._continued[k] += 1
        elif not state.counted_silent:
            self._silent[k] += 1
            state.counted_silent = True

    def _expire(self, now: int) -> None:
        """Count turns silent past the horizon as last turns; forget the oldest sessions
        beyond ``max_sessions``. Sessions stay known after that, so a late next turn still
        teaches its gap (cutting the history at the horizon would shrink it each time)."""
        pending = self._pending
        while pending and (
            now - pending[0][0] > self._turn_gaps.horizon or len(pending) > 4 * self.max_sessions
        ):
            turn_at, key = pending.popleft()
            state = self._sessions.get(key)
            if state is not None and state.last_turn == turn_at:
                self._resolve(state, continued=False)
                self._set_live(state, False)
        while len(self._sessions) > self.max_sessions:
            self._set_live(self._sessions.popitem(last=False)[1], False)

    def _set_live(self, state: _Session, live: bool) -> None:
        if state.live != live:
            state.live = live
            self.live_sessions += 1 if live else -1

    def _reuse_share(self, origin: str) -> float:
        return (self._reused.get(origin, 0) + 1) / (self._inserted.get(origin, 0) + 2)

    def _learner_copy(self) -> SessionPolicy:
        """The same ranking, unguarded, for the shadow tree."""
        return SessionPolicy(
            rekey_every=self.rekey_every,
            max_sessions=self.max_sessions,
            stale_quantile=self.stale_quantile,
            guard=False,
        )

    # --- tree events ----------------------------------------------------------------------

    def on_insert(self, node: RadixNode) -> None:
        node.metadata["born"] = self.requests
        if self.guard:  # the shadows take it at the next request, by its deepest node
            self._new_paths.pop(node.parent, None)  # type: ignore[arg-type]
            self._new_paths[node] = None
        origin = node.origin
        self._inserted[origin] = self._inserted.get(origin, 0) + node.num_blocks

    def on_hit(self, node: RadixNode) -> None:
        tag = node.meta(TURN_KEY)
        if tag is None or tag[0] == SHARED:
            last = node.meta(LAST_HIT_KEY, node.meta("born"))
            if last is not None and last < self.requests:
                self._hit_gaps.observe(self.requests - last)
        node.metadata[LAST_HIT_KEY] = self.requests
        if node.hit_count == 1:
            origin = node.origin
            self._reused[origin] = self._reused.get(origin, 0) + node.num_blocks

    def on_split(self, upper: RadixNode, lower: RadixNode) -> None:
        upper.metadata.setdefault("born", lower.meta("born", self.requests))
        if LAST_HIT_KEY in lower.metadata:
            upper.metadata.setdefault(LAST_HIT_KEY, lower.metadata[LAST_HIT_KEY])

    def limit_shadows(self, blocks: int) -> None:
        """The cache never holds more than ``blocks``: neither do the shadows, before its
        first eviction sizes them exactly (they also see prompts never computed, aborted
        before their prefill, and pages the cache dropped without evicting them)."""
        self._shadow_limit = blocks
        if not self._shadows_fitted:
            self._resize_shadows(blocks)

    def _resize_shadows(self, cache_blocks: int) -> None:
        """Size the shadows for a cache of ``cache_blocks``: like it, or past
        ``shadow_blocks`` a sample of its sessions in ``shadow_blocks`` (SHARDS)."""
        if self._shadow_own is None:
            return
        self._cache_blocks = cache_blocks
        if cache_blocks >= UNBOUNDED:
            self._sample_rate, capacity = 1.0, UNBOUNDED
        else:
            self._sample_rate = min(1.0, self.shadow_blocks / max(1, cache_blocks))
            capacity = min(cache_blocks, self.shadow_blocks)
        self._shadow_lru.resize(capacity)
        self._shadow_own.resize(capacity)

    def on_evict(self, node: RadixNode, num_blocks: int) -> None:
        shadow = self._shadow_own
        if self.tree is not None and shadow is not None:  # full: size the shadows like it
            cached = self.tree.cached_blocks()
            if cached > self._cache_blocks or not self._shadows_fitted:
                self._shadows_fitted = True
                self._resize_shadows(cached)

    def on_reset(self) -> None:
        self.requests = 0
        self._sessions: OrderedDict[Hashable, _Session] = OrderedDict()
        self.live_sessions = 0
        self._pending: deque[tuple[int, Hashable]] = deque()
        self._ends: OrderedDict[Hashable, tuple[Hashable, int]] = OrderedDict()
        self._turn_of: dict[Hashable, tuple[Hashable, int]] = {}
        self._turn_gaps = _GapModel(self.stale_quantile)
        self._first_gaps = _GapModel(self.stale_quantile)
        self._paced_gaps: dict[int, _GapModel] = {}
        self._hit_gaps = _GapModel(self.stale_quantile)
        self._continued = [0] * _TURN_CLASSES
        self._silent = [0] * _TURN_CLASSES
        self._inserted: dict[str, int] = {}
        self._reused: dict[str, int] = {}
        self.lru_mode = self.guard  # LRU until the density ranking leads significantly
        self._new_paths: dict[RadixNode, None] = {}  # insertion order: replays repeat
        self._shadow_lru = ShadowLRU()
        self._learner = self._learner_copy() if self.guard else None
        self._shadow_own = ShadowTree(self._learner) if self._learner is not None else None
        self._shadows_fitted = False
        self._sample_rate = 1.0  # share of sessions the shadows serve
        self._cache_blocks = UNBOUNDED  # the cache size the shadows were last sized for
        self.limit_shadows(self._shadow_limit)
        self._lead = self._lead_var = 0.0
        self._since_rekey = 0


def _bucket(age: int) -> int:
    return min(_NUM_BUCKETS - 1, int(_BUCKETS_PER_OCTAVE * math.log2(age + 1)))


def _pace_class(gap: int) -> int:
    return int(math.log2(gap + 1))


def _bucket_mid(b: int) -> float:
    return 2.0 ** ((b + 0.5) / _BUCKETS_PER_OCTAVE) - 1.0


def tag_session(tree: RadixTree, request_id: Hashable, node: RadixNode) -> None:
    """Tell a session policy (if the tree runs one) that ``node`` ends a request's prompt."""
    if isinstance(tree.policy, SessionPolicy):
        tree.policy.tag(request_id, node)


@hookimpl
def radix_eviction_policies() -> list[type]:
    return [SessionPolicy]
