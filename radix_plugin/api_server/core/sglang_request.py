"""SGLang's native ``POST /generate`` body, parsed and bounded without vLLM.

SGLang's frontend (``sgl.RuntimeEndpoint``) and SGLang clients send this shape: ``text`` or
``input_ids`` (one prompt or a batch), ``sampling_params`` (a dict, or one per prompt), and
top-level logprob options that may also be per prompt. This module turns it into one
:class:`SglItem` per sequence to generate, with SGLang's defaults filled in and every value
checked, so a bad request fails with :class:`SglRequestError` naming the field (HTTP 400)
before anything is tokenized. Mapping to vLLM's ``SamplingParams`` happens in
``radix_plugin.api_server.sglang_sampling``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Fields of SGLang 0.5's GenerateReqInput this endpoint serves. Multimodal, LoRA, session and
# disaggregation fields are refused by name (see UNSUPPORTED_FIELDS) rather than ignored.
TOP_LEVEL_FIELDS = frozenset(
    {
        "rid",
        "text",
        "input_ids",
        "sampling_params",
        "return_logprob",
        "logprob_start_len",
        "top_logprobs_num",
        "return_text_in_logprobs",
        "stream",
        "log_metrics",
        "vllm_xargs",
    }
)
# Accepted when null/false/empty (clients such as sgl.Runtime.generate send them that way).
UNSUPPORTED_FIELDS = frozenset(
    {
        "image_data",
        "video_data",
        "audio_data",
        "input_embeds",
        "lora_path",
        "session_id",
        "session_params",
        "token_ids_logprob",
        "return_hidden_states",
        "custom_logit_processor",
        "modalities",
    }
)
SAMPLING_FIELDS = frozenset(
    {
        "max_new_tokens",
        "min_new_tokens",
        "stop",
        "stop_token_ids",
        "stop_regex",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "frequency_penalty",
        "presence_penalty",
        "repetition_penalty",
        "n",
        "json_schema",
        "regex",
        "ebnf",
        "ignore_eos",
        "skip_special_tokens",
        "spaces_between_special_tokens",
        "no_stop_trim",
        "stream_interval",
        "logit_bias",
        "sampling_seed",
    }
)
UNSUPPORTED_SAMPLING_FIELDS = frozenset({"structural_tag", "custom_params", "watermark"})

MAX_BATCH = 1024
"""Most prompts (times ``n``) one request may carry."""
MAX_N = 64
MAX_STOP_COUNT = 32
"""SGLang's own limit on stop strings."""
MAX_STOP_CHARS = 1024
MAX_RID_CHARS = 256
MAX_TEXT_CHARS = 4 * 1024 * 1024
"""Raw prompt characters parsed at all; the token limit (the model's context) comes after."""
_SAMPLING_EPS = 1e-6


class SglRequestError(ValueError):
    """A malformed SGLang request; ``field`` names the offending field (HTTP 400)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class SglSampling:
    """One sequence's sampling parameters, with SGLang's defaults."""

    max_new_tokens: int | None = 128
    min_new_tokens: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    json_schema: str | None = None
    regex: str | None = None
    ebnf: str | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    no_stop_trim: bool = False
    logit_bias: tuple[tuple[int, float], ...] = ()
    sampling_seed: int | None = None

    @property
    def greedy(self) -> bool:
        """SGLang treats a temperature below 1e-6 as greedy (top_k = 1)."""
        return self.temperature < _SAMPLING_EPS or self.top_k == 1


@dataclass(frozen=True)
class SglItem:
    """One sequence to generate (a prompt of a batch, or one of its ``n`` samples)."""

    rid: str
    text: str | None
    input_ids: tuple[int, ...] | None
    sampling: SglSampling
    return_logprob: bool = False
    logprob_start_len: int = -1
    top_logprobs_num: int = 0
    return_text_in_logprobs: bool = False
    xargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SglGenerate:
    items: list[SglItem]
    batched: bool
    """The response is a list (a batch of prompts, or ``n`` > 1)."""
    stream: bool


def parse_generate(
    body: Any, *, vocab_size: int | None = None, max_top_logprobs: int = 20
) -> SglGenerate:
    """Validate an SGLang ``/generate`` body and expand it into sequences."""
    if not isinstance(body, Mapping):
        raise SglRequestError("body", "must be a JSON object")
    _refuse_lone_surrogates(body)
    _refuse_unknown(body)
    prompts, batched = _prompts(body)
    count = len(prompts)
    sampling = _per_prompt(body.get("sampling_params"), count, "sampling_params", dict)
    params = [
        _sampling(s, f"sampling_params{_index(i, batched)}", vocab_size)
        for i, s in enumerate(sampling)
    ]
    ns = [
        _n((s or {}).get("n"), f"sampling_params{_index(i, batched)}.n")
        for i, s in enumerate(sampling)
    ]
    if sum(ns) > MAX_BATCH:
        raise SglRequestError("text", f"at most {MAX_BATCH} sequences per request, got {sum(ns)}")
    rids = _rids(body.get("rid"), count, batched)
    return_logprob = _per_prompt(body.get("return_logprob"), count, "return_logprob", bool)
    start_len = _per_prompt(body.get("logprob_start_len"), count, "logprob_start_len", int)
    top_num = _per_prompt(body.get("top_logprobs_num"), count, "top_logprobs_num", int)
    text_in_logprobs = _flag(body.get("return_text_in_logprobs"), "return_text_in_logprobs")
    stream = _flag(body.get("stream"), "stream")
    _flag(body.get("log_metrics", True), "log_metrics")
    xargs = body.get("vllm_xargs") or {}
    if not isinstance(xargs, Mapping):
        raise SglRequestError("vllm_xargs", "must be an object of radix_* hints")
    items: list[SglItem] = []
    for i, prompt in enumerate(prompts):
        start = -1 if start_len[i] is None else start_len[i]
        if start < -1:
            raise SglRequestError("logprob_start_len", f"must be -1 or at least 0, got {start}")
        top = 0 if top_num[i] is None else top_num[i]
        if not 0 <= top <= max_top_logprobs:
            raise SglRequestError(
                "top_logprobs_num", f"must be in [0, {max_top_logprobs}], got {top}"
            )
        text, ids = (prompt, None) if isinstance(prompt, str) else (None, tuple(prompt))
        for j in range(ns[i]):
            rid = rids[i] if ns[i] == 1 else f"{rids[i]}_{j}"
            items.append(
                SglItem(
                    rid=rid,
                    text=text,
                    input_ids=ids,
                    sampling=params[i],
                    return_logprob=bool(return_logprob[i]),
                    logprob_start_len=start,
                    top_logprobs_num=top,
                    return_text_in_logprobs=text_in_logprobs,
                    xargs=dict(xargs),
                )
            )
    if len({item.rid for item in items}) != len(items):
        raise SglRequestError("rid", "request ids must be unique within a request")
    return SglGenerate(items=items, batched=batched or sum(ns) > count, stream=stream)


def _refuse_lone_surrogates(body: Mapping[str, Any]) -> None:
    """JSON's ``\\ud800`` escapes decode to strings that are not Unicode text (no UTF-8
    encoding): the tokenizer, the grammar compiler and vLLM's msgpack would each fail on
    them with an error naming no field. Name the first one (keys included)."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            _utf8(value, path)
        elif isinstance(value, Mapping):
            for key, item in reversed(list(value.items())):
                key = str(key)
                _utf8(key, f"{path} key" if path else "body key")
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value))))


def _utf8(text: str, path: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        where = path.encode(errors="backslashreplace").decode()[:120]
        raise SglRequestError(
            where, f"has a lone UTF-16 surrogate at character {exc.start}"
        ) from None


def _refuse_unknown(body: Mapping[str, Any]) -> None:
    for key, value in body.items():
        if key in TOP_LEVEL_FIELDS:
            continue
        if key in UNSUPPORTED_FIELDS:
            if value in (None, False, [], {}, ""):
                continue
            raise SglRequestError(key, "is not supported by this server (vLLM + radix-plugin)")
        raise SglRequestError(_short(key), "unknown field")


def _prompts(body: Mapping[str, Any]) -> tuple[list[str | list[int]], bool]:
    text, ids = body.get("text"), body.get("input_ids")
    if (text is None) == (ids is None):
        raise SglRequestError("text", "give exactly one of text and input_ids")
    if text is not None:
        if isinstance(text, str):
            return [_text(text, "text")], False
        if isinstance(text, list) and text:
            if len(text) > MAX_BATCH:
                raise SglRequestError("text", f"at most {MAX_BATCH} prompts, got {len(text)}")
            return [_text(t, f"text[{i}]") for i, t in enumerate(text)], True
        raise SglRequestError("text", "must be a string or a non-empty list of strings")
    if isinstance(ids, list) and ids and all(_is_int(t) for t in ids):
        return [_ids(ids, "input_ids")], False
    if isinstance(ids, list) and ids and all(isinstance(p, list) for p in ids):
        if len(ids) > MAX_BATCH:
            raise SglRequestError("input_ids", f"at most {MAX_BATCH} prompts, got {len(ids)}")
        return [_ids(p, f"input_ids[{i}]") for i, p in enumerate(ids)], True
    raise SglRequestError(
        "input_ids", "must be a non-empty list of token ids or a list of such lists"
    )


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise SglRequestError(name, f"must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise SglRequestError(name, f"is {len(value)} characters; at most {MAX_TEXT_CHARS}")
    return value


def _ids(value: list[Any], name: str) -> list[int]:
    if not value or not all(_is_int(t) and t >= 0 for t in value):
        raise SglRequestError(name, "must be a non-empty list of non-negative token ids")
    if len(value) > MAX_TEXT_CHARS:
        raise SglRequestError(name, f"has {len(value)} tokens; at most {MAX_TEXT_CHARS}")
    return value


def _per_prompt(value: Any, count: int, name: str, kind: type) -> list[Any]:
    """A scalar (or dict) for every prompt, or one value per prompt."""
    if isinstance(value, list) and kind is not list:
        if len(value) != count:
            raise SglRequestError(name, f"has {len(value)} entries for {count} prompts")
        return [_typed(v, f"{name}[{i}]", kind) for i, v in enumerate(value)]
    return [_typed(value, name, kind)] * count


def _typed(value: Any, name: str, kind: type) -> Any:
    if value is None:
        return None
    if kind is bool:
        return _flag(value, name)
    if kind is int:
        if not _is_int(value):
            raise SglRequestError(name, f"must be an integer, got {_short(value)}")
        return value
    if not isinstance(value, kind):
        raise SglRequestError(name, f"must be an object, got {type(value).__name__}")
    return value


def _sampling(raw: Mapping[str, Any] | None, name: str, vocab_size: int | None) -> SglSampling:
    raw = raw or {}
    for key, value in raw.items():
        if key in SAMPLING_FIELDS:
            continue
        if key in UNSUPPORTED_SAMPLING_FIELDS and value in (None, {}, ""):
            continue
        if key in UNSUPPORTED_SAMPLING_FIELDS:
            raise SglRequestError(f"{name}.{key}", "is not supported by this server")
        raise SglRequestError(f"{name}.{_short(key)}", "unknown sampling parameter")
    d = SglSampling()
    get = _Getter(raw, name)
    max_new = get.integer("max_new_tokens", d.max_new_tokens, low=0, optional=True)
    min_new = get.integer("min_new_tokens", d.min_new_tokens, low=0)
    if max_new is not None and min_new > max_new:
        raise SglRequestError(
            f"{name}.min_new_tokens", f"must be in [0, max_new_tokens={max_new}], got {min_new}"
        )
    get.integer("stream_interval", 1, low=1, high=2**31)  # validated; every chunk is sent
    if raw.get("stop_regex"):  # vLLM has no regex stop; [] / null is what clients send
        raise SglRequestError(f"{name}.stop_regex", "is not supported by this server")
    grammars = [key for key in ("json_schema", "regex", "ebnf") if raw.get(key)]
    if len(grammars) > 1:
        raise SglRequestError(
            f"{name}.{grammars[1]}", f"only one of json_schema, regex, ebnf; got {grammars}"
        )
    return SglSampling(
        max_new_tokens=max_new,
        min_new_tokens=min_new,
        stop=get.strings("stop", MAX_STOP_COUNT, MAX_STOP_CHARS),
        stop_token_ids=get.token_ids("stop_token_ids", vocab_size),
        temperature=get.number("temperature", d.temperature, low=0.0, high=2.0),  # as vLLM
        top_p=get.number("top_p", d.top_p, low=0.0, high=1.0, open_low=True),
        top_k=_top_k(get.integer("top_k", d.top_k), name),
        min_p=get.number("min_p", d.min_p, low=0.0, high=1.0),
        frequency_penalty=get.number("frequency_penalty", 0.0, low=-2.0, high=2.0),
        presence_penalty=get.number("presence_penalty", 0.0, low=-2.0, high=2.0),
        repetition_penalty=get.number("repetition_penalty", 1.0, low=0.0, high=2.0, open_low=True),
        json_schema=get.grammar("json_schema"),
        regex=get.grammar("regex"),
        ebnf=get.grammar("ebnf"),
        ignore_eos=get.flag("ignore_eos", d.ignore_eos),
        skip_special_tokens=get.flag("skip_special_tokens", d.skip_special_tokens),
        spaces_between_special_tokens=get.flag(
            "spaces_between_special_tokens", d.spaces_between_special_tokens
        ),
        no_stop_trim=get.flag("no_stop_trim", d.no_stop_trim),
        logit_bias=get.logit_bias(vocab_size),
        sampling_seed=get.integer(
            "sampling_seed", None, low=-(2**63), high=2**63 - 1, optional=True
        ),
    )


def _top_k(value: int, name: str) -> int:
    if value == -1 or value >= 1:
        return value
    raise SglRequestError(f"{name}.top_k", f"must be -1 (disable) or at least 1, got {value}")


def _n(value: Any, name: str) -> int:
    if value is None:
        return 1
    if not _is_int(value) or not 1 <= value <= MAX_N:
        raise SglRequestError(name, f"must be an integer in [1, {MAX_N}], got {_short(value)}")
    return value


def _rids(value: Any, count: int, batched: bool) -> list[str]:
    if value is None:
        return [uuid.uuid4().hex for _ in range(count)]
    if isinstance(value, str) and 0 < len(value) <= MAX_RID_CHARS:
        return [f"{value}_{i}" for i in range(count)] if batched else [value]
    if (
        isinstance(value, list)
        and len(value) == count
        and all(isinstance(r, str) and 0 < len(r) <= MAX_RID_CHARS for r in value)
    ):
        return list(value)
    raise SglRequestError(
        "rid", f"must be a string of 1 to {MAX_RID_CHARS} characters, or one per prompt"
    )


class _Getter:
    """Typed, bounded reads of one sampling-params dict; errors name ``prefix.key``."""

    def __init__(self, raw: Mapping[str, Any], prefix: str) -> None:
        self.raw = raw
        self.prefix = prefix

    def _err(self, key: str, message: str) -> SglRequestError:
        return SglRequestError(f"{self.prefix}.{key}", message)

    def integer(
        self,
        key: str,
        default: int | None,
        low: int | None = None,
        high: int | None = None,
        optional: bool = False,
    ) -> Any:
        value = self.raw.get(key)
        if value is None:
            return default if not optional or key not in self.raw else None
        if not _is_int(value):
            raise self._err(key, f"must be an integer, got {_short(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise self._err(key, f"must be in [{low}, {high}], got {_short(value)}")
        return value

    def number(
        self,
        key: str,
        default: float,
        low: float | None = None,
        high: float | None = None,
        open_low: bool = False,
    ) -> float:
        value = self.raw.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._err(key, f"must be a number, got {_short(value)}")
        value = float(value)
        too_low = low is not None and (value <= low if open_low else value < low)
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            bracket = "(" if open_low else "["
            upper = "inf)" if high is None else f"{high}]"
            raise self._err(key, f"must be in {bracket}{low}, {upper}, got {value}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw.get(key)
        return default if value is None else _flag(value, f"{self.prefix}.{key}")

    def strings(self, key: str, max_count: int, max_len: int) -> tuple[str, ...]:
        value = self.raw.get(key)
        if value is None:
            return ()
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise self._err(key, "must be a non-empty string or a list of them")
        if len(values) > max_count:
            raise self._err(key, f"at most {max_count} entries, got {len(values)}")
        for v in values:
            if len(v.encode()) > max_len:
                raise self._err(key, f"entries are at most {max_len} bytes")
        return tuple(values)

    def token_ids(self, key: str, vocab_size: int | None) -> tuple[int, ...]:
        value = self.raw.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(_is_int(t) and t >= 0 for t in value):
            raise self._err(key, "must be a list of token ids")
        if vocab_size is not None and any(t >= vocab_size for t in value):
            raise self._err(key, f"token ids must be below the vocabulary size {vocab_size}")
        if len(value) > 4 * MAX_STOP_COUNT:
            raise self._err(key, f"at most {4 * MAX_STOP_COUNT} ids")
        return tuple(value)

    def grammar(self, key: str) -> str | None:
        value = self.raw.get(key)
        if value in (None, ""):
            return None
        if not isinstance(value, str):
            raise self._err(key, f"must be a string, got {type(value).__name__}")
        return value

    def logit_bias(self, vocab_size: int | None) -> tuple[tuple[int, float], ...]:
        value = self.raw.get("logit_bias")
        if value is None:
            return ()
        if not isinstance(value, Mapping) or len(value) > 4096:
            raise self._err("logit_bias", "must be an object of at most 4096 token id: bias")
        out: list[tuple[int, float]] = []
        for token, bias in value.items():
            text = str(token)
            if not text.isdigit() or len(text) > 9:
                raise self._err("logit_bias", f"keys must be token ids, got {_short(token)}")
            tid = int(text)
            if vocab_size is not None and tid >= vocab_size:
                raise self._err("logit_bias", f"token id {tid} is not below {vocab_size}")
            if isinstance(bias, bool) or not isinstance(bias, int | float):
                raise self._err("logit_bias", f"biases must be numbers, got {_short(bias)}")
            if not math.isfinite(bias) or abs(bias) > 100:
                raise self._err("logit_bias", f"biases must be in [-100, 100], got {bias}")
            out.append((tid, float(bias)))
        return tuple(out)


def _flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise SglRequestError(name, f"must be true or false, got {_short(value)}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63


def _index(i: int, batched: bool) -> str:
    return f"[{i}]" if batched else ""


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**limit else "<huge int>"
    return text if len(text) <= limit else text[:limit] + "..."


def prompt_count(items: Sequence[SglItem]) -> int:
    """Distinct prompts among ``items`` (``n`` samples share one)."""
    return len({(item.text, item.input_ids) for item in items})
