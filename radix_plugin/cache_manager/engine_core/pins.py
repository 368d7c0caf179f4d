"""``radix_pin`` / ``radix_unpin`` in the scheduler: which prompts to pin, when, until when.

``PinTable`` is the bookkeeping of the tree pins requests asked for; ``PinManager`` is the
scheduler's one collaborator for pins: it learns of a pinning request at ``add_request``,
pins its prompt once the prompt is computed (or when it is freed, for a request that ended
in its prefill step), expires pins on the configured clock, releases the oldest pins when
they alone keep a waiting request out, and reports ``PinStats``.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vllm.v1.request import RequestStatus

from radix_plugin.cache_manager.core.errors import PinBudgetExceeded
from radix_plugin.cache_manager.core.hints import RequestHints
from radix_plugin.cache_manager.core.pin_stats import PinStats
from radix_plugin.cache_manager.core.radix_tree import RadixNode, RadixTree
from radix_plugin.cache_manager.engine_core.block_pool import RadixBlockPool

logger = logging.getLogger(__name__)


MAX_TIMED_PINNERS = 64
"""Pinners with a TTL kept per node. Past it, the one due first is dropped: the node's pin
lasts as long (the latest expiry is kept); only ``count`` saturates."""


@dataclass
class _Pinners:
    """One node's pinners: how many have no expiry, and the others' expiry times, sorted."""

    forever: int = 0
    timed: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return self.forever + len(self.timed)

    def add(self, expires_at: float) -> None:
        if expires_at == math.inf:
            self.forever += 1
            return
        bisect.insort(self.timed, expires_at)
        if len(self.timed) > MAX_TIMED_PINNERS:
            del self.timed[0]

    def drop_first(self) -> None:
        """Drop the pinner due first (timed ones before those without expiry)."""
        if self.timed:
            del self.timed[0]
        else:
            self.forever -= 1

    def expire(self, now: float) -> None:
        del self.timed[: bisect.bisect_right(self.timed, now)]

    @property
    def first_expiry(self) -> float:
        return self.timed[0] if self.timed else math.inf

    @property
    def last_expiry(self) -> float:
        return math.inf if self.forever else self.timed[-1]


class PinTable:
    """Explicit pins (``radix_pin``): one tree pin per distinct node, counted by pinners.

    A node pinned by k requests is pinned once in the tree, so it counts once against the
    tree's pin budget, and stays pinned until all k pinners are gone: each is unpinned,
    expires (a pin with a time-to-live, see :meth:`expire`), or :meth:`release` drops them
    all at once. When a new pin does not fit the budget, the least recently pinned nodes
    lose their pins first. The table never holds more than the distinct pinned nodes (each
    at least one block, so at most the budget), and per node a count of pinners without
    expiry plus at most ``MAX_TIMED_PINNERS`` expiry times.
    """

    def __init__(self, tree: RadixTree) -> None:
        self._tree = tree
        # node -> its pinners; least recently pinned node first
        self._pins: OrderedDict[RadixNode, _Pinners] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pins)

    def count(self, node: RadixNode) -> int:
        """How many pinners hold ``node`` (timed ones counted up to ``MAX_TIMED_PINNERS``)."""
        pinners = self._pins.get(node)
        return len(pinners) if pinners is not None else 0

    def stored_expiries(self, node: RadixNode) -> int:
        """Expiry times kept for ``node`` (the bounded part of its entry)."""
        pinners = self._pins.get(node)
        return len(pinners.timed) if pinners is not None else 0

    def expires_at(self, node: RadixNode) -> float | None:
        """When ``node``'s last pinner expires (inf: never); ``None`` if it is not pinned."""
        pinners = self._pins.get(node)
        return pinners.last_expiry if pinners is not None else None

    @property
    def pinned_blocks(self) -> int:
        """Blocks pinned in the tree (by this table and by the eviction policy): the number
        the pin budget bounds."""
        return self._tree.stats().pinned_blocks

    def pin(self, node: RadixNode, expires_at: float = math.inf) -> None:
        """Pin the prefix ending at ``node`` once more, until ``expires_at`` (on the clock
        :meth:`expire` is given); raises ``PinBudgetExceeded`` if it cannot fit even after
        unpinning older pins (which are then dropped)."""
        self._forget_detached()
        if node in self._pins:
            self._pins[node].add(expires_at)
            self._pins.move_to_end(node)
            return
        budget = self._tree.max_pinned_blocks
        if budget is not None and node.depth_in_blocks() > budget:
            raise PinBudgetExceeded(
                f"a {node.depth_in_blocks()}-block prefix can never fit the pin budget of "
                f"{budget} blocks"
            )
        while True:
            try:
                self._tree.pin(node)
                break
            except PinBudgetExceeded:
                if not self.release_oldest():
                    raise
        pinners = self._pins[node] = _Pinners()
        pinners.add(expires_at)

    def unpin(self, node: RadixNode) -> None:
        """Drop one pinner of ``node`` (the one due to expire first); the last one unpins
        it in the tree."""
        pinners = self._pins[node]
        pinners.drop_first()
        if not pinners:
            del self._pins[node]
            self._tree.unpin(node)

    def release(self, node: RadixNode) -> int:
        """Drop every pinner of every pinned prefix of the prefix ending at ``node`` (that
        node and its ancestors): what ``radix_unpin`` does. Returns how many pinned
        prefixes were released."""
        self._forget_detached()
        path = set(node.path_to_root())
        released = [n for n in self._pins if n in path]
        for n in released:
            del self._pins[n]
            self._tree.unpin(n)
        return len(released)

    def release_oldest(self) -> bool:
        """Drop every pinner of the least recently pinned prefix; False if none is pinned."""
        self._forget_detached()
        if not self._pins:
            return False
        oldest, _ = self._pins.popitem(last=False)
        self._tree.unpin(oldest)
        return True

    def expire(self, now: float) -> int:
        """Drop the pinners whose time is up (``expires_at <= now``); returns how many
        pinned prefixes that released."""
        self._forget_detached()
        released = 0
        for node in [n for n, p in self._pins.items() if p.first_expiry <= now]:
            pinners = self._pins[node]
            pinners.expire(now)
            if not pinners:
                del self._pins[node]
                self._tree.unpin(node)
                released += 1
        return released

    def clear(self) -> None:
        """Forget every pin; for after the tree dropped them all (a prefix-cache reset)."""
        self._pins.clear()

    def _forget_detached(self) -> None:
        """Drop nodes an invalidation removed from the tree (their pins ended there)."""
        for node in [n for n in self._pins if n.detached]:
            del self._pins[node]


class PinManager:
    """The scheduler's pins: pending pins of requests whose prompt is still being computed,
    the ``PinTable`` of what is pinned, TTLs on ``clock``, and one log line per change."""

    def __init__(
        self,
        pool: RadixBlockPool,
        *,
        block_size: int,
        pin_share: float,
        default_ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._block_size = block_size
        self._pin_share = pin_share
        self._default_ttl_s = default_ttl_s
        self.clock = clock
        pool.tree.max_pinned_blocks = int((pool.num_gpu_blocks - 1) * pin_share)
        self.table = PinTable(pool.tree)
        self._pending: dict[str, float] = {}  # request id -> pin TTL (0: none)
        self._logged = PinStats()

    def __len__(self) -> int:
        """Requests whose pin is pending (their prompt is not computed yet)."""
        return len(self._pending)

    def state_sizes(self) -> dict[str, int]:
        """Entries of the per-request and per-pin structures (O(1))."""
        return {"pins_pending": len(self._pending), "pin_table_nodes": len(self.table)}

    def on_add(self, request: Any, hints: RequestHints) -> None:
        """A new request: remember its pin for when its prompt is computed; an unpin
        request releases the pins on its prompt now."""
        if hints.pin:
            ttl = hints.pin_ttl_s if hints.pin_ttl_s is not None else self._default_ttl_s
            self._pending[request.request_id] = ttl
        if hints.unpin:
            self._unpin(request)

    def expire(self) -> None:
        """Release the pins whose TTL is up (lazily, once per step)."""
        if self.table.expire(self.clock()):
            self._log("expired")

    def after_step(self, num_scheduled_tokens: Mapping[str, int], requests: Mapping) -> None:
        """Pin the prompt of each pending request the step finished computing."""
        if not self._pending:
            return
        for rid in [r for r in num_scheduled_tokens if r in self._pending]:
            request = requests[rid]
            if request.num_computed_tokens >= request.num_prompt_tokens:
                self._pin_prompt(request, self._pending.pop(rid))

    def on_freed(self, request: Any) -> None:
        """A pinning request that finished in its prefill step (``max_tokens=1``, SGLang's
        ``max_new_tokens: 0``) is freed before ``after_step`` sees it: pin it here."""
        ttl = self._pending.pop(request.request_id, None)
        if ttl is not None and request.num_computed_tokens >= request.num_prompt_tokens:
            self._pin_prompt(request, ttl)

    def yield_to(self, waiting: Iterable[Any]) -> None:
        """Pins never keep a request out: called after a step that ran nothing and admitted
        nothing, it releases the least recently pinned prefix if the free blocks cannot
        hold the first admissible waiting request's uncached tokens (one prefix per such
        step, so the fewest pins go). Without this a request needing more than the pool
        minus the pins would wait forever, the engine spinning empty steps."""
        admissible = (RequestStatus.WAITING, RequestStatus.PREEMPTED)
        request = next((r for r in waiting if r.status in admissible), None)
        if request is None:
            return
        hit, _ = self._pool.cached_prefix_node(request.block_hashes)
        needed = -(-(request.num_tokens + 1) // self._block_size) - hit
        if needed <= self._pool.get_num_free_blocks() or not self.table.release_oldest():
            return
        self._log(f"released for request {request.request_id}, which the pins kept out")

    def on_reset(self) -> None:
        """The pool's prefix-cache reset dropped every pin in the tree."""
        self.table.clear()
        self._log("prefix cache reset")

    def stats(self) -> PinStats:
        """The pins now: blocks and prefixes held, and the budget that bounds them."""
        return PinStats(
            pinned_blocks=self.table.pinned_blocks,
            pinned_prefixes=len(self.table),
            budget_blocks=self._pool.tree.max_pinned_blocks or 0,
        )

    def _prompt_node(self, request: Any) -> tuple[int, RadixNode]:
        n_prompt = request.num_prompt_tokens // self._block_size
        return self._pool.cached_prefix_node(request.block_hashes[:n_prompt])

    def _pin_prompt(self, request: Any, ttl: float) -> None:
        n_blocks, node = self._prompt_node(request)
        if n_blocks == 0:
            return
        expires_at = self.clock() + ttl if ttl > 0 else math.inf
        try:
            self.table.pin(node, expires_at)
        except PinBudgetExceeded as exc:
            logger.warning("radix_pin for request %s ignored: %s", request.request_id, exc)
        self._log(f"request {request.request_id} pinned {n_blocks} blocks")

    def _unpin(self, request: Any) -> None:
        """``radix_unpin``: release every pin on a prefix of this request's prompt."""
        n_blocks, node = self._prompt_node(request)
        released = self.table.release(node) if n_blocks else 0
        if released:
            self._log(f"request {request.request_id} unpinned {released} prefixes")
        else:
            logger.info("radix_unpin of request %s: no pinned prefix", request.request_id)

    def _log(self, why: str) -> None:
        """One log line whenever what is pinned changed."""
        stats = self.stats()
        if stats == self._logged:
            return
        self._logged = stats
        logger.info(
            "radix_plugin pins (%s): %d KV blocks in %d prefixes pinned, budget %d blocks "
            "(pin_share %.2f)",
            why,
            stats.pinned_blocks,
            stats.pinned_prefixes,
            stats.budget_blocks,
            self._pin_share,
        )
