"""Offline, deterministic Llama models for tests and benchmarks.

No model can be downloaded in CI, so each recipe is built locally: a byte-level BPE tokenizer
trained on the synthetic corpus (`corpus.py`) plus seeded random weights in safetensors, laid
out as a Hugging Face model directory that `vllm.LLM(model=path)` and `AutoTokenizer` load.

Built models are cached under `$RADIX_PLUGIN_CACHE` (default `~/.cache/radix_plugin`) in a
directory keyed by a hash of the recipe, `BUILDER_VERSION` and `CORPUS_VERSION`, so a model is
rebuilt only when something that changes its bytes changes. Builds go to a temporary
directory that is renamed into place, so readers never see a half-built model, and a file
lock stops concurrent builders from doing the work twice. The pretrained `real` model
(`pretrained.py`) is cached the same way.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from radix_plugin.testing.corpus import CORPUS_VERSION, iter_documents
from radix_plugin.testing.pretrained import PRETRAINED, GgufRecipe, build_gguf_model

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Bump when the builder's output changes for an unchanged recipe (file layout, init scheme).
BUILDER_VERSION = 1

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Order fixes the ids: pad=0, bos=1, eos=2, im_start=3, im_end=4.
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, IM_START, IM_END)

# ChatML-style template. `message['content']` is used directly (not iterated), so vLLM
# detects the "string" content format and flattens OpenAI content parts before rendering.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' ~ message['role'] ~ '\\n' ~ (message['content'] or '') ~ '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "recipe.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


@dataclasses.dataclass(frozen=True)
class ModelRecipe:
    """Everything that determines a built model's bytes (hashed into its cache key)."""

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    init_std: float = 0.02
    embed_std: float = 1.0
    dtype: str = "bfloat16"
    seed: int = 0
    corpus_seed: int = 1234
    corpus_documents: int = 8000

    def cache_key(self) -> str:
        """Directory name: recipe name plus a hash of everything that affects the output."""
        payload = {
            "builder_version": BUILDER_VERSION,
            "corpus_version": CORPUS_VERSION,
            "recipe": dataclasses.asdict(self),
        }
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return f"{self.name}-{digest[:16]}"


RECIPES: dict[str, ModelRecipe] = {
    # Fast tests: 2 layers, GQA 4q/2kv heads with head_dim 64 (CPU attention supports 64).
    "tiny": ModelRecipe(
        name="tiny",
        vocab_size=4096,
        hidden_size=256,
        intermediate_size=512,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=64,
        max_position_embeddings=16384,
    ),
    # Prefix-cache benchmarks: prefill of a long prompt must clearly dominate a decode step.
    "small": ModelRecipe(
        name="small",
        vocab_size=8192,
        hidden_size=512,
        intermediate_size=1536,
        num_layers=6,
        num_heads=8,
        num_kv_heads=2,
        head_dim=64,
        max_position_embeddings=32768,
    ),
}


def cache_root() -> Path:
    """`$RADIX_PLUGIN_CACHE` if set (tests point it at a tmp dir), else ~/.cache/radix_plugin."""
    env = os.environ.get("RADIX_PLUGIN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "radix_plugin"


def get_recipe(name: str) -> ModelRecipe | GgufRecipe:
    """Look up a recipe; unknown names raise ValueError listing the valid ones."""
    recipe = RECIPES.get(name) or PRETRAINED.get(name)
    if recipe is None:
        valid = ", ".join(sorted(all_model_names()))
        raise ValueError(f"unknown test model {name!r}; valid names: {valid}")
    return recipe


def all_model_names() -> list[str]:
    """Every buildable model: the random-weight recipes, then the pretrained ones."""
    return [*RECIPES, *PRETRAINED]


def model_is_built(name: str) -> bool:
    """Whether model `name` is already in the cache (:func:`get_model_path` will not build)."""
    return (cache_root() / "models" / get_recipe(name).cache_key()).is_dir()


def get_model_path(name: str) -> Path:
    """Return the HF-style directory of model `name`, building it first if it is missing."""
    recipe = get_recipe(name)
    models_dir = cache_root() / "models"
    final = models_dir / recipe.cache_key()
    if final.is_dir():
        return final
    models_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(models_dir / f".{recipe.cache_key()}.lock"):
        if final.is_dir():  # another process built it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{recipe.cache_key()}.tmp-", dir=models_dir))
        try:
            if isinstance(recipe, GgufRecipe):
                build_gguf_model(recipe, tmp, downloads=cache_root() / "downloads")
            else:
                build_model(recipe, tmp)
            _publish(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # no-op once renamed
    return final


def _publish(tmp: Path, final: Path) -> None:
    """Atomically move a finished build into place (readers see all files or none)."""
    for path in tmp.iterdir():  # mkdtemp and safetensors create owner-only files
        path.chmod(0o644)
    tmp.chmod(0o755)
    try:
        os.rename(tmp, final)
    except OSError:
        # The lock is advisory (a no-op on some network filesystems): if another builder
        # won the race, its identical copy is already in place and ours is discarded.
        if not final.is_dir():
            raise


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_model(recipe: ModelRecipe, out_dir: Path) -> None:
    """Write tokenizer, config and weights for `recipe` into the existing `out_dir`."""
    tokenizer = train_tokenizer(recipe)
    if tokenizer.get_vocab_size() != recipe.vocab_size:
        raise RuntimeError(
            f"tokenizer for {recipe.name!r} has {tokenizer.get_vocab_size()} tokens, "
            f"expected {recipe.vocab_size}; enlarge corpus_documents"
        )
    tokenizer.save(str(out_dir / "tokenizer.json"), pretty=False)
    ids = {tok: tokenizer.token_to_id(tok) for tok in SPECIAL_TOKENS}
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config(recipe))
    _write_json(out_dir / "config.json", _model_config(recipe, ids))
    _write_json(
        out_dir / "generation_config.json",
        {
            "bos_token_id": ids[BOS_TOKEN],
            # Chat turns end with <|im_end|>; plain text ends with <|end_of_text|>.
            "eos_token_id": [ids[EOS_TOKEN], ids[IM_END]],
            "pad_token_id": ids[PAD_TOKEN],
        },
    )
    _write_json(out_dir / "recipe.json", dataclasses.asdict(recipe))
    write_weights(recipe, out_dir / "model.safetensors")


def train_tokenizer(recipe: ModelRecipe) -> Tokenizer:
    """Train a GPT-2-style byte-level BPE on the synthetic corpus.

    Seeding the trainer with the full 256-symbol byte alphabet makes every byte a token, so
    any string (and any byte sequence xgrammar must emit) is encodable; the ByteLevel decoder
    lets xgrammar recognise the vocabulary as byte-level.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    docs = iter_documents(recipe.corpus_seed, recipe.corpus_documents)
    tokenizer.train_from_iterator(docs, trainer=trainer)
    # Llama convention: plain prompts start with BOS (chat prompts get it from the template).
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B:1",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    return tokenizer


def write_weights(recipe: ModelRecipe, path: Path) -> None:
    """Write seeded random Llama weights (HF tensor names) to a safetensors file.

    Each tensor gets its own numpy `RandomState` seeded from (recipe seed, tensor name):
    RandomState's stream is frozen by numpy's compatibility policy, and per-name seeds make
    the values independent of iteration order. Uniform init with the target std is used
    because it is fast. Embeddings use a larger std than the projections so the residual
    stream carries the token identity and greedy output is not a single repeated token.
    """
    import numpy as np
    import torch
    from safetensors.torch import save_file

    dtype = getattr(torch, recipe.dtype)

    def uniform(name: str, shape: tuple[int, ...], std: float) -> torch.Tensor:
        seed_bytes = hashlib.sha256(f"{recipe.seed}:{name}".encode()).digest()[:4]
        rng = np.random.RandomState(int.from_bytes(seed_bytes, "little"))
        bound = std * 3**0.5
        values = rng.uniform(-bound, bound, size=shape).astype(np.float32)
        return torch.from_numpy(values).to(dtype)

    def ones(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.ones(shape, dtype=dtype)

    h, inter, v = recipe.hidden_size, recipe.intermediate_size, recipe.vocab_size
    q_dim = recipe.num_heads * recipe.head_dim
    kv_dim = recipe.num_kv_heads * recipe.head_dim
    std = recipe.init_std
    tensors = {
        "model.embed_tokens.weight": uniform("embed", (v, h), recipe.embed_std),
        "model.norm.weight": ones((h,)),
        "lm_head.weight": uniform("lm_head", (v, h), std),
    }
    for i in range(recipe.num_layers):
        p = f"model.layers.{i}."
        shapes = {
            "self_attn.q_proj": (q_dim, h),
            "self_attn.k_proj": (kv_dim, h),
            "self_attn.v_proj": (kv_dim, h),
            "self_attn.o_proj": (h, q_dim),
            "mlp.gate_proj": (inter, h),
            "mlp.up_proj": (inter, h),
            "mlp.down_proj": (h, inter),
        }
        for name, shape in shapes.items():
            tensors[f"{p}{name}.weight"] = uniform(p + name, shape, std)
        tensors[f"{p}input_layernorm.weight"] = ones((h,))
        tensors[f"{p}post_attention_layernorm.weight"] = ones((h,))
    save_file(tensors, str(path), metadata={"format": "pt"})


def _tokenizer_config(recipe: ModelRecipe) -> dict[str, object]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "additional_special_tokens": [IM_START, IM_END],
        # Clean-up would rewrite " ." to "." on decode and break byte-exact round trips.
        "clean_up_tokenization_spaces": False,
        "model_max_length": recipe.max_position_embeddings,
        "chat_template": CHAT_TEMPLATE,
    }


def _model_config(recipe: ModelRecipe, ids: dict[str, int | None]) -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": recipe.vocab_size,
        "hidden_size": recipe.hidden_size,
        "intermediate_size": recipe.intermediate_size,
        "num_hidden_layers": recipe.num_layers,
        "num_attention_heads": recipe.num_heads,
        "num_key_value_heads": recipe.num_kv_heads,
        "head_dim": recipe.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": recipe.max_position_embeddings,
        "rms_norm_eps": recipe.rms_norm_eps,
        # Both spellings: transformers>=5 reads rope_parameters, older versions rope_theta.
        "rope_theta": recipe.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": recipe.rope_theta},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": recipe.dtype,
        "bos_token_id": ids[BOS_TOKEN],
        "eos_token_id": ids[EOS_TOKEN],
        "pad_token_id": ids[PAD_TOKEN],
    }


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
