"""Every TensorRT name edgerep's TensorRT module uses exists in the published 10.x API listing.

The listing is the ``tensorrt-stubs`` (10.13) ``.pyi`` files. As shipped they are not valid Python
(a parameter is named ``in``), so they are read tolerantly: classes (with bases and nesting), their
``def`` / attribute names and return annotations, by regex and indentation. The names used are
collected from ``edgerep/engines/tensorrt_engine.py``'s source by an AST walk: ``trt.X.Y`` chains,
plus attributes of values whose TensorRT type follows from the stubs (``builder = trt.Builder(..)``
-> ``builder.create_network(..)`` -> ``INetworkDefinition`` -> ``network.get_input`` ...).
"""
from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import edgerep.engines.tensorrt_engine as te

_CLASS = re.compile(r"^(\s*)class\s+(\w+)\s*(?:\(([^)]*)\))?\s*:")
_DEF = re.compile(r"^(\s*)def\s+(\w+)\s*\((.*?)\)?\s*(?:->\s*([\w.\[\], ]+?))?\s*:?\s*$")
_ATTR = re.compile(r"^(\s*)(\w+)\s*:\s*([\w.\[\], ]+)")


@dataclass
class StubClass:
    name: str
    bases: list[str]
    members: dict[str, str | None] = field(default_factory=dict)  # member -> return / attribute type
    params: dict[str, set[str]] = field(default_factory=dict)  # method -> parameter names (all overloads)
    nested: dict[str, "StubClass"] = field(default_factory=dict)


@dataclass
class StubApi:
    classes: dict[str, StubClass]
    top: set[str]

    def member_type(self, cls: str, name: str, _seen: frozenset = frozenset()) -> tuple[bool, str | None]:
        """(exists, type) of ``cls.name``, following bases."""
        c = self.classes.get(cls)
        if c is None or cls in _seen:
            return False, None
        if name in c.members:
            return True, c.members[name]
        if name in c.nested:
            return True, None
        for b in c.bases:
            ok, t = self.member_type(b.split(".")[-1], name, _seen | {cls})
            if ok:
                return ok, t
        return False, None


def _clean_type(t: str | None) -> str | None:
    if not t:
        return None
    t = t.strip().split("[")[0].split("|")[0].strip()
    return t.split(".")[-1] if t and t[0].isupper() or "." in t else t


def parse_stubs(paths: list[Path]) -> StubApi:
    classes: dict[str, StubClass] = {}
    top: set[str] = set()
    for path in paths:
        stack: list[tuple[int, StubClass]] = []
        in_doc = False
        for line in path.read_text(encoding="utf-8").splitlines():
            s = line.strip()
            if s.count('"""') == 1:  # docstrings hold prose and code samples: skip them
                in_doc = not in_doc
                continue
            if in_doc or not s or s.startswith(("#", "@")):
                continue
            indent = len(line) - len(line.lstrip())
            while stack and indent <= stack[-1][0]:
                stack.pop()
            m = _CLASS.match(line)
            if m:
                c = StubClass(m.group(2), [b.strip() for b in (m.group(3) or "").split(",") if b.strip()])
                if stack:
                    stack[-1][1].nested[c.name] = c
                else:
                    classes.setdefault(c.name, c)
                    top.add(c.name)
                stack.append((indent, c))
                continue
            m = _DEF.match(line)
            if m:
                if stack and indent == stack[-1][0] + 4:
                    stack[-1][1].members.setdefault(m.group(2), _clean_type(m.group(4)))
                    names = {p.split(":")[0].split("=")[0].strip().lstrip("*") for p in (m.group(3) or "").split(",")}
                    stack[-1][1].params.setdefault(m.group(2), set()).update(n for n in names if n)
                elif not stack and indent == 0:
                    top.add(m.group(2))
                continue
            m = _ATTR.match(line)
            if m:
                if stack and indent == stack[-1][0] + 4:
                    t = _clean_type(m.group(3).replace("typing.ClassVar", ""))
                    stack[-1][1].members.setdefault(m.group(2), t)
                elif not stack and indent == 0:
                    top.add(m.group(2))
                continue
            m = re.match(r"^from\s+[\w.]+\s+import\s+(\w+)", line)
            if m and indent == 0:
                top.add(m.group(1))
            m = re.match(r"^__all__\s*=\s*\[(.*)\]", line)
            if m:
                top.update(re.findall(r"'(\w+)'", m.group(1)))
    return StubApi(classes, top)


def _stub_paths() -> list[Path] | None:
    spec = importlib.util.find_spec("tensorrt_bindings")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    files = [root / "tensorrt.pyi", root / "__init__.pyi", root.parent / "tensorrt" / "__init__.pyi"]
    files = [f for f in files if f.is_file()]
    return files if any(f.name == "tensorrt.pyi" for f in files) else None


STUBS = _stub_paths()
needs_stubs = pytest.mark.skipif(STUBS is None, reason="tensorrt-stubs (the 10.x API listing) is not installed")


class UseCollector(ast.NodeVisitor):
    """TensorRT names a module uses: ``trt.X.Y`` chains and attributes of values with a known TensorRT type."""

    def __init__(self, api: StubApi, root: str = "trt"):
        self.api, self.root = api, root
        self.uses: set[str] = set()  # "Class.member" or "Class"
        self.missing: set[str] = set()
        self.env: dict[str, str] = {}  # variable or self-attribute -> TensorRT class

    def _chain(self, node: ast.AST) -> list[str] | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == self.root:
            return list(reversed(parts))
        return None

    def _key(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            return "self." + node.attr
        return None

    def type_of(self, node: ast.AST) -> str | None:
        """The TensorRT class an expression evaluates to, when the stubs say so."""
        if isinstance(node, ast.Call):
            chain = self._chain(node.func)
            if chain and len(chain) == 1 and chain[0] in self.api.classes:
                return chain[0]  # trt.Builder(...)
            if isinstance(node.func, ast.Attribute):
                owner = self.type_of(node.func.value)
                if owner:
                    ok, t = self.api.member_type(owner, node.func.attr)
                    return t if ok and t in self.api.classes else None
            return None
        if isinstance(node, ast.Attribute):
            owner = self.type_of(node.value)
            if owner:
                ok, t = self.api.member_type(owner, node.attr)
                return t if ok and t in self.api.classes else None
            return None
        key = self._key(node)
        return self.env.get(key) if key else None

    def _check_chain(self, chain: list[str]) -> None:
        head = chain[0]
        if head not in self.api.top and head not in self.api.classes:
            self.missing.add(head)
            return
        self.uses.add(head)
        cls = self.api.classes.get(head)
        for name in chain[1:]:
            if cls is None:
                return
            ok, _ = self.api.member_type(cls.name, name)
            if not ok:
                self.missing.add(f"{cls.name}.{name}")
                return
            self.uses.add(f"{cls.name}.{name}")
            cls = cls.nested.get(name)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        t = self.type_of(node.value)
        for tgt in node.targets:
            targets = tgt.elts if isinstance(tgt, ast.Tuple) else [tgt]
            vals = node.value.elts if isinstance(tgt, ast.Tuple) and isinstance(node.value, ast.Tuple) else None
            for i, one in enumerate(targets):
                k = self._key(one)
                tt = self.type_of(vals[i]) if vals is not None else t
                if k and tt:
                    self.env[k] = tt

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute) and node.keywords:
            owner = self.type_of(node.func.value)
            c = self.api.classes.get(owner) if owner else None
            params = c.params.get(node.func.attr) if c else None
            if params is not None and not {"kwargs", "args"} & params:
                for kw in node.keywords:
                    if kw.arg is not None:
                        (self.uses if kw.arg in params else self.missing).add(
                            f"{owner}.{node.func.attr}({kw.arg}=)")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = self._chain(node)
        if chain is not None:
            self._check_chain(chain)
            return  # the whole chain is checked; do not revisit its prefixes
        owner = self.type_of(node.value)
        if owner:
            ok, _ = self.api.member_type(owner, node.attr)
            (self.uses if ok else self.missing).add(f"{owner}.{node.attr}")
        self.generic_visit(node)


def collect(source: str, api: StubApi) -> UseCollector:
    tree = ast.parse(source)
    c = UseCollector(api)
    # two passes so that self-attributes assigned in __init__ are typed before later methods use them
    c.visit(tree)
    c.uses.clear()
    c.missing.clear()
    c.visit(tree)
    return c


@pytest.fixture(scope="module")
def api() -> StubApi:
    return parse_stubs(STUBS)


@needs_stubs
def test_stub_reader_understands_the_listing(api):
    assert len(api.classes) > 150
    assert api.member_type("IBuilderConfig", "set_memory_pool_limit")[0]
    assert api.member_type("Builder", "create_network") == (True, "INetworkDefinition")
    assert api.member_type("Logger", "WARNING")[0] and api.classes["Logger"].bases == ["ILogger"]
    assert api.member_type("Logger", "log")[0] and api.member_type("ILogger", "Severity")[0]
    assert "ERROR" in api.classes["ILogger"].nested["Severity"].members
    assert not api.member_type("IBuilderConfig", "max_workspace_size")[0]  # removed in 10.0
    assert not api.member_type("IExecutionContext", "execute_async_v2")[0]  # removed in 10.0
    assert "nptype" in api.top and "__version__" in api.top


@needs_stubs
def test_every_tensorrt_name_used_exists_in_the_10x_listing(api):
    src = Path(te.__file__).read_text(encoding="utf-8")
    c = collect(src, api)
    exempt = {k for k in te.TRT11_ONLY}
    missing = sorted(m for m in c.missing if m not in exempt)
    assert not missing, f"names not in the TensorRT 10.x API listing: {missing}"
    # the walk really saw the module's TensorRT calls (not a vacuous pass)
    expected = {"Builder", "Builder.create_network", "Builder.build_serialized_network", "Builder.num_DLA_cores",
                "OnnxParser", "OnnxParser.parse_from_file", "OnnxParser.get_error", "OnnxParser.num_errors",
                "IBuilderConfig.set_memory_pool_limit", "MemoryPoolType.WORKSPACE", "IBuilderConfig.set_flag",
                "IBuilderConfig.builder_optimization_level", "IBuilderConfig.create_timing_cache",
                "IBuilderConfig.set_timing_cache", "IBuilderConfig.get_timing_cache", "ITimingCache.serialize",
                "IBuilderConfig.DLA_core", "IBuilderConfig.default_device_type", "DeviceType.DLA",
                "BuilderFlag.GPU_FALLBACK", "BuilderFlag.FP16", "BuilderFlag.INT8",
                "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
                "INetworkDefinition.get_input", "ITensor.shape", "ITensor.name",
                "Builder.create_optimization_profile", "IOptimizationProfile.set_shape",
                "IBuilderConfig.add_optimization_profile", "Runtime", "Runtime.deserialize_cuda_engine",
                "Runtime.DLA_core", "ICudaEngine.create_execution_context", "ICudaEngine.num_io_tensors",
                "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode", "TensorIOMode.INPUT",
                "ICudaEngine.get_tensor_dtype", "IExecutionContext.set_input_shape",
                "IExecutionContext.set_tensor_address", "IExecutionContext.execute_async_v3",
                "IExecutionContext.get_tensor_shape", "ILogger", "ILogger.WARNING", "nptype",
                "IBuilderConfig.set_timing_cache(ignore_mismatch=)"}
    assert expected <= c.uses, f"walk missed: {sorted(expected - c.uses)}"
    assert len(c.uses) >= len(expected)


@needs_stubs
def test_checker_catches_names_removed_from_10x(api):
    bad = """
def f(trt, onnx):
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    config = builder.create_builder_config()
    config.max_workspace_size = 1 << 30
    engine = builder.build_engine(builder.create_network(0), config)
    context = engine.create_execution_context()
    context.execute_async_v2([], 0)
    config.set_flag(trt.BuilderFlag.NOT_A_FLAG)
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatches=True)
"""
    c = collect(bad, api)
    assert {"IBuilderConfig.max_workspace_size", "Builder.build_engine", "BuilderFlag.NOT_A_FLAG",
            "IBuilderConfig.set_timing_cache(ignore_mismatches=)"} <= c.missing


@needs_stubs
def test_version_bound_names_are_declared_honestly(api):
    src = Path(te.__file__).read_text(encoding="utf-8")
    c = collect(src, api)
    for name, source in te.REMOVED_IN_11.items():
        assert name in c.uses, f"{name} is declared 10.x-only but not used"
        assert api.member_type(*name.split("."))[0] and "[" in source  # in 10.x, and a source is cited
    for name, source in te.TRT11_ONLY.items():
        assert not api.member_type(*name.split("."))[0] if "." in name else name not in api.top
        assert "[" in source
