"""The session policy on a real radix tree: ended and stale tails go first, live ones stay;
sessions are inferred from the prompts when the client sends no id."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from radix_plugin.cache_manager.core.policies.session import SHARED, TURN_KEY, SessionPolicy
from radix_plugin.cache_manager.core.radix_tree import RadixTree
from radix_plugin.cache_manager.core.registry import make_eviction_policy
from radix_plugin.simulator.drivers import RadixDriver
from radix_plugin.simulator.generators import generate
from radix_plugin.simulator.replay import footprint_blocks, replay, run_policy, session_hints

BS = 2


def _tree(**options: object) -> tuple[RadixTree, SessionPolicy]:
    policy = make_eviction_policy("session", online=True, **options)
    assert isinstance(policy, SessionPolicy)
    return RadixTree(BS, policy), policy


def _serve(
    tree: RadixTree,
    policy: SessionPolicy,
    rid: str,
    pages: list[str],
    session: str | None,
    *,
    end: bool | None = None,
) -> None:
    """What the engine does for one request: note it, cache its prompt, tag it, finish."""
    policy.note_request(rid, session, pages, session_end=end)
    _, node = tree.insert(pages, [hash((rid, p)) & 0xFFFF for p in pages])
    policy.tag(rid, node)
    policy.forget_request(rid)


def _evicted_first(tree: RadixTree, candidates: dict[str, list[str]]) -> str:
    victim = tree.next_victim()
    assert victim is not None
    return next(name for name, pages in candidates.items() if victim.pages[-1] == pages[-1])


def test_an_ended_sessions_tail_goes_before_an_older_live_one() -> None:
    tree, policy = _tree()
    live, ended = ["l1", "l2"], ["e1", "e2"]
    _serve(tree, policy, "r1", live, "live")  # older: LRU would evict it first
    _serve(tree, policy, "r2", ended, "ended", end=True)
    assert _evicted_first(tree, {"live": live, "ended": ended}) == "ended"
    lru = RadixTree(BS)
    lru.insert(live, [1, 2])
    lru.insert(ended, [3, 4])
    assert lru.next_victim().pages[-1] == "l2"  # type: ignore[union-attr]


def test_a_branch_the_session_left_goes_before_its_live_tail() -> None:
    tree, policy = _tree()
    _serve(tree, policy, "r1", ["a", "b"], "s")
    _serve(tree, policy, "r2", ["a", "c"], "s")  # regenerated: ["a", "b"] is a dead branch
    assert tree.next_victim().pages == ["b"]  # type: ignore[union-attr]


def test_sessions_are_inferred_from_prompts_without_ids() -> None:
    _, policy = _tree()
    k1 = policy.note_request("r1", None, ["a", "b"])
    assert policy.note_request("r2", None, ["a", "b", "c"]) == k1  # extends r1: continues
    assert policy.note_request("r3", None, ["x"]) != k1
    # extends r1's prompt, which r2 already continued: a branch, so a session of its own
    assert policy.note_request("r4", None, ["a", "b", "d"]) != k1


def test_learned_gaps_make_a_silent_session_stale() -> None:
    tree, policy = _tree(rekey_every=1)
    for i in range(200):  # many sessions, each continued 3 requests later
        policy.note_request(f"a{i}", f"s{i}", [f"p{i}"])
        policy.note_request(f"b{i}", f"t{i}", [f"q{i}"])
        policy.note_request(f"c{i}", f"u{i}", [f"w{i}"])
        policy.note_request(f"d{i}", f"s{i}", [f"p{i}", f"p{i}x"])
    _serve(tree, policy, "old", ["o1", "o2"], "old-session")
    for i in range(100):  # far past every gap seen
        policy.note_request(f"x{i}", f"fresh{i}", [f"f{i}"])
    _serve(tree, policy, "new", ["n1", "n2"], "new-session")
    assert policy.density(tree.next_victim()) == 0.0  # type: ignore[arg-type]
    assert _evicted_first(tree, {"old": ["o1", "o2"], "new": ["n1", "n2"]}) == "old"


def _replay_tot(policy: SessionPolicy, seed: int, share: float) -> tuple[int, int]:
    """Hit tokens of ``policy`` (no hints) and of LRU on a 40-problem tree-of-thought trace."""
    trace = generate("tree_of_thought", block_size=64, problems=40, seed=seed)
    cap = int(footprint_blocks(trace, 64) * share)
    driver = RadixDriver(cap, 64, policy)
    on_arrival, on_admit = session_hints(driver, policy, None)
    hits = replay(trace, driver, 64, 1, None, on_admit, on_arrival).hit_tokens
    return hits, run_policy("lru", trace, 64, cap).hit_tokens


def test_it_ranks_like_lru_until_the_density_ranking_leads() -> None:
    """Tree-of-thought search at 5% capacity is a trace where the density ranking loses to
    LRU; at 2% LRU thrashes and the density ranking wins by a third. The shadows see both:
    the guarded policy stays with LRU in the first case and follows the density in the
    second (the guarantee behind 'never worse than LRU', without giving up the gains)."""
    unguarded, guarded = SessionPolicy(guard=False), SessionPolicy()
    own, lru = _replay_tot(unguarded, 0, 0.05)
    assert own < lru
    kept, lru = _replay_tot(guarded, 0, 0.05)
    assert guarded.lru_mode and kept >= lru > own
    winner = SessionPolicy()
    won, lru = _replay_tot(winner, 0, 0.02)
    assert not winner.lru_mode and won > 1.2 * lru


def test_no_hints_it_is_not_below_lru_on_tree_of_thought() -> None:
    """Short tree-of-thought traces end before a learned ranking can be told from LRU by
    its hits: the policy must not lose more than noise on any seed (it lost 4.5% on one
    seed at 3% capacity with a guard that trusted the density ranking first)."""
    for share in (0.03, 0.05):
        total_own = total_lru = 0
        for seed in range(10):
            own, lru = _replay_tot(SessionPolicy(), seed, share)
            assert own >= 0.99 * lru, (share, seed)
            total_own, total_lru = total_own + own, total_lru + lru
        assert total_own >= 0.998 * total_lru, share


def test_a_promised_tail_outlives_a_silent_one_and_an_ended_one_goes_first() -> None:
    """``radix_session_end: false`` is the client's word that a next turn follows: that
    tail stays even when it is the oldest; an unhinted one may be over, an ended one is."""
    tree, policy = _tree()
    tails = {"promised": ["p1", "p2"], "silent": ["s1", "s2"], "ended": ["e1", "e2"]}
    _serve(tree, policy, "r1", tails["promised"], "promised", end=False)
    _serve(tree, policy, "r2", tails["silent"], "silent")
    _serve(tree, policy, "r3", tails["ended"], "ended", end=True)
    order = []
    while tails:
        name = _evicted_first(tree, tails)
        order.append(name)
        tree.evict(len(tails.pop(name)))
    assert order == ["ended", "silent", "promised"]


def test_a_session_keeps_its_pace() -> None:
    """Conversations whose next turn came quickly come quickly again, slow ones slowly. Most
    conversations here are slow, so every-session gaps would keep the slow tail silent for
    longer (its turn is nearer); per-pace gaps keep the quick one, due any moment."""
    tree, policy = _tree(rekey_every=1, guard=False)  # the ranking itself
    fillers = iter(range(10**6))

    def silence(n: int) -> None:
        for _ in range(n):
            f = next(fillers)
            policy.note_request(f"filler{f}", f"one-off{f}", [f"page{f}"])

    for i in range(40):  # 40 quick conversations: 3 requests between turns
        for turn in range(3):
            policy.note_request(f"q{i}-{turn}", f"quick{i}", [f"q{i}-{turn}"])
            silence(2)
    for turn in range(3):  # 200 slow ones: 300 requests between turns
        for i in range(200):
            policy.note_request(f"s{i}-{turn}", f"slow{i}", [f"s{i}-{turn}"])
        silence(100)
    quick, slow = ["a1", "a2"], ["b1", "b2"]
    _serve(tree, policy, "b-0", slow[:1], "slow-new")
    silence(299)
    _serve(tree, policy, "b-1", slow, "slow-new")  # 300 requests after its first turn
    silence(100)
    _serve(tree, policy, "a-0", quick[:1], "quick-new")
    silence(2)
    _serve(tree, policy, "a-1", quick, "quick-new")  # 3 requests after its first turn
    silence(1)
    assert _evicted_first(tree, {"quick": quick, "slow": slow}) == "slow"


@st.composite
def conversations(draw: st.DrawFn) -> list[tuple[str | None, list[str], bool | None, int]]:
    """Requests of a few conversations (some without ids), each turn extending the session's
    previous prompt; each with the client's word on the end and blocks to evict after it."""
    prompts: dict[str, list[str]] = {}
    out = []
    for i in range(draw(st.integers(1, 60))):
        name = draw(st.sampled_from("abcdef"))
        pages = prompts.get(name, []) + [f"{name}{i}-{j}" for j in range(draw(st.integers(1, 3)))]
        prompts[name] = pages
        session = draw(st.sampled_from([name, None]))
        end = draw(st.sampled_from([None, True, False]))
        out.append((session, pages, end, draw(st.integers(0, 4))))
    return out


@settings(max_examples=80, deadline=None)
@given(conversations(), st.integers(1, 8))
def test_densities_are_bounded_and_ended_tails_go_first(
    requests: list[tuple[str | None, list[str], bool | None, int]], rekey_every: int
) -> None:
    tree, policy = _tree(rekey_every=rekey_every, guard=False)
    for i, (session, pages, end, evict) in enumerate(requests):
        _serve(tree, policy, f"r{i}", pages, session, end=end)
        tree.evict(min(evict, tree.evictable_blocks()))
        leaves = tree.evictable_leaves()
        densities = {leaf: policy.density(leaf) for leaf in leaves}
        assert all(0.0 <= d <= 1.0 for d in densities.values())
        ended = [leaf for leaf in leaves if _ended(policy, leaf)]
        assert all(densities[leaf] == 0.0 for leaf in ended)
        victim = tree.next_victim()
        if ended:
            assert victim is not None and policy.density(victim) == 0.0


def _ended(policy: SessionPolicy, leaf: object) -> bool:
    tag = leaf.metadata.get(TURN_KEY)  # type: ignore[attr-defined]
    if tag is None or tag[0] == SHARED:
        return False
    state = policy._sessions.get(tag[0])
    return state is not None and state.ended


def test_sampled_shadows_stay_within_their_budget_and_still_find_the_winner() -> None:
    """A cache larger than ``shadow_blocks`` is modelled by a sample of its sessions: the
    shadows never hold more than the budget, and at half the sessions the duel still sees
    the density ranking's win on tree-of-thought at 2% (unsampled: 1.40x LRU)."""
    trace = generate("tree_of_thought", block_size=64, problems=40, seed=0)
    budget = int(footprint_blocks(trace, 64) * 0.02) // 2
    sampled = SessionPolicy(shadow_blocks=budget)
    won, lru = _replay_tot(sampled, 0, 0.02)
    assert not sampled.lru_mode and won > 1.2 * lru
    assert sampled._shadow_lru.capacity == budget
    assert sampled._shadow_own is not None
    assert sampled._shadow_own.tree.stats().cached_blocks <= budget
