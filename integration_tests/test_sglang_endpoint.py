"""Real SGLang programs (the `sglang` frontend, installed with --no-deps) against a real vLLM
server with radix-plugin's scheduler and its SGLang endpoint (`radix_sglang`), on the
trained `real` model: few-shot gen, select, regex/JSON gen, gen_int/gen_string, multi-turn
chat, nested fork/join, run_batch, streaming, flush_cache, abort; plus the raw API's shapes
and hostile requests (a named 400, then the server keeps serving).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sglang as sgl
from transformers import AutoTokenizer

from radix_plugin.testing.models import get_model_path
from radix_plugin.testing.server import (
    free_port,
    running_server,
    server_command,
    sglang_endpoint_env,
)

STARTUP_TIMEOUT_S = 300
BLOCK = 32
# A shared prefix several blocks long, so forks and batch items can hit the cache.
CONTEXT = (
    "The radix cache keeps every prompt prefix once and shares it between requests. "
    "Programs that fork, select or run in batches send many prompts with a common start. "
    "A scheduler that knows the cache runs requests with long cached prefixes first. "
) * 3
FEW_SHOT = (
    "Q: What is the capital of France?\nA: Paris\n\n"
    "Q: What is the capital of Germany?\nA: Berlin\n\n"
    "Q: What is the capital of Spain?\nA: Madrid\n\n"
    "Q: What is the capital of Japan?\nA: Tokyo\n\n"
)


@pytest.fixture(scope="module")
def model_path() -> Path:
    return get_model_path("real")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[str]:
    port = free_port()
    flags = ["--max-num-seqs", "8", "--scheduler-cls", "radix_plugin.RadixScheduler"]
    cmd = server_command(model_path, port, flags, kv_blocks=256, max_model_len=2048)
    log = tmp_path_factory.mktemp("sglang") / "server.log"
    with open(log, "w") as fh:
        try:
            with running_server(cmd, port, fh, STARTUP_TIMEOUT_S, sglang_endpoint_env()) as base:
                yield base
        except RuntimeError as exc:
            pytest.fail(f"{exc}\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def backend(server: str) -> sgl.RuntimeEndpoint:
    info = requests.get(server + "/get_model_info", timeout=30).json()
    return sgl.RuntimeEndpoint(server, chat_template_name=info["chat_template_name"])


@pytest.fixture(scope="module")
def tokenizer(model_path: Path) -> AutoTokenizer:
    return AutoTokenizer.from_pretrained(model_path)


def _generate(server: str, body: dict, status: int = 200) -> dict | list:
    r = requests.post(server + "/generate", json=body, timeout=120)
    assert r.status_code == status, r.text
    return r.json()


# --- SGLang programs through sgl.RuntimeEndpoint ----------------------------------------


@sgl.function
def few_shot_qa(s, question):
    s += FEW_SHOT + "Q: " + question + "\nA:"
    s += sgl.gen("answer", max_tokens=8, stop="\n", temperature=0)


def test_few_shot_gen(backend: sgl.RuntimeEndpoint) -> None:
    state = few_shot_qa.run(question="What is the capital of Italy?", backend=backend)
    answer = state["answer"]
    assert answer.strip() and "\n" not in answer
    meta = state.get_meta_info("answer")
    assert meta["prompt_tokens"] > 0 and 0 < meta["completion_tokens"] <= 8
    assert meta["finish_reason"]["type"] in ("stop", "length")


@sgl.function
def capital_choice(s):
    s += FEW_SHOT + "Q: What is the capital of Italy?\nA:"
    s += sgl.select("city", choices=[" Rome", " Banana", " Keyboard"])


def test_select_picks_the_likely_choice_with_sglang_scoring(
    backend: sgl.RuntimeEndpoint, server: str, tokenizer: AutoTokenizer
) -> None:
    state = capital_choice.run(backend=backend)
    assert state["city"] == " Rome"
    meta = state.get_meta_info("city")
    scores = meta["normalized_prompt_logprobs"]
    # SGLang's token-healing scoring, recomputed from vLLM's own prompt logprobs
    # (/v1/completions, uncached): mean logprob of the prompt+choice tokens from position
    # len(prefix) - 1 on (the frontend asks from len(prefix) - 2; that first row is None).
    prefix = FEW_SHOT + "Q: What is the capital of Italy?\nA:"
    start = len(tokenizer(prefix)["input_ids"]) - 2
    model = requests.get(server + "/v1/models", timeout=30).json()["data"][0]["id"]
    reference = []
    for choice in (" Rome", " Banana", " Keyboard"):
        ids = tokenizer(prefix + choice)["input_ids"]
        body = {"model": model, "prompt": ids, "max_tokens": 1, "prompt_logprobs": 0}
        out = requests.post(server + "/v1/completions", json=body, timeout=60).json()
        plp = out["choices"][0]["prompt_logprobs"]
        values = [plp[p][str(ids[p])]["logprob"] for p in range(start + 1, len(ids))]
        reference.append(sum(values) / len(values))
    assert max(range(3), key=reference.__getitem__) == 0
    # Same model, same tokens; only batch composition differs (bf16): far below the gaps.
    assert scores == pytest.approx(reference, abs=0.1)
    assert scores[0] - max(scores[1:]) > 0.5


REGEX_IP = r"((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
        "city": {"type": "string", "maxLength": 20},
    },
    "required": ["name", "age", "city"],
}


@sgl.function
def structured(s):
    s += "The DNS server of the office has the IP address "
    s += sgl.gen("ip", max_tokens=24, regex=REGEX_IP, temperature=0)
    s += "\nA person described in JSON: "
    s += sgl.gen("person", max_tokens=64, json_schema=json.dumps(SCHEMA), temperature=0)
    s += "\nHow many legs does a spider have? "
    s += sgl.gen_int("legs", max_tokens=6)
    s += "\nA one-word color in quotes: "
    s += sgl.gen_string("color", max_tokens=12)


def test_regex_json_int_and_string_gen_satisfy_their_constraints(
    backend: sgl.RuntimeEndpoint,
) -> None:
    state = structured.run(backend=backend)
    assert re.fullmatch(REGEX_IP, state["ip"]), state["ip"]
    person = json.loads(state["person"])
    assert set(person) == {"name", "age", "city"}
    assert isinstance(person["age"], int) and isinstance(person["name"], str)
    assert re.fullmatch(r"[-+]?[0-9]+", state["legs"].strip()), state["legs"]
    assert re.fullmatch(r"\"[\w\d\s]*\"", state["color"]), state["color"]


@sgl.function
def two_turns(s):
    s += sgl.system("You are a helpful assistant. Answer briefly.")
    s += sgl.user("What is the capital of France?")
    s += sgl.assistant(sgl.gen("first", max_tokens=24, temperature=0))
    s += sgl.user("And of Germany?")
    s += sgl.assistant(sgl.gen("second", max_tokens=24, temperature=0))


def test_multi_turn_chat_uses_the_models_own_template(
    backend: sgl.RuntimeEndpoint, server: str, tokenizer: AutoTokenizer
) -> None:
    info = requests.get(server + "/get_model_info", timeout=30).json()
    assert info["chat_template_name"] == "chatml"  # SmolLM2's template is ChatML
    state = two_turns.run(backend=backend)
    messages = state.messages()
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    # The program's prompt is exactly what the model's own chat template renders.
    assert state.text() == tokenizer.apply_chat_template(messages, tokenize=False)
    for name in ("first", "second"):
        assert state[name].strip() and "<|im_end|>" not in state[name]
    assert "Paris" in state["first"]


@sgl.function
def tree_of_thought(s, topic):
    s += CONTEXT + "Topic: " + topic + "\n"
    branches = s.fork(2)
    metas = []
    for i, branch in enumerate(branches):
        branch += f"Idea {i + 1}:" + sgl.gen("idea", max_tokens=6, temperature=0)
        metas.append(branch.get_meta_info("idea"))
        leaves = branch.fork(2)
        for j, leaf in enumerate(leaves):
            leaf += f"\nDetail {j + 1}:" + sgl.gen("detail", max_tokens=6, temperature=0)
        metas.extend(leaf.get_meta_info("detail") for leaf in leaves)
        leaves.join()
        branch += "\nSummary:" + sgl.gen("summary", max_tokens=6, temperature=0)
    branches.join()
    s += "Verdict:" + sgl.gen("verdict", max_tokens=6, temperature=0)
    s["metas"] = metas


def test_nested_fork_join_branches_hit_the_cache(backend: sgl.RuntimeEndpoint) -> None:
    backend.flush_cache()
    state = tree_of_thought.run(topic="caching", backend=backend)
    assert state["verdict"] is not None and state.text().startswith(CONTEXT)
    metas = state["metas"]
    assert len(metas) == 6  # 2 ideas + 4 details
    # SGLang's frontend caches the shared text (max_new_tokens=0) before a fork only if its
    # executor thread has already appended it: `fork` reads `text_` before it syncs, so the
    # top-level fork right after `s += CONTEXT` sends no warm-up (seen in the request log) and
    # the first branch computes the prefix itself, as it would on SGLang's own server. Every
    # later branch and leaf finds at least the full blocks of the shared text cached.
    for meta in metas[1:]:
        assert meta["cached_tokens"] >= BLOCK, meta
        assert meta["cached_tokens"] >= (meta["prompt_tokens"] - 40) // BLOCK * BLOCK - BLOCK


def test_fork_branches_report_cached_tokens(backend: sgl.RuntimeEndpoint) -> None:
    @sgl.function
    def fork_two(s):
        s += CONTEXT + "Two short answers follow.\n"
        forks = s.fork(2)
        for i, f in enumerate(forks):
            f += f"Answer {i}:" + sgl.gen("a", max_tokens=4, temperature=0)
        forks.join()
        s += "Done."
        s["metas"] = [f.get_meta_info("a") for f in forks]

    backend.flush_cache()
    state = fork_two.run(backend=backend)
    # No warm-up precedes this top-level fork (see above) and both branches arrive together:
    # the radix scheduler holds the second back while the first prefills the shared text
    # (in-batch sharing), so the second hits it.
    cached = sorted(meta["cached_tokens"] for meta in state["metas"])
    assert cached[-1] >= BLOCK, state["metas"]


def test_run_batch_shares_the_few_shot_prefix(backend: sgl.RuntimeEndpoint) -> None:
    questions = [f"What is the capital of {c}?" for c in ("Italy", "Egypt", "Peru", "Chile")]
    backend.flush_cache()
    states = few_shot_qa.run_batch(
        [{"question": q} for q in questions], backend=backend, num_threads=4
    )
    assert all(st["answer"].strip() for st in states)
    cached = [st.get_meta_info("answer")["cached_tokens"] for st in states]
    # run_batch caches the common prefix first (max_new_tokens=0), so every item hits it.
    assert all(c >= BLOCK for c in cached), cached


def test_streaming_yields_cumulative_chunks(backend: sgl.RuntimeEndpoint) -> None:
    state = few_shot_qa.run(question="Name three colors.", backend=backend, stream=True)
    pieces = list(state.text_iter("answer"))
    assert "".join(pieces) == state["answer"]
    assert len([p for p in pieces if p]) >= 2


# --- The raw API ---------------------------------------------------------------------------


def test_prefill_only_request_caches_the_prefix_and_decodes_nothing(server: str) -> None:
    requests.post(server + "/flush_cache", timeout=30).raise_for_status()
    prompt = CONTEXT + "Prefill only."
    first = _generate(server, {"text": prompt, "sampling_params": {"max_new_tokens": 0}})
    assert first["text"] == "" and first["output_ids"] == []
    meta = first["meta_info"]
    assert meta["completion_tokens"] == 0 and meta["cached_tokens"] == 0
    assert meta["finish_reason"] == {"type": "length", "length": 0}
    time.sleep(1)  # pin gauges arrive with the step's stats
    assert _metric(server, "radix_plugin:pinned_prefixes") >= 1  # the short prefill pin
    second = _generate(
        server, {"text": prompt + " More.", "sampling_params": {"max_new_tokens": 2}}
    )
    assert second["meta_info"]["cached_tokens"] >= meta["prompt_tokens"] // BLOCK * BLOCK > 0


def _metric(server: str, name: str) -> float:
    text = requests.get(server + "/metrics", timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def test_prefill_only_request_is_one_engine_step(server: str) -> None:
    """max_new_tokens 0 runs as max_tokens 1 with the token dropped: the token is sampled
    from the prefill step's own logits, so the request takes exactly one engine step."""
    steps = "vllm:iteration_tokens_total_count"
    before_steps, before_gen = (
        _metric(server, steps),
        _metric(server, "vllm:generation_tokens_total"),
    )
    _generate(server, {"text": CONTEXT + "One step.", "sampling_params": {"max_new_tokens": 0}})
    time.sleep(1)  # stats reach the API server with the step's outputs
    assert _metric(server, steps) - before_steps == 1
    assert _metric(server, "vllm:generation_tokens_total") - before_gen == 1


def test_logprobs_in_sglang_shape(server: str, tokenizer: AutoTokenizer) -> None:
    text = FEW_SHOT + "Q: What is the capital of Italy?\nA:"
    ids = tokenizer(text)["input_ids"]
    body = {
        "text": text,
        "sampling_params": {"max_new_tokens": 3, "temperature": 0},
        "return_logprob": True,
        "logprob_start_len": len(ids) - 4,
        "top_logprobs_num": 2,
        "return_text_in_logprobs": True,
    }
    out = _generate(server, body)
    meta = out["meta_info"]
    rows = meta["input_token_logprobs"]
    assert [r[1] for r in rows] == ids[-4:]
    assert rows[0][0] is None and all(isinstance(r[0], float) and r[0] <= 0 for r in rows[1:])
    assert [r[2] for r in rows] == [tokenizer.decode([i]) for i in ids[-4:]]
    out_rows = meta["output_token_logprobs"]
    assert [r[1] for r in out_rows] == out["output_ids"] and len(out_rows) == 3
    assert all(len(top) == 2 for top in meta["output_top_logprobs"])
    # Greedy: each output token is its position's top-1.
    assert [top[0][1] for top in meta["output_top_logprobs"]] == out["output_ids"]
    assert meta["input_top_logprobs"][0] is None and len(meta["input_top_logprobs"]) == 4


def test_prompt_logprob_rows_do_not_depend_on_the_start(server: str) -> None:
    text = CONTEXT + "Q: Is the cache shared?\nA: yes"
    body = {
        "text": text,
        "sampling_params": {"max_new_tokens": 0},
        "return_logprob": True,
        "logprob_start_len": 0,
    }
    full = _generate(server, body)["meta_info"]
    start = full["prompt_tokens"] - 3
    tail = _generate(server, dict(body, logprob_start_len=start))["meta_info"]
    rows = full["input_token_logprobs"][start:]
    assert len(full["input_token_logprobs"]) == full["prompt_tokens"]
    assert [r[1] for r in tail["input_token_logprobs"]] == [r[1] for r in rows]
    assert tail["input_token_logprobs"][0][0] is None  # SGLang: the start row has none
    for got, want in zip(tail["input_token_logprobs"][1:], rows[1:], strict=True):
        assert got[0] == pytest.approx(want[0], abs=0.1)


@pytest.mark.parametrize(
    "extra",
    [
        {"sampling_params": {"max_new_tokens": 12, "temperature": 0}},
        {
            "sampling_params": {
                "max_new_tokens": 24,
                "temperature": 0,
                "regex": r"\{\"n\": [0-9]+\}",
            }
        },
        {
            "sampling_params": {"max_new_tokens": 5, "temperature": 0},
            "return_logprob": True,
            "logprob_start_len": 3,
            "top_logprobs_num": 2,
            "return_text_in_logprobs": True,
        },
    ],
)
def test_non_streaming_answer_is_the_streams_last_event(server: str, extra: dict) -> None:
    """Non-streaming requests ask vLLM for the final output only: the answer must be what
    the (cumulative) stream ends with, field for field, latency, cache hits (the second
    request finds the first one's prompt cached) and the per-request id aside."""
    body = {"text": FEW_SHOT + "Q: What is the capital of Italy?\nA:", **extra}
    whole = _generate(server, body)
    with requests.post(
        server + "/generate", json={**body, "stream": True}, stream=True, timeout=120
    ) as r:
        events = [json.loads(ln[5:]) for ln in r.iter_lines() if ln and ln != b"data: [DONE]"]
    last = events[-1]
    for answer in (whole, last):
        answer["meta_info"].pop("e2e_latency")
        answer["meta_info"].pop("cached_tokens")
        assert answer["meta_info"].pop("id")
    assert whole == last
    assert whole["meta_info"]["completion_tokens"] == len(whole["output_ids"]) > 0


def test_batched_input_ids_and_n(server: str, tokenizer: AutoTokenizer) -> None:
    ids = tokenizer("Hello, my name is")["input_ids"]
    out = _generate(
        server, {"input_ids": [ids, ids[:-1]], "sampling_params": {"max_new_tokens": 2}}
    )
    assert isinstance(out, list) and len(out) == 2
    assert [o["meta_info"]["prompt_tokens"] for o in out] == [len(ids), len(ids) - 1]
    many = _generate(
        server, {"text": "Once upon a time", "sampling_params": {"max_new_tokens": 2, "n": 3}}
    )
    assert len(many) == 3 and len({o["meta_info"]["id"] for o in many}) == 3


def test_batched_stream_ends_with_done(server: str) -> None:
    body = {
        "text": ["One, two,", "Red, green,"],
        "sampling_params": {"max_new_tokens": 4, "temperature": 0},
        "stream": True,
    }
    with requests.post(server + "/generate", json=body, stream=True, timeout=120) as r:
        assert r.status_code == 200
        lines = [ln.decode() for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(ln[5:]) for ln in lines[:-1]]
    last = {}
    for ev in events:
        assert ev["text"].startswith(last.get(ev["index"], ""))  # cumulative
        last[ev["index"]] = ev["text"]
    assert set(last) == {0, 1}


def test_abort_request_stops_a_running_generation(server: str) -> None:
    body = {
        "text": "Count forever: 1, 2, 3,",
        "rid": "long-one",
        "sampling_params": {"max_new_tokens": 1500, "ignore_eos": True},
    }
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(_generate(server, body)))
    worker.start()
    time.sleep(3)
    requests.post(server + "/abort_request", json={"rid": "long-one"}, timeout=30)
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert result["meta_info"]["finish_reason"]["type"] == "abort"
    assert result["meta_info"]["completion_tokens"] < 1500


def test_info_routes(server: str) -> None:
    info = requests.get(server + "/get_model_info", timeout=30).json()
    assert info["is_generation"] is True and info["model_path"]
    assert requests.get(server + "/model_info", timeout=30).json() == info
    server_info = requests.get(server + "/server_info", timeout=30).json()
    assert server_info["radix_scheduler"] is True and server_info["context_length"] == 2048
    assert requests.get(server + "/health_generate", timeout=60).status_code == 200


# --- Hostile requests --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"text": "hi", "sampling_params": {"max_new_tokens": 2}, "bogus": 1}, "'bogus'"),
        ({"text": "hi", "sampling_params": {"regex": "(unclosed"}}, "sampling_params.regex"),
        (
            {"text": "hi", "sampling_params": {"json_schema": "{not json"}},
            "sampling_params.json_schema",
        ),
        (
            {"text": "hi", "sampling_params": {"json_schema": json.dumps({"type": "nope"})}},
            "sampling_params.json_schema",
        ),
        ({"text": "hi", "sampling_params": {"ebnf": "root ::= root"}}, "sampling_params.ebnf"),
        ({"text": "word " * 3000}, "text"),
        (
            {"text": "hi", "sampling_params": {"max_new_tokens": 4000}},
            "sampling_params.max_new_tokens",
        ),
        ({"text": "hi", "sampling_params": {"temperature": -0.5}}, "sampling_params.temperature"),
        ({"text": "hi", "sampling_params": {"top_p": 1.5}}, "sampling_params.top_p"),
        ({"input_ids": [10**9]}, "input_ids"),
        ({"text": "hi", "top_logprobs_num": 1000, "return_logprob": True}, "top_logprobs_num"),
        ({"text": "hi", "vllm_xargs": {"radix_pin": "maybe"}}, "vllm_xargs"),
    ],
)
def test_bad_requests_get_a_400_naming_the_field_and_the_server_keeps_serving(
    server: str, body: dict, param: str
) -> None:
    out = _generate(server, body, status=400)
    assert out["error"]["param"] == param, out
    assert param.split(".")[-1].strip("'") in out["error"]["message"]
    ok = _generate(server, {"text": "Hello", "sampling_params": {"max_new_tokens": 2}})
    assert ok["meta_info"]["completion_tokens"] >= 1


def test_malformed_json_body_is_a_400(server: str) -> None:
    r = requests.post(server + "/generate", data=b"{not json", timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
