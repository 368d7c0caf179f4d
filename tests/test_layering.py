"""The package layout is the architecture: these checks fail CI when code crosses a layer.

- ``radix_plugin.core`` imports with vLLM, torch, xgrammar and Triton made unimportable.
- Each process package imports only the layers below it (every ``import``, including the
  lazy ones inside functions): an EngineCore module never imports worker code, and so on.
- Only ``radix_plugin.compat`` touches vLLM's private names or rebinds vLLM attributes.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "radix_plugin"

ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "grammar": {"core", "grammar"},
    "api_server": {"core", "grammar", "compat", "api_server"},
    "compat": set(),
    "engine_core": {"core", "grammar", "compat", "engine_core", "host_tier.metadata"},
    "worker": {"core", "grammar", "api_server", "worker", "host_tier.metadata"},
    "host_tier": {"core", "compat", "host_tier", "host_tier.metadata", "engine_core", "worker"},
    "simulator": {"core", "engine_core", "simulator"},
    "testing": {"testing"},
}
"""Layer -> the plugin layers it may import. ``host_tier`` is the KV connector vLLM builds
in both EngineCore and the workers; each role imports its own side. The worker's logits
processor class is also loaded by the API server, which calls its ``validate_params``; the
API server's stat logger reads what the scheduler put in vLLM's stats through ``compat``."""


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem != "__init__" else ""


def _imported_modules(tree: ast.AST, path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, anywhere in the file."""
    names: set[str] = set()
    package = ".".join(("radix_plugin", *path.relative_to(PACKAGE).with_suffix("").parts))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _plugin_layers(names: set[str]) -> set[str]:
    """``radix_plugin.engine_core.scheduler`` -> ``engine_core``; the host tier's wire
    format keeps its module name, because both process sides may use it."""
    out = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != "radix_plugin" or len(parts) < 2:
            continue
        if parts[1:3] == ["host_tier", "metadata"]:
            out.add("host_tier.metadata")
        elif (PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file():
            out.add(parts[1])
    return out


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_lower_layers(path: Path) -> None:
    layer = _layer(path)
    if layer in ("", "plugin"):
        return  # the package root and the entry point may wire any layer
    assert layer in ALLOWED, f"{path}: new top-level layer {layer!r}; add it to ALLOWED"
    used = _plugin_layers(_imported_modules(ast.parse(path.read_text()), path))
    assert used <= ALLOWED[layer], f"{path} ({layer}) imports {sorted(used - ALLOWED[layer])}"


def test_core_imports_without_vllm_torch_xgrammar_triton() -> None:
    script = textwrap.dedent(
        """
        import importlib, importlib.abc, pkgutil, sys

        BLOCKED = ("vllm", "torch", "xgrammar", "triton")

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked: {name}")
                return None

        sys.meta_path.insert(0, Block())
        import radix_plugin.core as core

        names = [m.name for m in pkgutil.walk_packages(core.__path__, "radix_plugin.core.")]
        for name in names:
            importlib.import_module(name)
        from radix_plugin.core.registry import make_eviction_policy, make_ordering

        make_eviction_policy("workflow")
        make_ordering("dfs")
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not leaked, leaked
        print(len(names))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) >= 10  # every core module was imported


@cache
def _vllm_private_names() -> frozenset[str]:
    """Private method and attribute names vLLM's own source defines."""
    import vllm

    names: set[str] = set()
    for path in Path(vllm.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_bytes())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return frozenset(n for n in names if n.startswith("_") and not n.startswith("__"))


def _private_methods_of_vllm_bases(tree: ast.AST) -> frozenset[str]:
    """Private methods of the vLLM classes this module subclasses (a mixin in the same
    module would override them just the same)."""
    imported = {
        alias.asname or alias.name: (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vllm"
        for alias in node.names
    }
    bases = {
        base.id
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        for base in node.bases
        if isinstance(base, ast.Name) and base.id in imported
    }
    names: set[str] = set()
    for base in bases:
        module, name = imported[base]
        cls = getattr(importlib.import_module(module), name)
        for klass in getattr(cls, "__mro__", ()):
            if klass.__module__.split(".")[0] == "vllm":
                names.update(n for n in vars(klass) if n.startswith("_") and not n.startswith("__"))
    return frozenset(names)


@cache
def _own_private_names() -> frozenset[str]:
    names: set[str] = set()
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return frozenset(names)


def _vllm_bindings(tree: ast.AST) -> set[str]:
    """Local names bound to vLLM modules or classes by the file's imports."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "vllm":
                    bound.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vllm":
            bound.update(alias.asname or alias.name for alias in node.names)
    return bound


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_compat_uses_vllm_private_names_or_patches(path: Path) -> None:
    if path.name == "compat.py" or _layer(path) == "testing":
        return
    tree = ast.parse(path.read_text())
    foreign = _vllm_private_names() - _own_private_names()
    vllm_methods = _private_methods_of_vllm_bases(tree)
    vllm_names = _vllm_bindings(tree)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            problems += [
                f"line {item.lineno}: overrides vLLM private method {item.name}"
                for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                and item.name in vllm_methods
            ]
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vllm"):
            problems += [f"imports {a.name}" for a in node.names if a.name.startswith("_")]
        if isinstance(node, ast.Attribute) and node.attr in foreign:
            problems.append(f"line {node.lineno}: uses vLLM private name {node.attr}")
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in vllm_names
        ):
            problems.append(f"line {node.lineno}: rebinds {node.value.id}.{node.attr}")
    assert not problems, f"{path}: {problems}; move it into radix_plugin/compat.py"
