"""Hostile requests against the README's full server (workflow eviction, host tier,
jump-forward drafts): each gets a 4xx naming the bad key within seconds, and a normal request
right after it still succeeds; at the end the server is still healthy.

Issue 12: a recursive required schema made jump-forward allocate until the engine core was
killed (every later request refused); `root ::= root` and 5,000 nested brackets were 500s;
`{"a": true}` steps and a 400-digit priority were accepted.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serve import serve_for_module

from radix_plugin.testing.models import get_model_path
from radix_plugin.testing.server import free_port, full_plugin_flags, server_command

RECURSIVE = {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]}
NESTED = "[" * 5000 + "]" * 5000
BOUNDED_S = 20  # every hostile request is answered well within this


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    cmd = server_command(get_model_path("tiny"), port, full_plugin_flags(), kv_blocks=64)
    yield from serve_for_module(tmp_path_factory, cmd, port)


def _call(base: str, body: dict, timeout: float = 120, raw_xargs: str = "") -> tuple[int, str]:
    """POST a completion; `raw_xargs` is spliced in as JSON text (too deep for `json`)."""
    model = json.loads(urllib.request.urlopen(base + "/v1/models", timeout=30).read())
    full = {"model": model["data"][0]["id"], "prompt": "A record:", "max_tokens": 16, **body}
    data = json.dumps(full)
    if raw_xargs:
        data = data[:-1] + ', "vllm_xargs": ' + raw_xargs + "}"
    request = urllib.request.Request(
        base + "/v1/completions", data.encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _still_serves(base: str) -> None:
    code, body = _call(base, {"temperature": 0, "vllm_xargs": {"radix_choice": ["yes", "no"]}})
    assert code == 200, body
    assert json.loads(body)["choices"][0]["text"] in ("yes", "no")


@pytest.mark.parametrize(
    ("xargs", "key", "message"),
    [
        ({"radix_json_schema": json.dumps(RECURSIVE)}, "radix_json_schema", "no finite output"),
        ({"radix_ebnf": "root ::= root"}, "radix_ebnf", "no finite output"),
        ({"radix_workflow": "w", "radix_steps": NESTED}, "radix_steps", "flat object"),
        ({"radix_workflow": "w", "radix_steps": '{"a": true}'}, "radix_steps", "integers"),
        ({"radix_priority": "9" * 400}, "radix_priority", "must be an integer"),
        ({"radix_priority": 2**40}, "radix_priority", "between"),
        ({"radix_session_end": "maybe"}, "radix_session_end", "must be a boolean"),
    ],
)
def test_hostile_xargs_get_400_naming_the_key(
    server: str, xargs: dict, key: str, message: str
) -> None:
    start = time.monotonic()
    code, body = _call(server, {"temperature": 0, "vllm_xargs": xargs})
    assert time.monotonic() - start < BOUNDED_S
    assert code == 400, body
    assert key in body and message in body
    _still_serves(server)


def test_unfinishable_grammar_through_vllms_own_structured_outputs_ends_cleanly(
    server: str,
) -> None:
    """vLLM's `structured_outputs` skip our admission check: no jump-forward for them, so the
    request runs to max_tokens (or vLLM refuses it) instead of taking the engine down."""
    body = {"temperature": 0, "structured_outputs": {"grammar": 'root ::= "{\\"a\\":" root "}"'}}
    start = time.monotonic()
    code, text = _call(server, body)
    assert time.monotonic() - start < BOUNDED_S
    assert code in (200, 400), text
    _still_serves(server)


def test_deeply_nested_xargs_value_in_the_body_is_not_a_500(server: str) -> None:
    xargs = '{"radix_workflow": "w", "radix_steps": ' + NESTED + "}"
    code, body = _call(server, {}, raw_xargs=xargs)
    assert 400 <= code < 500, body
    _still_serves(server)


def test_min_p_and_logit_bias_work_beside_jump_forward(server: str) -> None:
    """vLLM refuses both for the whole server once a speculative config is set; jump-forward's
    drafts are ours, so they run in draft-free batches and the processors apply."""
    from concurrent.futures import ThreadPoolExecutor

    def ask(path: str, body: dict) -> dict:
        request = urllib.request.Request(
            server + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        return json.loads(urllib.request.urlopen(request, timeout=30).read())

    token = ask("/tokenize", {"prompt": "hello", "add_special_tokens": False})["tokens"][0]
    piece = ask("/detokenize", {"tokens": [token]})["prompt"]
    biased = {"temperature": 0, "max_tokens": 4, "logit_bias": {str(token): 100}}
    grammar = {"temperature": 0, "max_tokens": 64, "vllm_xargs": {"radix_json_schema": "{}"}}
    with ThreadPoolExecutor(3) as pool:
        runs = [
            pool.submit(_call, server, body)
            for body in (biased, {"temperature": 0.8, "min_p": 0.5}, grammar)
        ]
        (b_code, b_body), (m_code, m_body), (g_code, g_body) = (f.result() for f in runs)
    assert b_code == 200, b_body
    assert json.loads(b_body)["choices"][0]["text"] == piece * 4
    assert m_code == 200, m_body
    assert g_code == 200, g_body


_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
_VALUE = (
    _SCALAR
    | st.lists(_SCALAR, max_size=4)
    | st.text(alphabet='[]{}":,0123456789ab\\ ', max_size=300)
    | st.sampled_from(
        [
            json.dumps(RECURSIVE),
            '{"type": "array", "minItems": 5, "maxItems": 2}',
            "root ::= root",
            "(a{1000}){2000}",
            "9" * 400,
            '{"a": true}',
            NESTED[:400] + NESTED[-400:],
        ]
    )
)
_KEYS = st.sampled_from(
    [
        "radix_priority",
        "radix_workflow",
        "radix_agent",
        "radix_steps",
        "radix_json_schema",
        "radix_regex",
        "radix_ebnf",
        "radix_choice",
        "radix_any_whitespace",
    ]
)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(xargs=st.dictionaries(_KEYS, _VALUE, min_size=1, max_size=3))
def test_fuzzed_xargs_never_get_a_5xx(server: str, xargs: dict) -> None:
    start = time.monotonic()
    code, body = _call(server, {"temperature": 0, "max_tokens": 8, "vllm_xargs": xargs})
    assert time.monotonic() - start < BOUNDED_S
    # vLLM itself refuses integers beyond 64 bits in any xargs, naming `extra_args`.
    assert code == 200 or (code == 400 and ("radix_" in body or "extra_args" in body)), body
    _still_serves(server)


def test_server_is_still_healthy_at_the_end(server: str) -> None:
    assert urllib.request.urlopen(server + "/health", timeout=30).status == 200
    _still_serves(server)
