"""Hostile clients of the SGLang endpoint (``/generate``): the catalog of cases and the
client that sends them, shared by ``integration_tests/test_hostile_sglang.py`` and
``benchmarks/hostile_sglang.py`` (which records each case's status and latency).

Each case is one request a hostile or broken client might send. ``expect`` says what a
correct server does with it: ``"4xx"`` (an error naming ``param``, or the body for a
body-level problem) or ``"served"`` (a 200: valid, if odd, input). Bodies are built lazily
(some are megabytes). Every request goes over a fresh ``http.client`` connection with a
timeout, so a stalled server shows as a timeout, not a hang.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from radix_plugin.api_server.core.sglang_request import (
    MAX_BATCH,
    MAX_N,
    MAX_TEXT_CHARS,
    SAMPLING_FIELDS,
)
from radix_plugin.testing.server import metric_totals

SHORT = {"max_new_tokens": 4, "temperature": 0}
"""What a normal request asks for."""


@dataclass(frozen=True)
class HostileCase:
    name: str
    group: str
    make: Callable[[], bytes]
    """The raw request body."""
    expect: str = "4xx"
    param: str | None = None
    """The field a 4xx must name (``error.param``), when it is one field's fault."""


@dataclass(frozen=True)
class Reply:
    status: int
    """HTTP status; 0: the connection failed or timed out."""
    seconds: float
    body: str

    def error(self) -> dict[str, Any]:
        try:
            return json.loads(self.body).get("error") or {}
        except (ValueError, AttributeError):
            return {}


def _json(body: Any) -> Callable[[], bytes]:
    return lambda: json.dumps(body).encode()


def _raw(text: str) -> Callable[[], bytes]:
    return lambda: text.encode()


def _sampling(**params: Any) -> Callable[[], bytes]:
    return _json({"text": "Say something.", "sampling_params": {**SHORT, **params}})


WRONG_TYPES: dict[str, Any] = {
    "max_new_tokens": "8",
    "min_new_tokens": 1.5,
    "stop": 5,
    "stop_token_ids": "7",
    "stop_regex": "a+",
    "temperature": "hot",
    "top_p": [0.5],
    "top_k": 0.5,
    "min_p": "0.1",
    "frequency_penalty": {},
    "presence_penalty": True,
    "repetition_penalty": "1",
    "n": "2",
    "json_schema": 5,
    "regex": ["a"],
    "ebnf": {"root": "a"},
    "ignore_eos": "yes",
    "skip_special_tokens": 1,
    "spaces_between_special_tokens": "no",
    "no_stop_trim": 0,
    "stream_interval": "x",
    "logit_bias": [1, 2],
    "sampling_seed": "42",
}
"""One wrong-typed value for every sampling parameter the endpoint takes."""
assert set(WRONG_TYPES) == SAMPLING_FIELDS


def _wide_schema(n: int, required: bool) -> Callable[[], bytes]:
    def make() -> bytes:
        props = {f"p{i}": {} for i in range(n)}
        schema: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            schema["required"] = list(props)
        return _sampling(json_schema=json.dumps(schema))()

    return make


def _deep_schema(depth: int) -> Callable[[], bytes]:
    def make() -> bytes:
        schema: dict[str, Any] = {"type": "integer"}
        for _ in range(depth):
            schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
        return _sampling(json_schema=json.dumps(schema))()

    return make


TREE = {
    "type": "object",
    "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#"}}},
    "required": ["v"],
}
RECURSIVE_REQUIRED = {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]}


def _choices(n: int, text: str = "Pick one:") -> Callable[[], bytes]:
    """What ``sgl.select`` sends for ``n`` choices: one prompt per choice, scored."""
    return _json(
        {
            "text": [f"{text} option {i}" for i in range(n)],
            "sampling_params": {"max_new_tokens": 0, "temperature": 0},
            "return_logprob": True,
            "logprob_start_len": 0,
        }
    )


CASES: list[HostileCase] = [
    # --- bodies -----------------------------------------------------------------------
    HostileCase("not json", "body", _raw("{not json"), param="body"),
    HostileCase("empty body", "body", _raw(""), param="text"),
    HostileCase("json array body", "body", _raw("[1, 2]"), param="body"),
    HostileCase("json string body", "body", _raw('"generate"'), param="body"),
    HostileCase(
        "100k nested arrays", "body", lambda: b"[" * 100_000 + b"]" * 100_000, param="body"
    ),
    HostileCase("invalid utf-8", "body", lambda: b'{"text": "\xff\xfe"}', param="body"),
    HostileCase(
        "truncated json", "body", _raw('{"text": "hi", "sampling_params": {'), param="body"
    ),
    HostileCase("unknown field", "body", _json({"text": "hi", "bogus": 1}), param="'bogus'"),
    HostileCase(
        "unsupported field",
        "body",
        _json({"text": "hi", "image_data": "x.png"}),
        param="image_data",
    ),
    HostileCase(
        "17 MiB body", "body", lambda: b'{"text": "' + b"a" * (17 << 20) + b'"}', param="body"
    ),
    # --- wrong types, every sampling parameter and the top-level fields ------------------
    *(
        HostileCase(
            f"sampling_params.{k} = {v!r}",
            "types",
            _sampling(**{k: v}),
            param=f"sampling_params.{k}",
        )
        for k, v in WRONG_TYPES.items()
    ),
    HostileCase(
        "sampling_params a string",
        "types",
        _json({"text": "hi", "sampling_params": "x"}),
        param="sampling_params",
    ),
    HostileCase("text a number", "types", _json({"text": 5}), param="text"),
    HostileCase("text list of numbers", "types", _json({"text": [1, 2]}), param="text[0]"),
    HostileCase("empty text list", "types", _json({"text": []}), param="text"),
    HostileCase(
        "text and input_ids", "types", _json({"text": "a", "input_ids": [1]}), param="text"
    ),
    HostileCase("input_ids floats", "types", _json({"input_ids": [1.5, 2]}), param="input_ids"),
    HostileCase("input_ids negative", "types", _json({"input_ids": [-1]}), param="input_ids"),
    HostileCase(
        "input_ids past the vocabulary", "types", _json({"input_ids": [10**9]}), param="input_ids"
    ),
    HostileCase("input_ids 2**70", "types", _json({"input_ids": [2**70]}), param="input_ids"),
    HostileCase("rid a number", "types", _json({"text": "a", "rid": 5}), param="rid"),
    HostileCase("rid empty", "types", _json({"text": "a", "rid": ""}), param="rid"),
    HostileCase("rid 10k chars", "types", _json({"text": "a", "rid": "r" * 10_000}), param="rid"),
    HostileCase(
        "duplicate rids", "types", _json({"text": ["a", "b"], "rid": ["x", "x"]}), param="rid"
    ),
    HostileCase(
        "return_logprob a string",
        "types",
        _json({"text": "a", "return_logprob": "yes"}),
        param="return_logprob",
    ),
    HostileCase(
        "logprob_start_len -5",
        "types",
        _json({"text": "a", "return_logprob": True, "logprob_start_len": -5}),
        param="logprob_start_len",
    ),
    HostileCase(
        "top_logprobs_num 10**6",
        "types",
        _json({"text": "a", "return_logprob": True, "top_logprobs_num": 10**6}),
        param="top_logprobs_num",
    ),
    HostileCase("stream a number", "types", _json({"text": "a", "stream": 1}), param="stream"),
    HostileCase(
        "vllm_xargs a list", "types", _json({"text": "a", "vllm_xargs": [1]}), param="vllm_xargs"
    ),
    HostileCase(
        "vllm_xargs foreign key",
        "types",
        _json({"text": "a", "vllm_xargs": {"foo": 1}}),
        param="vllm_xargs",
    ),
    HostileCase(
        "per-prompt params count",
        "types",
        _json({"text": ["a", "b"], "sampling_params": [SHORT]}),
        param="sampling_params",
    ),
    # --- lengths and counts ---------------------------------------------------------------
    HostileCase(
        "max_new_tokens -1",
        "limits",
        _sampling(max_new_tokens=-1),
        param="sampling_params.max_new_tokens",
    ),
    HostileCase(
        "max_new_tokens 10**30",
        "limits",
        _sampling(max_new_tokens=10**30),
        param="sampling_params.max_new_tokens",
    ),
    HostileCase(
        "max_new_tokens 10**9",
        "limits",
        _sampling(max_new_tokens=10**9),
        param="sampling_params.max_new_tokens",
    ),
    HostileCase(
        "max_new_tokens true",
        "limits",
        _sampling(max_new_tokens=True),
        param="sampling_params.max_new_tokens",
    ),
    HostileCase(
        "min above max",
        "limits",
        _sampling(min_new_tokens=9),
        param="sampling_params.min_new_tokens",
    ),
    HostileCase(
        "max_new_tokens 0 (prefill only)", "limits", _sampling(max_new_tokens=0), expect="served"
    ),
    HostileCase("n 0", "limits", _sampling(n=0), param="sampling_params.n"),
    HostileCase(f"n {MAX_N + 1}", "limits", _sampling(n=MAX_N + 1), param="sampling_params.n"),
    HostileCase(f"n {MAX_N}", "limits", _sampling(n=MAX_N, max_new_tokens=1), expect="served"),
    HostileCase(
        f"{MAX_BATCH + 1} prompts", "limits", _json({"text": ["a"] * (MAX_BATCH + 1)}), param="text"
    ),
    HostileCase(
        f"32 prompts x n {MAX_N} = {32 * MAX_N} sequences",
        "limits",
        _json({"text": ["a"] * 32, "sampling_params": {**SHORT, "n": MAX_N}}),
        param="text",
    ),
    HostileCase(
        f"{MAX_BATCH} prompts",
        "limits",
        _json(
            {"text": [f"p{i}" for i in range(MAX_BATCH)], "sampling_params": {"max_new_tokens": 1}}
        ),
        expect="served",
    ),
    HostileCase(
        "1000 prompts of 12,000 characters",
        "limits",
        _json({"text": [f"{i} " + "word " * 2400 for i in range(1000)], "sampling_params": SHORT}),
        param="text",
    ),
    HostileCase(
        f"{MAX_TEXT_CHARS + 1}-character text",
        "limits",
        lambda: _json({"text": "a" * (MAX_TEXT_CHARS + 1)})(),
        param="text",
    ),
    HostileCase(
        "3M-character text", "limits", lambda: _json({"text": "ab " * 1_000_000})(), param="text"
    ),
    HostileCase(
        "33 stop strings", "limits", _sampling(stop=["x"] * 33), param="sampling_params.stop"
    ),
    HostileCase("stop of 2 KB", "limits", _sampling(stop="x" * 2048), param="sampling_params.stop"),
    HostileCase("empty stop string", "limits", _sampling(stop=""), param="sampling_params.stop"),
    HostileCase(
        "logit_bias 5000 entries",
        "limits",
        _sampling(logit_bias={str(i): 1 for i in range(5000)}),
        param="sampling_params.logit_bias",
    ),
    HostileCase(
        "logit_bias inf",
        "limits",
        _raw('{"text": "a", "sampling_params": {"logit_bias": {"5": Infinity}}}'),
        param="sampling_params.logit_bias",
    ),
    HostileCase(
        "temperature NaN",
        "limits",
        _raw('{"text": "a", "sampling_params": {"temperature": NaN}}'),
        param="sampling_params.temperature",
    ),
    HostileCase(
        "temperature 1e308",
        "limits",
        _sampling(temperature=1e308),
        param="sampling_params.temperature",
    ),
    HostileCase(
        "top_k 10**12", "limits", _sampling(top_k=10**12, temperature=1.0), expect="served"
    ),
    HostileCase(
        "sampling_seed 2**64",
        "limits",
        _sampling(sampling_seed=2**64),
        param="sampling_params.sampling_seed",
    ),
    # --- grammars -------------------------------------------------------------------------
    HostileCase(
        "regex unclosed", "grammar", _sampling(regex="(unclosed"), param="sampling_params.regex"
    ),
    HostileCase(
        "regex (a*)*b", "grammar", _sampling(regex="(a*)*b", max_new_tokens=8), expect="served"
    ),
    HostileCase(
        "regex ((a+)+)+b",
        "grammar",
        _sampling(regex="((a+)+)+b", max_new_tokens=8),
        expect="served",
    ),
    HostileCase(
        "regex (a|a)*b", "grammar", _sampling(regex="(a|a)*b", max_new_tokens=8), expect="served"
    ),
    HostileCase(
        "regex (a{1,100}){1,100}",
        "grammar",
        _sampling(regex="(a{1,100}){1,100}", max_new_tokens=8),
        expect="served",
    ),
    HostileCase(
        "regex (a{1000}){2000}",
        "grammar",
        _sampling(regex="(a{1000}){2000}"),
        param="sampling_params.regex",
    ),
    HostileCase(
        "regex 100 KB literal",
        "grammar",
        _sampling(regex="a" * 100_000),
        param="sampling_params.regex",
    ),
    HostileCase(
        "regex 100 KB alternation",
        "grammar",
        _sampling(
            regex="|".join(f"w{i}" for i in range(16_000))[:100_000].rstrip("|w"), max_new_tokens=8
        ),
        expect="served",
    ),
    HostileCase(
        "regex 300 KB", "grammar", _sampling(regex="a?" * 150_000), param="sampling_params.regex"
    ),
    HostileCase(
        "json_schema not json",
        "grammar",
        _sampling(json_schema="{not json"),
        param="sampling_params.json_schema",
    ),
    HostileCase(
        "json_schema unknown type",
        "grammar",
        _sampling(json_schema=json.dumps({"type": "nope"})),
        param="sampling_params.json_schema",
    ),
    HostileCase(
        "json_schema 100 levels deep",
        "grammar",
        _deep_schema(100),
        param="sampling_params.json_schema",
    ),
    HostileCase("json_schema 30 levels deep", "grammar", _deep_schema(30), expect="served"),
    HostileCase(
        "json_schema 10,000 optional properties",
        "grammar",
        _wide_schema(10_000, False),
        param="sampling_params.json_schema",
    ),
    HostileCase(
        "json_schema 500 optional properties",
        "grammar",
        _wide_schema(500, False),
        expect="served",
    ),
    HostileCase(
        "json_schema 10,000 required properties",
        "grammar",
        _wide_schema(10_000, True),
        param="sampling_params.json_schema",
    ),
    HostileCase(
        "json_schema recursive, required",
        "grammar",
        _sampling(json_schema=json.dumps(RECURSIVE_REQUIRED)),
        param="sampling_params.json_schema",
    ),
    HostileCase(
        "json_schema recursive tree",
        "grammar",
        _sampling(json_schema=json.dumps(TREE), max_new_tokens=16),
        expect="served",
    ),
    HostileCase(
        "json_schema minItems > maxItems",
        "grammar",
        _sampling(json_schema=json.dumps({"type": "array", "minItems": 5, "maxItems": 2})),
        param="sampling_params.json_schema",
    ),
    HostileCase(
        "ebnf root ::= root",
        "grammar",
        _sampling(ebnf="root ::= root"),
        param="sampling_params.ebnf",
    ),
    HostileCase(
        "ebnf invalid", "grammar", _sampling(ebnf="root ::= ("), param="sampling_params.ebnf"
    ),
    HostileCase(
        "two grammars",
        "grammar",
        _sampling(regex="a", ebnf='root ::= "a"'),
        param="sampling_params.ebnf",
    ),
    HostileCase(
        "radix_choice 10,000 choices",
        "grammar",
        _json(
            {
                "text": "Pick:",
                "sampling_params": SHORT,
                "vllm_xargs": {"radix_choice": [f"c{i}" for i in range(10_000)]},
            }
        ),
        expect="served",
    ),
    HostileCase(
        "radix_choice empty list",
        "grammar",
        _json({"text": "Pick:", "vllm_xargs": {"radix_choice": []}}),
        param="vllm_xargs",
    ),
    HostileCase(
        "radix_choice empty choice",
        "grammar",
        _json({"text": "Pick:", "vllm_xargs": {"radix_choice": ["a", ""]}}),
        param="vllm_xargs",
    ),
    HostileCase("select over 2,000 choices", "grammar", _choices(2000), param="text"),
    HostileCase("select over 300 choices", "grammar", _choices(300), expect="served"),
    HostileCase(
        "select over one empty choice",
        "grammar",
        _json(
            {
                "text": [""],
                "sampling_params": {"max_new_tokens": 0},
                "return_logprob": True,
                "logprob_start_len": 0,
            }
        ),
        expect="served",
    ),
    # --- text -----------------------------------------------------------------------------
    HostileCase("NUL bytes", "text", _sampling(stop="\x00"), expect="served"),
    HostileCase(
        "NUL bytes in the prompt",
        "text",
        _json({"text": "a\x00b\x00", "sampling_params": SHORT}),
        expect="served",
    ),
    HostileCase(
        "emoji, RTL and combining marks",
        "text",
        _json({"text": "héllo 👋🏽 مرحبا e\u0301\u200d", "sampling_params": SHORT}),
        expect="served",
    ),
    HostileCase("lone surrogate in text", "text", _raw('{"text": "a\\ud800b"}'), param="text"),
    HostileCase(
        "lone surrogate in stop",
        "text",
        _raw('{"text": "a", "sampling_params": {"stop": "\\udfff"}}'),
        param="sampling_params.stop",
    ),
    HostileCase(
        "lone surrogate in regex",
        "text",
        _raw('{"text": "a", "sampling_params": {"regex": "\\ud800"}}'),
        param="sampling_params.regex",
    ),
    HostileCase(
        "lone surrogate in rid", "text", _raw('{"text": "a", "rid": "\\ud800"}'), param="rid"
    ),
    HostileCase(
        "lone surrogate in a batch", "text", _raw('{"text": ["ok", "\\udc00"]}'), param="text[1]"
    ),
    HostileCase(
        "lone surrogate in xargs",
        "text",
        _raw('{"text": "a", "vllm_xargs": {"radix_agent": "\\ud800"}}'),
        param="vllm_xargs.radix_agent",
    ),
]


def post(base: str, body: bytes, timeout: float = 120, path: str = "/generate") -> Reply:
    """POST ``body`` on a fresh connection; status 0 if it failed or timed out."""
    url = urllib.parse.urlsplit(base)
    start = time.monotonic()
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        text = reply.read().decode(errors="replace")
        return Reply(reply.status, time.monotonic() - start, text)
    except (OSError, http.client.HTTPException) as exc:
        return Reply(0, time.monotonic() - start, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def normal(base: str, timeout: float = 120) -> Reply:
    """A well-behaved client's request."""
    return post(
        base, json.dumps({"text": "Hello, my name is", "sampling_params": SHORT}).encode(), timeout
    )


def check(case: HostileCase, reply: Reply) -> str:
    """What is wrong with ``reply`` to ``case`` ('' if nothing)."""
    if case.expect == "served":
        return (
            "" if reply.status == 200 else f"expected 200, got {reply.status}: {reply.body[:300]}"
        )
    if not 400 <= reply.status < 500:
        return f"expected a 4xx, got {reply.status}: {reply.body[:300]}"
    error = reply.error()
    if case.param is not None and error.get("param") != case.param:
        return f"expected error.param {case.param!r}: {reply.body[:300]}"
    name = (case.param or "").split(".")[-1].strip("'").split("[")[0]
    if name and name not in error.get("message", ""):
        return f"the message does not name {name!r}: {reply.body[:300]}"
    return ""


def disconnect_streams(base: str, count: int, *, read_first: bool = True) -> int:
    """Open ``count`` streaming requests at once and hang up each after its first chunk
    (or, ``read_first=False``, right after sending); returns how many were accepted."""
    url = urllib.parse.urlsplit(base)
    body = json.dumps(
        {
            "text": "Count to a thousand: 1, 2,",
            "sampling_params": {"max_new_tokens": 500, "ignore_eos": True},
            "stream": read_first,
        }
    ).encode()
    request = (
        f"POST /generate HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    socks = []
    for _ in range(count):
        s = socket.create_connection((url.hostname, url.port), timeout=60)
        s.sendall(request)
        socks.append(s)
    accepted = 0
    for s in socks:
        try:
            if read_first:
                accepted += b" 200 " in s.recv(4096)
            else:
                accepted += 1
        finally:
            s.close()
    return accepted


def in_flight(base: str) -> dict[str, float]:
    """Requests the engine and the endpoint still hold (0 everywhere once all ended)."""
    metrics = metric_totals(base, ("vllm:num_requests_running", "vllm:num_requests_waiting"))
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(base).netloc, timeout=30)
    conn.request("GET", "/server_info")
    info = json.loads(conn.getresponse().read())
    conn.close()
    return {**metrics, "sglang_requests_in_flight": info["sglang_requests_in_flight"]}


def wait_drained(
    base: str, timeout_s: float = 60, settle: int = 3
) -> tuple[float, dict[str, float]]:
    """Seconds until nothing is in flight for ``settle`` readings a second apart (the
    engine's gauges lag its steps), ``timeout_s`` if never; and the last reading."""
    start = time.monotonic()
    quiet = 0
    while True:
        now = in_flight(base)
        quiet = 0 if any(now.values()) else quiet + 1
        if quiet >= settle or time.monotonic() - start > timeout_s:
            return time.monotonic() - start, now
        time.sleep(1.0)


class Bystander:
    """A well-behaved client sending one short request after another, timing each: what
    a hostile client must not stall."""

    def __init__(self, base: str, timeout: float = 300) -> None:
        self.base = base
        self.timeout = timeout
        self.samples: list[tuple[float, float, int]] = []  # start, seconds, status
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Bystander:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            reply = normal(self.base, timeout=self.timeout)
            self.samples.append((start, reply.seconds, reply.status))
            time.sleep(0.05)

    def worst_between(self, start: float, end: float) -> tuple[float, int]:
        """Longest latency of requests overlapping [start, end], and how many failed."""
        hits = [s for s in self.samples if s[0] <= end and s[0] + s[1] >= start]
        worst = max((s[1] for s in hits), default=0.0)
        return worst, sum(1 for s in hits if s[2] != 200)
