"""The seam check: does a vLLM still have every name, attribute and signature the plugin uses?

One table (``compat.SEAMS``) is checked two ways, by the same ``Check`` objects:

- ``RuntimeView``: the running vLLM, by ``inspect`` (start-up: plugin registration and the
  scheduler's construction). Modules not imported yet are read from their files, not
  imported, so the check stays cheap and imports nothing a process would not.
- ``StaticView``: a vLLM source tree (an unpacked wheel), by ``ast``, without importing it
  (``make compat``: every supported release, whatever is installed).

A target is ``"module:Qual.name"`` (``"module:"`` for the module itself). What a view answers:
whether a name exists (module attributes, classes, methods and attributes, bases included),
the signature a call meets (``self`` / ``cls`` dropped; a class gives its constructor's), a
class's members (its body, its bases', and every ``self.<name> = ...`` in their source), and
source text to scan. This module imports no vLLM itself.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

_DEFAULT = object()
"""Stands for a parameter default the static view does not evaluate."""
_SELF_ASSIGN = re.compile(r"\bself\.(\w+)\s*(?::[^=\n]+)?=(?!=)")


def split_target(target: str) -> tuple[str, list[str]]:
    module, _, qual = target.partition(":")
    return module, [p for p in qual.split(".") if p]


# --- what a view answers ------------------------------------------------------------------


class View(Protocol):
    """One vLLM, as the checks see it."""

    version: str

    def exists(self, target: str) -> bool: ...

    def signature(self, target: str) -> inspect.Signature | None: ...

    def members(self, target: str) -> set[str] | None: ...

    def source(self, target: str) -> str | None: ...


# --- the running vLLM ---------------------------------------------------------------------


class RuntimeView:
    """The vLLM this process runs: imported modules by ``inspect``; a module not imported yet
    through a ``StaticView`` of its file (importing it could cost seconds)."""

    def __init__(self, version: str, modules: Mapping[str, Any] | None = None) -> None:
        self.version = version
        self._modules = sys.modules if modules is None else modules
        root = Path(inspect.getfile(self._modules["vllm"])).parent.parent
        self._files = StaticView(root, version)
        self.modules_read_from_files: set[str] = set()

    def _resolve(self, target: str) -> tuple[bool, Any, Any]:
        """(imported, owner, object); object is ``_MISSING`` where the target is absent."""
        module_name, parts = split_target(target)
        module = self._modules.get(module_name)
        if module is None:
            self.modules_read_from_files.add(module_name)
            return False, None, None
        owner, obj = None, module
        for part in parts:
            owner = obj
            obj = inspect.getattr_static(obj, part, _MISSING)
            if obj is _MISSING:
                return True, owner, _MISSING
        return True, owner, obj

    def exists(self, target: str) -> bool:
        imported, owner, obj = self._resolve(target)
        if not imported:
            return self._files.exists(target)
        if obj is _MISSING and inspect.isclass(owner):
            return split_target(target)[1][-1] in (self.members(_parent(target)) or ())
        return obj is not _MISSING

    def signature(self, target: str) -> inspect.Signature | None:
        imported, owner, obj = self._resolve(target)
        if not imported:
            return self._files.signature(target)
        if obj is _MISSING or isinstance(obj, property):
            return None
        if inspect.isclass(obj):
            try:
                return inspect.signature(obj)
            except (TypeError, ValueError):
                return None
        if isinstance(obj, (classmethod, staticmethod)):
            function, drop = obj.__func__, isinstance(obj, classmethod)
        else:
            function, drop = obj, inspect.isclass(owner)
        if not callable(function):
            return None
        try:
            sig = inspect.signature(function)
        except (TypeError, ValueError):
            return None
        return _drop_first(sig) if drop else sig

    def members(self, target: str) -> set[str] | None:
        imported, _, cls = self._resolve(target)
        if not imported:
            return self._files.members(target)
        if inspect.ismodule(cls):
            return set(vars(cls))
        if not inspect.isclass(cls):
            return None
        names: set[str] = set()
        for klass in cls.__mro__:
            if klass is not object:
                names |= _own_members(klass)
        return names

    def source(self, target: str) -> str | None:
        imported, _, obj = self._resolve(target)
        if not imported:
            return self._files.source(target)
        if obj is _MISSING:
            return None
        if inspect.isclass(obj):
            return _class_text(obj)
        if inspect.ismodule(obj):
            return _file_text(getattr(obj, "__file__", None))
        function = getattr(obj, "__func__", obj)
        try:
            return inspect.getsource(function)
        except (OSError, TypeError):
            return None


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _parent(target: str) -> str:
    module, parts = split_target(target)
    return f"{module}:{'.'.join(parts[:-1])}"


def _drop_first(sig: inspect.Signature) -> inspect.Signature:
    params = list(sig.parameters.values())
    if params and params[0].kind in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        params = params[1:]
    return sig.replace(parameters=params)


@cache
def _file_text(path: str | None) -> str | None:
    if not path or not path.endswith(".py"):
        return None
    try:
        return Path(path).read_text()
    except OSError:
        return None


@cache
def _own_members(cls: type) -> frozenset[str]:
    """What ``cls`` itself defines: its namespace, annotations and ``self.<name> = ...``."""
    text = _class_text(cls)
    assigned = _SELF_ASSIGN.findall(text) if text else ()
    return frozenset((*vars(cls), *getattr(cls, "__annotations__", {}), *assigned))


def _class_text(cls: type) -> str | None:
    """A top-level class's block, cut from its file by indentation (``inspect.getsource``
    parses the whole module, ten times slower on vLLM's scheduler)."""
    module = sys.modules.get(cls.__module__)
    text = _file_text(getattr(module, "__file__", None))
    if text is None:
        return None
    return class_block(text, cls.__name__)


def class_block(text: str, name: str) -> str | None:
    """The source of top-level ``class name`` in ``text``: its line to the next top-level
    statement."""
    match = re.search(rf"^class {re.escape(name)}\b.*$", text, re.MULTILINE)
    if match is None:
        return None
    end = re.compile(r"^[^\s#)\]]", re.MULTILINE).search(text, match.end() + 1)
    return text[match.start() : end.start() if end else len(text)]


# --- a vLLM source tree -------------------------------------------------------------------


@dataclass
class _Class:
    node: ast.ClassDef
    module: str
    text: str


class StaticView:
    """A vLLM source tree (``root/vllm/...``), read with ``ast``; nothing is imported.
    ``overrides`` replaces files' text (relative paths), for test doubles."""

    def __init__(self, root: Path, version: str, overrides: Mapping[str, str] | None = None):
        self.root = Path(root)
        self.version = version
        self._overrides = dict(overrides or {})
        self._trees: dict[str, tuple[ast.Module, str] | None] = {}

    # modules

    def _module(self, name: str) -> tuple[ast.Module, str] | None:
        if name not in self._trees:
            self._trees[name] = self._load(name)
        return self._trees[name]

    def _load(self, name: str) -> tuple[ast.Module, str] | None:
        text = self._text(name)
        return None if text is None else (ast.parse(text), text)

    def _text(self, name: str) -> str | None:
        """A module's source without parsing it (enough for ``Mentions``)."""
        rel = name.replace(".", "/")
        for candidate in (f"{rel}.py", f"{rel}/__init__.py"):
            text = self._overrides.get(candidate)
            if text is not None:
                return text
            path = self.root / candidate
            if path.is_file():
                return _file_text(str(path))
        return None

    def _top_level(self, module: str) -> dict[str, ast.AST]:
        loaded = self._module(module)
        if loaded is None:
            return {}
        names: dict[str, ast.AST] = {}
        for node in _statements(loaded[0].body):
            for bound in _bound_names(node):
                names[bound] = node
        return names

    def _find(self, module: str, name: str, depth: int = 0) -> tuple[str, ast.AST] | None:
        """Where ``module.name`` is defined, following ``from x import name`` (re-exports)."""
        node = self._top_level(module).get(name)
        if isinstance(node, ast.ImportFrom) and depth < 8:
            source = _import_source(module, node, self._is_package(module))
            original = next((a.name for a in node.names if (a.asname or a.name) == name), name)
            if self._module(f"{source}.{original}") is not None:
                return f"{source}.{original}", node
            found = self._find(source, original, depth + 1)
            return found if found is not None else (module, node)
        if isinstance(node, ast.Import):
            return module, node
        return (module, node) if node is not None else None

    def _is_package(self, module: str) -> bool:
        return (self.root / module.replace(".", "/") / "__init__.py").is_file() or (
            f"{module.replace('.', '/')}/__init__.py" in self._overrides
        )

    def _class(self, module: str, name: str) -> _Class | None:
        found = self._find(module, name)
        if found is None or not isinstance(found[1], ast.ClassDef):
            return None
        mod = found[0]
        loaded = self._module(mod)
        assert loaded is not None
        return _Class(found[1], mod, loaded[1])

    def _mro(self, cls: _Class, seen: set[int] | None = None) -> list[_Class]:
        seen = set() if seen is None else seen
        if id(cls.node) in seen:
            return []
        seen.add(id(cls.node))
        out = [cls]
        for base in cls.node.bases:
            parent = self._base(cls.module, base)
            if parent is not None:
                out += self._mro(parent, seen)
        return out

    def _base(self, module: str, expr: ast.expr) -> _Class | None:
        if isinstance(expr, ast.Subscript):  # Generic[T], Protocol[...]
            expr = expr.value
        if isinstance(expr, ast.Name):
            return self._class(module, expr.id)
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            found = self._find(module, expr.value.id)
            if found is not None and self._module(found[0]) is not None:
                return self._class(found[0], expr.attr)
        return None

    def _member(self, cls: _Class, name: str) -> ast.AST | None:
        for klass in self._mro(cls):
            for node in klass.node.body:
                if name in _bound_names(node):
                    return node
        return None

    # the View protocol

    def exists(self, target: str) -> bool:
        module, parts = split_target(target)
        if self._module(module) is None:
            return False
        if not parts:
            return True
        if len(parts) == 1:
            return parts[0] in self._top_level(module)
        owner = self._class(module, parts[0])
        for part in parts[1:-1]:
            owner = self._nested(owner, part)
        if owner is None:
            return False
        return parts[-1] in (self._class_members(owner))

    def _nested(self, cls: _Class | None, name: str) -> _Class | None:
        if cls is None:
            return None
        node = self._member(cls, name)
        return _Class(node, cls.module, cls.text) if isinstance(node, ast.ClassDef) else None

    def _owner(self, parts: list[str], module: str) -> _Class | None:
        owner = self._class(module, parts[0])
        for part in parts[1:]:
            owner = self._nested(owner, part)
        return owner

    def signature(self, target: str) -> inspect.Signature | None:
        module, parts = split_target(target)
        if not parts:
            return None
        if len(parts) == 1:
            found = self._find(module, parts[0])
            if found is None:
                return None
            node = found[1]
            if isinstance(node, ast.ClassDef):
                return self._constructor(_Class(node, found[0], self._module(found[0])[1]))
            return _function_signature(node, drop_first=False)
        owner = self._owner(parts[:-1], module)
        if owner is None:
            return None
        node = self._member(owner, parts[-1])
        if isinstance(node, ast.ClassDef):
            return self._constructor(_Class(node, owner.module, owner.text))
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return None
        decorators = {_decorator_name(d) for d in node.decorator_list}
        if decorators & {"property", "cached_property"}:
            return None
        return _function_signature(node, drop_first="staticmethod" not in decorators)

    def _constructor(self, cls: _Class) -> inspect.Signature | None:
        init = self._member(cls, "__init__")
        if isinstance(init, ast.FunctionDef):
            return _function_signature(init, drop_first=True)
        fields: dict[str, inspect.Parameter] = {}
        for klass in reversed(self._mro(cls)):
            for node in klass.node.body:
                if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
                    continue
                if "ClassVar" in ast.unparse(node.annotation) or _init_false(node.value):
                    continue
                default = inspect.Parameter.empty if node.value is None else _DEFAULT
                fields[node.target.id] = inspect.Parameter(
                    node.target.id, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default
                )
        params = sorted(fields.values(), key=lambda p: p.default is not inspect.Parameter.empty)
        return inspect.Signature(params)

    def members(self, target: str) -> set[str] | None:
        module, parts = split_target(target)
        if not parts:
            return set(self._top_level(module)) if self._module(module) is not None else None
        owner = self._owner(parts, module)
        return self._class_members(owner) if owner is not None else None

    def _class_members(self, cls: _Class) -> set[str]:
        names: set[str] = set()
        for klass in self._mro(cls):
            for node in klass.node.body:
                names.update(_bound_names(node))
            names.update(_SELF_ASSIGN.findall(ast.get_source_segment(klass.text, klass.node) or ""))
        return names

    def source(self, target: str) -> str | None:
        module, parts = split_target(target)
        if not parts:
            return self._text(module)
        if self._module(module) is None:
            return None
        if len(parts) == 1:
            found = self._find(module, parts[0])
            if found is None or isinstance(found[1], (ast.Import, ast.ImportFrom)):
                return None
            return ast.get_source_segment(self._module(found[0])[1], found[1])
        owner = self._owner(parts[:-1], module)
        node = self._member(owner, parts[-1]) if owner is not None else None
        if node is None:
            return None
        for klass in self._mro(owner):
            if node in klass.node.body:
                return ast.get_source_segment(klass.text, node)
        return None


def _statements(body: Sequence[ast.stmt]) -> Iterable[ast.stmt]:
    """Module-level statements, into ``if`` / ``try`` blocks (``TYPE_CHECKING`` ones too:
    a name only there still exists for the checks that read source)."""
    for node in body:
        if isinstance(node, ast.If):
            yield from _statements(node.body)
            yield from _statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _statements(block)
        else:
            yield node


def _bound_names(node: ast.AST) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in node.names]
    return []


def _import_source(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    keep = len(base) - node.level + (1 if is_package else 0)
    prefix = ".".join(base[:keep])
    return f"{prefix}.{node.module}" if node.module else prefix


def _decorator_name(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _init_false(value: ast.expr | None) -> bool:
    return (
        isinstance(value, ast.Call)
        and _decorator_name(value.func) == "field"
        and any(
            k.arg == "init" and isinstance(k.value, ast.Constant) and k.value.value is False
            for k in value.keywords
        )
    )


def _function_signature(node: ast.AST, drop_first: bool) -> inspect.Signature | None:
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    a = node.args
    kinds = inspect.Parameter
    positional = [(p, kinds.POSITIONAL_ONLY) for p in a.posonlyargs] + [
        (p, kinds.POSITIONAL_OR_KEYWORD) for p in a.args
    ]
    first_default = len(positional) - len(a.defaults)
    params = [
        kinds(p.arg, kind, default=_DEFAULT if i >= first_default else kinds.empty)
        for i, (p, kind) in enumerate(positional)
    ]
    if a.vararg:
        params.append(kinds(a.vararg.arg, kinds.VAR_POSITIONAL))
    for p, default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        params.append(
            kinds(p.arg, kinds.KEYWORD_ONLY, default=kinds.empty if default is None else _DEFAULT)
        )
    if a.kwarg:
        params.append(kinds(a.kwarg.arg, kinds.VAR_KEYWORD))
    sig = inspect.Signature(params)
    return _drop_first(sig) if drop_first else sig


# --- checks -------------------------------------------------------------------------------


class Check(Protocol):
    """One seam's test: ``None`` if ``target`` in ``view`` is what the plugin relies on,
    else why not (one line)."""

    def __call__(self, view: View, target: str) -> str | None: ...


@dataclass(frozen=True)
class Exists:
    """The name exists (a module, module attribute, class, method or attribute)."""

    def __call__(self, view: View, target: str) -> str | None:
        return None if view.exists(target) else "missing"


@dataclass(frozen=True)
class HasAttributes:
    """A class has these members (class body, bases, or ``self.<name> = ...``); a module
    (target ``"module:"``) these top-level names."""

    names: tuple[str, ...]

    def __call__(self, view: View, target: str) -> str | None:
        members = view.members(target)
        if members is None:
            return "missing"
        missing = [n for n in self.names if n not in members]
        return f"no {', '.join(missing)}" if missing else None


@dataclass(frozen=True)
class Accepts:
    """The callable accepts the call the plugin makes: ``positional`` arguments, then these
    keywords."""

    positional: int = 0
    keywords: tuple[str, ...] = ()

    def __call__(self, view: View, target: str) -> str | None:
        sig = view.signature(target)
        if sig is None:
            return "missing" if not view.exists(target) else "not callable"
        try:
            sig.bind(*range(self.positional), **dict.fromkeys(self.keywords))
        except TypeError as exc:
            return f"signature {_render(sig)} rejects {self.describe()}: {exc}"
        return None

    def describe(self) -> str:
        args = [f"arg{i}" for i in range(self.positional)] + [f"{k}=" for k in self.keywords]
        return f"({', '.join(args)})"


@dataclass(frozen=True)
class HasParameters:
    """The callable has parameters with these names (the plugin reads or passes them by
    name)."""

    names: tuple[str, ...]

    def __call__(self, view: View, target: str) -> str | None:
        sig = view.signature(target)
        if sig is None:
            return "missing" if not view.exists(target) else "not callable"
        missing = [n for n in self.names if n not in sig.parameters]
        return f"signature {_render(sig)} has no {', '.join(missing)}" if missing else None


@dataclass(frozen=True)
class Overrides:
    """``ours`` (an importable plugin function) overrides ``target``: the base method exists
    and every way of calling it that its signature allows also binds ours. ``optional``: a
    base without the method is fine (ours is then a plain extra)."""

    ours: str
    optional: bool = False
    supplied: tuple[str, ...] = ()
    """Keywords the plugin passes itself (``functools.partial``), on top of vLLM's call."""
    calls: str = "any"
    """How vLLM calls it: ``"any"`` way its signature allows, only ``"positional"``
    arguments, or arguments by ``"keyword"`` (then only those call shapes must bind)."""

    def __call__(self, view: View, target: str) -> str | None:
        base = view.signature(target)
        if base is None:
            if self.optional and not view.exists(target):
                return None
            return (
                "missing (the plugin overrides it)" if not view.exists(target) else "not callable"
            )
        mine = _our_signature(self.ours)
        minimal, positional, by_name = _call_shapes(base)
        shapes = {"any": [minimal, positional, by_name], "positional": [minimal, positional]}
        for args, kwargs in shapes.get(self.calls, [minimal, by_name]):
            try:
                mine.bind(*args, **kwargs, **dict.fromkeys(self.supplied))
            except TypeError:
                return f"signature {_render(base)} is not one {self.ours} {_render(mine)} accepts"
        return None

    def note(self, view: View, target: str) -> str | None:
        return "absent here; ours is unused" if self.optional and not view.exists(target) else None


@dataclass(frozen=True)
class CallsOn:
    """Every ``<...>.{attribute}.<name>`` used in the target's source (and ``also_in``'s)
    is a member of ``ours`` (the plugin's replacement for that attribute)."""

    attribute: str
    ours: str
    also_in: tuple[str, ...] = ()

    def names(self, view: View, target: str) -> set[str] | None:
        texts = [view.source(t) for t in (target, *self.also_in)]
        if texts[0] is None:
            return None
        attr = re.escape(self.attribute)
        found: set[str] = set()
        for text in filter(None, texts):
            # the attribute itself, and local names bound to it (``q = pool.free_block_queue``)
            aliases = re.findall(rf"^\s*(\w+)\s*=\s*[\w.]*\b{attr}\s*$", text, re.MULTILINE)
            for name in (attr, *aliases):
                found.update(re.findall(rf"\b{re.escape(name)}\.(\w+)", text))
        return found

    def __call__(self, view: View, target: str) -> str | None:
        used = self.names(view, target)
        if used is None:
            return "source missing"
        if not used:
            return f"no {self.attribute}.<name> use found (the scan is stale)"
        ours = _import(self.ours)
        missing = sorted(n for n in used if not hasattr(ours, n))
        return f"vLLM calls {', '.join(missing)}, which {self.ours} lacks" if missing else None


@dataclass(frozen=True)
class Mentions:
    """The target's source matches ``pattern`` (what the plugin relies on happens there)."""

    pattern: str
    meaning: str = ""

    def __call__(self, view: View, target: str) -> str | None:
        text = view.source(target)
        if text is None:
            return "source missing"
        if re.search(self.pattern, text, re.MULTILINE):
            return None
        return f"no longer {self.meaning or f'matches {self.pattern!r}'}"


def _render(sig: inspect.Signature) -> str:
    return str(sig).replace(repr(_DEFAULT), "…")


def _call_shapes(sig: inspect.Signature) -> list[tuple[list[Any], dict[str, Any]]]:
    """The calls a signature admits, in the forms that tell overrides apart: required
    arguments only, every argument positionally where it can be, and every argument by
    keyword where it can be."""
    kinds = inspect.Parameter
    params = list(sig.parameters.values())
    required_pos = [
        p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
    ]
    keyword_only = [p for p in params if p.kind is kinds.KEYWORD_ONLY]
    minimal = (
        [0 for p in required_pos if p.default is kinds.empty],
        {p.name: 0 for p in keyword_only if p.default is kinds.empty},
    )
    positional = ([0] * len(required_pos), {p.name: 0 for p in keyword_only})
    by_name = (
        [0 for p in required_pos if p.kind is kinds.POSITIONAL_ONLY],
        {p.name: 0 for p in params if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)},
    )
    return [minimal, positional, by_name]


def _import(path: str) -> Any:
    module, parts = split_target(path)
    obj: Any = importlib.import_module(module)
    for part in parts:
        obj = getattr(obj, part)
    return obj


def _our_signature(path: str) -> inspect.Signature:
    module, parts = split_target(path)
    owner: Any = importlib.import_module(module)
    for part in parts[:-1]:
        owner = getattr(owner, part)
    raw = inspect.getattr_static(owner, parts[-1])
    if isinstance(raw, (classmethod, staticmethod)):
        sig = inspect.signature(raw.__func__)
        return _drop_first(sig) if isinstance(raw, classmethod) else sig
    sig = inspect.signature(raw)
    return _drop_first(sig) if inspect.isclass(owner) else sig


# --- the table and its verdict ------------------------------------------------------------


@dataclass(frozen=True)
class Seam:
    """One thing the plugin relies on in vLLM: ``where`` is the vLLM target, ``check`` what
    must hold there, ``what`` why the plugin needs it; ``at``: the start-up points that
    check it at run time ("registration", "scheduler")."""

    id: str
    what: str
    where: str
    check: Check
    at: tuple[str, ...] = ("scheduler",)


@dataclass(frozen=True)
class SeamResult:
    seam: Seam
    problem: str | None = None
    note: str | None = None
    """What the check saw where it passed, for checks that can say (a version branch's
    layout, an optional method's absence)."""

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass
class Verdict:
    version: str
    results: list[SeamResult] = field(default_factory=list)

    @property
    def broken(self) -> list[SeamResult]:
        return [r for r in self.results if not r.ok]

    def message(self) -> str:
        """One message naming every broken seam."""
        lines = [f"  - {r.seam.id} ({r.seam.where}): {r.problem}" for r in self.broken]
        return (
            f"vLLM {self.version} breaks {len(lines)} seam(s) radix_plugin relies on:\n"
            + "\n".join(lines)
        )


def check_seams(view: View, seams: Iterable[Seam]) -> Verdict:
    """Every seam's check against ``view``; a check that raises counts as broken."""
    verdict = Verdict(view.version)
    for seam in seams:
        note = None
        try:
            problem = seam.check(view, seam.where)
            if problem is None and hasattr(seam.check, "note"):
                note = seam.check.note(view, seam.where)
        except Exception as exc:  # a check is a reader; an odd tree must not crash start-up
            problem = f"check failed: {type(exc).__name__}: {exc}"
        verdict.results.append(SeamResult(seam, problem, note))
    return verdict
