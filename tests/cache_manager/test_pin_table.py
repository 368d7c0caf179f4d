"""The scheduler's pin table over a real radix tree: counted per node, bounded by the budget."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radix_plugin.cache_manager.core.radix_tree import PinBudgetExceeded, RadixNode, RadixTree
from radix_plugin.cache_manager.engine_core.pins import MAX_TIMED_PINNERS, PinTable

BUDGET = 5
SEQUENCES = [[1, 2, 3, 4], [1, 2, 7], [9, 8], [9, 8, 7, 6, 5, 4], [3]]


def tree_with_nodes() -> tuple[RadixTree, list[RadixNode]]:
    """One node per block, as the vLLM pool builds it; returns every node."""
    tree = RadixTree(1, max_pinned_blocks=BUDGET, path_compression=False, token_ids=True)
    blocks = iter(range(1000))
    for seq in SEQUENCES:
        tree.insert(seq, [next(blocks) for _ in seq])
    return tree, list(tree.iter_nodes())


def pinned_union(nodes: list[RadixNode]) -> int:
    return len({id(n) for node in nodes for n in node.path_to_root()})


ops = st.lists(st.tuples(st.sampled_from(["pin", "unpin"]), st.integers(0, 100)), max_size=40)


@given(ops)
def test_pins_are_counted_per_node_within_the_budget(script: list[tuple[str, int]]) -> None:
    tree, nodes = tree_with_nodes()
    table = PinTable(tree)
    pinners: dict[RadixNode, int] = {}  # what the test pinned and not yet unpinned
    for op, i in script:
        node = nodes[i % len(nodes)]
        if op == "pin":
            try:
                table.pin(node)
            except PinBudgetExceeded:
                assert node.depth_in_blocks() > BUDGET
                continue
            pinners[node] = pinners.get(node, 0) + 1
        elif table.count(node):
            table.unpin(node)
            pinners[node] -= 1
        held = [n for n in nodes if table.count(n)]
        assert len(table) == len(held) <= BUDGET
        assert all(table.count(n) <= pinners.get(n, 0) for n in held)  # only evictions lose
        assert table.pinned_blocks == tree.stats().pinned_blocks == pinned_union(held)
        assert table.pinned_blocks <= BUDGET
    for node in [n for n in nodes if table.count(n)]:
        for _ in range(table.count(node)):
            table.unpin(node)
    assert len(table) == 0 and tree.stats().pinned_blocks == 0


def test_a_node_pinned_k_times_stays_pinned_until_unpinned_k_times() -> None:
    tree, nodes = tree_with_nodes()
    table = PinTable(tree)
    leaf = next(n for n in nodes if n.depth_in_blocks() == 4)
    for _ in range(3):
        table.pin(leaf)
    assert len(table) == 1 and table.pinned_blocks == 4
    table.unpin(leaf)
    table.unpin(leaf)
    assert table.pinned_blocks == 4
    table.unpin(leaf)
    assert len(table) == 0 and table.pinned_blocks == 0


def test_a_prefix_over_the_budget_does_not_flush_the_other_pins() -> None:
    tree, nodes = tree_with_nodes()
    table = PinTable(tree)
    small = next(n for n in nodes if n.depth_in_blocks() == 2)
    table.pin(small)
    huge = next(n for n in nodes if n.depth_in_blocks() == 6)
    with pytest.raises(PinBudgetExceeded, match="pin budget of 5 blocks"):
        table.pin(huge)
    assert table.count(small) == 1 and table.pinned_blocks == 2


def test_pins_of_invalidated_nodes_leave_the_table() -> None:
    tree, nodes = tree_with_nodes()
    table = PinTable(tree)
    leaf = next(n for n in nodes if n.depth_in_blocks() == 4)
    table.pin(leaf)
    tree.remove_subtree(leaf.parent)
    other = next(n for n in nodes if n.depth_in_blocks() == 1 and not n.detached)
    table.pin(other)
    assert len(table) == 1 and table.pinned_blocks == 1


INF = float("inf")
timed_ops = st.lists(
    st.one_of(
        st.tuples(st.just("pin"), st.integers(0, 100), st.sampled_from([None, 1.0, 2.5, 10.0])),
        st.tuples(st.just("unpin"), st.integers(0, 100)),
        st.tuples(st.just("release"), st.integers(0, 100)),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 3.0])),
    ),
    max_size=50,
)


@settings(deadline=None)  # shared CI cores
@given(timed_ops)
def test_pin_table_with_ttl_unpin_and_release_matches_a_model(script: list[tuple]) -> None:
    """Model: node -> sorted expiry times of its pinners, nodes in least-recently-pinned
    order; a new pin over the budget first drops the oldest nodes' pins."""
    tree, nodes = tree_with_nodes()
    table = PinTable(tree)
    model: dict[RadixNode, list[float]] = {}  # insertion order = least recently pinned first
    now = 0.0
    for op, *args in script:
        if op == "pin":
            node, ttl = nodes[args[0] % len(nodes)], args[1]
            expires = now + ttl if ttl else INF
            if node in model:
                model[node] = sorted([*model.pop(node), expires])
                table.pin(node, expires)
            elif node.depth_in_blocks() > BUDGET:
                with pytest.raises(PinBudgetExceeded):
                    table.pin(node, expires)
            else:
                while pinned_union([*model, node]) > BUDGET:
                    del model[next(iter(model))]
                model[node] = [expires]
                table.pin(node, expires)
        elif op == "unpin":
            node = nodes[args[0] % len(nodes)]
            if node in model:
                table.unpin(node)
                model[node].pop(0)
                if not model[node]:
                    del model[node]
        elif op == "release":
            node = nodes[args[0] % len(nodes)]
            path = set(node.path_to_root())
            gone = [n for n in model if n in path]
            for n in gone:
                del model[n]
            assert table.release(node) == len(gone)
        else:
            now += args[0]
            emptied = 0
            for n in list(model):
                model[n] = [t for t in model[n] if t > now]
                if not model[n]:
                    del model[n]
                    emptied += 1
            assert table.expire(now) == emptied
        assert list(table._pins) == list(model)
        for n in nodes:
            assert table.count(n) == len(model.get(n, []))
            assert table.expires_at(n) == (model[n][-1] if n in model else None)
        assert table.pinned_blocks == tree.stats().pinned_blocks == pinned_union(list(model))
    for n in list(model):
        table.release(n)
    assert len(table) == 0 and tree.stats().pinned_blocks == 0


def test_expired_pins_release_their_blocks_and_unpin_releases_ancestors() -> None:
    tree, nodes = tree_with_nodes()
    table = PinTable(tree)
    four = next(n for n in nodes if n.depth_in_blocks() == 4)  # [1, 2, 3, 4]
    two = four.parent.parent  # [1, 2]
    table.pin(two, expires_at=10.0)
    table.pin(two)  # a second pinner without expiry keeps it pinned past 10
    assert table.expire(11.0) == 0 and table.count(two) == 1 and table.pinned_blocks == 2
    table.pin(four, expires_at=15.0)
    assert table.expires_at(four) == 15.0 and table.pinned_blocks == 4
    assert table.expire(15.0) == 1 and table.count(four) == 0 and table.pinned_blocks == 2
    table.pin(four)
    assert table.release(two) == 1 and table.count(four) == 1  # a longer pin stays
    table.pin(two)
    assert table.release(four) == 2  # the prefix and its pinned ancestor
    assert len(table) == 0 and table.pinned_blocks == 0


def test_pinners_without_expiry_are_counted_not_stored() -> None:
    tree, nodes = tree_with_nodes()
    table = PinTable(tree)
    leaf = next(n for n in nodes if n.depth_in_blocks() == 4)
    for _ in range(10_000):
        table.pin(leaf)
    assert table.count(leaf) == 10_000 and table.stored_expiries(leaf) == 0
    assert table.expires_at(leaf) == INF


def test_timed_pinners_per_node_are_bounded_and_the_latest_expiry_is_kept() -> None:
    tree, nodes = tree_with_nodes()
    table = PinTable(tree)
    leaf = next(n for n in nodes if n.depth_in_blocks() == 4)
    for i in range(1000):
        table.pin(leaf, expires_at=1000.0 - i)  # the first pinner lasts longest
    assert table.stored_expiries(leaf) == MAX_TIMED_PINNERS
    assert table.expires_at(leaf) == 1000.0
    assert table.expire(999.0) == 0 and table.count(leaf) == 1  # only the longest is left
    assert table.expire(1000.0) == 1 and table.pinned_blocks == 0
