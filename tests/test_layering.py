"""The package layout is the architecture: these checks fail CI when code crosses a floor.

Components come first (``cache_manager``, ``logits``, ``kernels``, then ``api_server``), and
inside each the vLLM process floors stay visible: a ``core/`` folder is pure, and one folder
per process that runs the code (``engine_core/``, ``worker/``). ``FLOORS`` maps every module
to its floor; ``MAY_IMPORT`` says which floors each may import, by every ``import`` in the
file (the lazy ones inside functions included, ``TYPE_CHECKING`` blocks excluded); and
``BANNED`` which third-party packages it must not import.

- Pure modules import with vLLM, torch, xgrammar and Triton made unimportable.
- No import cycle among the plugin's modules (lazy imports count).
- Only ``radix_plugin.compat`` touches vLLM's private names or rebinds vLLM attributes.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "radix_plugin"

FLOORS: tuple[tuple[str, str], ...] = (
    ("compat.py", "compat"),
    ("seams.py", "compat"),
    ("plugin.py", "plugin"),
    ("__init__.py", "pure"),
    ("lazy_exports.py", "pure"),
    ("config.py", "pure"),
    ("xargs.py", "pure"),
    ("plugin_allowlist.py", "pure"),
    ("plugin_metrics.py", "pure"),
    ("cache_manager/__init__.py", "pure"),
    ("logits/__init__.py", "pure"),
    ("kernels/__init__.py", "pure"),
    ("*/core/*", "pure"),
    ("logits/grammar/*", "grammar"),
    ("kernels/attention/*", "worker"),
    ("kernels/*", "kernels"),
    ("*/engine_core/*", "engine_core"),
    ("*/worker/*", "worker"),
    ("cache_manager/connector/metadata.py", "connector_wire"),
    ("cache_manager/connector/*", "connector"),
    ("api_server/*", "api_server"),
    ("simulator/*", "simulator"),
    ("testing/*", "testing"),
)
"""Module path (relative to the package; ``*`` crosses folders) -> floor; first match wins.
The component ``__init__`` files only name their public names lazily, so they are pure."""

MAY_IMPORT: dict[str, set[str]] = {
    "pure": {"pure"},
    "grammar": {"pure", "grammar"},
    "kernels": {"pure", "kernels"},
    "engine_core": {"pure", "grammar", "compat", "engine_core", "connector_wire"},
    "worker": {"pure", "grammar", "kernels", "worker", "api_server", "connector_wire"},
    "api_server": {"pure", "grammar", "compat", "api_server"},
    "connector_wire": {"pure", "connector_wire"},
    "connector": {"pure", "compat", "connector", "connector_wire", "engine_core", "worker"},
    "compat": set(),
    "plugin": {"pure", "compat", "engine_core", "worker"},
    "simulator": {"pure", "engine_core", "simulator"},
    "testing": {"pure", "testing"},
}
"""Floor -> the plugin floors it may import. The connector is built by vLLM in EngineCore
and in the workers, each role importing its own side lazily; ``metadata.py`` is the per-step
message both sides share. The worker's logits processor class is also loaded by the API
server, which calls its ``validate_params`` (the API server's validation)."""

BANNED: dict[str, set[str]] = {
    "pure": {"vllm", "torch", "xgrammar", "triton"},
    "grammar": {"vllm", "torch", "triton"},
    "kernels": {"vllm"},
}
"""Floor -> third-party packages its modules must not import."""


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _floor(path: Path) -> str:
    rel = _rel(path)
    for pattern, floor in FLOORS:
        if fnmatch.fnmatchcase(rel, pattern):
            return floor
    raise AssertionError(f"{rel}: no floor in FLOORS; add it")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("radix_plugin", *parts))


@cache
def _module_paths() -> dict[str, Path]:
    return {_module_name(p): p for p in _modules()}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node outside ``if TYPE_CHECKING:`` blocks."""
    out: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return out


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(plugin modules, third-party top-level packages) ``path`` imports at run time."""
    own, third = set(), set()
    known = _module_paths()
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for name in targets:
            top = name.split(".")[0]
            if top != "radix_plugin":
                third.add(top)
                continue
            while name not in known and "." in name:
                name = name.rsplit(".", 1)[0]
            own.add(name)
    return own, third


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_module_imports_only_floors_it_may(path: Path) -> None:
    floor = _floor(path)
    own, third = _imports(path)
    paths = _module_paths()
    crossing = sorted(
        f"{name} ({_floor(paths[name])})"
        for name in own - {"radix_plugin"}
        if _floor(paths[name]) not in MAY_IMPORT[floor] | {floor}
    )
    assert not crossing, f"{_rel(path)} ({floor}) imports {crossing}"
    banned = sorted(third & BANNED.get(floor, set()))
    assert not banned, f"{_rel(path)} ({floor}) imports {banned}"


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components over the plugin's import graph."""
    graph = {name: sorted(_imports(path)[0] - {name}) for name, path in _module_paths().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    assert not cycles, f"import cycles: {cycles}"


def test_every_floor_folder_is_visible_in_the_tree() -> None:
    """Each component shows its pure floor and the processes that run it."""
    for folder in (
        "cache_manager/core",
        "cache_manager/engine_core",
        "cache_manager/worker",
        "cache_manager/connector",
        "logits/core",
        "logits/grammar",
        "logits/engine_core",
        "logits/worker",
        "kernels/attention",
        "api_server/core",
    ):
        assert (PACKAGE / folder / "__init__.py").is_file(), folder


def test_pure_modules_import_without_vllm_torch_xgrammar_triton() -> None:
    pure = sorted(_module_name(p) for p in _modules() if _floor(p) == "pure")
    script = textwrap.dedent(
        """
        import importlib, importlib.abc, sys

        BLOCKED = ("vllm", "torch", "xgrammar", "triton")

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked: {name}")
                return None

        sys.meta_path.insert(0, Block())
        for name in sys.argv[1:]:
            importlib.import_module(name)
        from radix_plugin.cache_manager import RadixTree, make_eviction_policy, make_ordering

        make_eviction_policy("workflow")
        make_ordering("dfs")
        RadixTree(block_size=16)
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not leaked, leaked
        print(len(sys.argv) - 1)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *pure], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == len(pure) >= 30


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
    if path.name == "compat.py" or _floor(path) == "testing":
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
