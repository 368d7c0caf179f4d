"""``radix_pin`` / ``radix_unpin`` in the scheduler: which prompts to pin, when, until when.

``PinTable`` is the bookkeeping of the tree pins requests asked for; ``PinManager`` is the
scheduler's one collaborator for pins: it learns of a pinning request at ``add_request``,
pins its prompt once the prompt is computed (or when it is freed, for a request that ended
in its prefill step), expires pins on the configured clock, and reports ``PinStats``.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from radix_plugin.cache_manager.core.errors import PinBudgetExceeded
from radix_plugin.cache_manager.core.hints import RequestHints
from radix_plugin.cache_manager.core.pin_stats import PinStats
from radix_plugin.cache_manager.core.radix_tree import RadixNode, RadixTree
from radix_plugin.cache_manager.engine_core.block_pool import RadixBlockPool

logger = logging.getLogger(__name__)


class PinTable:
    """Explicit pins (``radix_pin``): one tree pin per distinct node, counted by pinners.

    A node pinned by k requests is pinned once in the tree, so it counts once against the
    tree's pin budget, and stays pinned until all k pinners are gone: each is unpinned,
    expires (a pin with a time-to-live, see :meth:`expire`), or :meth:`release` drops them
    all at once. When a new pin does not fit the budget, the least recently pinned nodes
    lose their pins first. The table never holds more than the distinct pinned nodes (each
    at least one block, so at most the budget).
    """

    def __init__(self, tree: RadixTree) -> None:
        self._tree = tree
        # node -> its pinners' expiry times, soonest first (inf: never); least recently
        # pinned node first
        self._pins: OrderedDict[RadixNode, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pins)

    def count(self, node: RadixNode) -> int:
        """How many pinners hold ``node``."""
        return len(self._pins.get(node, ()))

    def expires_at(self, node: RadixNode) -> float | None:
        """When ``node``'s last pinner expires (inf: never); ``None`` if it is not pinned."""
        expiries = self._pins.get(node)
        return expiries[-1] if expiries else None

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
            bisect.insort(self._pins[node], expires_at)
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
                if not self._pins:
                    raise
                oldest, _ = self._pins.popitem(last=False)
                self._tree.unpin(oldest)
        self._pins[node] = [expires_at]

    def unpin(self, node: RadixNode) -> None:
        """Drop one pinner of ``node`` (the one due to expire first); the last one unpins
        it in the tree."""
        expiries = self._pins[node]
        expiries.pop(0)
        if not expiries:
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

    def expire(self, now: float) -> int:
        """Drop the pinners whose time is up (``expires_at <= now``); returns how many
        pinned prefixes that released."""
        self._forget_detached()
        released = 0
        for node in [n for n, expiries in self._pins.items() if expiries[0] <= now]:
            expiries = self._pins[node]
            del expiries[: bisect.bisect_right(expiries, now)]
            if not expiries:
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
