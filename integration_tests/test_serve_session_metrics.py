"""The session policy's metrics on a real server's /metrics: it starts at LRU, and switches
to its learned ranking once the learned ranking's shadow cache leads.

Tiny model, ``eviction: session`` with a one-request window and a low significance bar
(``window: 1``, ``lru_z: 0.5``) so one request where the shadows disagree decides; a 24-block
pool. A conversation's first turn is cached, then one-off requests that say they are a
session's last turn (``radix_session_end``) fill the pool: the LRU shadow drops the
conversation (the oldest), the learned shadow drops the ended one-offs first. The
conversation's next turn then hits only in the learned shadow, which takes the lead.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import pytest
from test_serve import _get, _post, serve_for_module

from radix_plugin import plugin_metrics as m
from radix_plugin.testing.models import get_model_path
from radix_plugin.testing.server import Scrape, free_port, server_command

RADIX = {"eviction": "session", "eviction_options": {"window": 1, "lru_z": 0.5}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    flags = [
        "--max-num-seqs",
        "2",
        "--scheduler-cls",
        "radix_plugin.RadixScheduler",
        "--additional-config",
        json.dumps({"radix_plugin": RADIX}),
    ]
    cmd = server_command(get_model_path("tiny"), port, flags, kv_blocks=24, max_model_len=512)
    yield from serve_for_module(tmp_path_factory, cmd, port)


def _tokens(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(16, 4000) for _ in range(n)]


def test_session_policy_switches_to_its_learned_ranking(server: str) -> None:
    model = json.loads(_get(server + "/v1/models"))["data"][0]["id"]

    def ask(prompt: list[int], **xargs: object) -> None:
        body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0}
        if xargs:
            body["vllm_xargs"] = xargs
        _post(server + "/v1/completions", body)

    turn_1 = _tokens(1, 128)  # four blocks
    ask(turn_1)
    start = Scrape(server)
    assert start.value(m.SESSION_MODE.name, mode="lru") == 1
    assert start.value(m.SESSION_MODE.name, mode="learned") == 0
    assert start.value(m.SESSION_LIVE.name) == 1
    for i in range(8):
        ask(_tokens(100 + i, 128), radix_session_end=True)
    before = Scrape(server)
    assert before.value(m.SESSION_MODE.name, mode="lru") == 1
    assert before.value(m.SESSION_LIVE.name) == 1  # the ended one-offs are not live
    ask([*turn_1, *_tokens(2, 64)])  # the next turn continues the first
    after = Scrape(server)
    assert after.value(m.SESSION_MODE.name, mode="learned") == 1
    assert after.value(m.SESSION_MODE.name, mode="lru") == 0
    assert after.value(m.SESSION_SWITCHES.name) - before.value(m.SESSION_SWITCHES.name) == 1
    lead = after.value(m.SESSION_LEAD.name)
    assert lead >= 4 and lead > after.value(m.SESSION_MARGIN.name) > 0
    assert after.value(m.EVICTED_BLOCKS.name, reason="capacity", policy="session") > 0
    assert after.value(m.STATE_ENTRIES.name, structure="session_sessions") >= 9
    assert after.value(m.STATE_ENTRIES.name, structure="session_shadow_lru_pages") > 0
