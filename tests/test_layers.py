"""Architecture check: every module imports, there is no import cycle between modules, and no import (module-level
or deferred inside a function) runs back up a layer. The layers, bottom up (README "Architecture"):

    0  io, errors, publish, registry, fingerprint, rundir, progress, resources, estimate, lookup
    1  config
    2  data
    3  models, retrieval, llm, embed
    4  train, slices
    5  serve, pipeline, partitioned, forget, report, plan, tune
    6  cli
"""
import ast
import importlib
import pkgutil
from pathlib import Path

import llmcf

LAYERS = {
    "io": 0, "errors": 0, "publish": 0, "registry": 0, "fingerprint": 0, "rundir": 0, "progress": 0, "resources": 0,
    "estimate": 0, "lookup": 0,
    "config": 1,
    "data": 2,
    "models": 3, "retrieval": 3, "llm": 3, "embed": 3,
    "train": 4, "slices": 4,
    "serve": 5, "pipeline": 5, "partitioned": 5, "forget": 5, "report": 5, "plan": 5, "tune": 5,
    "cli": 6,
}
SRC = Path(llmcf.__file__).parent


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(SRC)], "llmcf."))


def top(name: str) -> str:
    return name.split(".")[1] if name.count(".") else ""


def imports_of(name: str) -> set[str]:
    """llmcf modules imported anywhere in ``name``'s source (module level and inside functions)."""
    spec = importlib.util.find_spec(name)
    tree = ast.parse(Path(spec.origin).read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmcf"):
            out.add(node.module)
            for a in node.names:  # `from llmcf import fingerprint` names a module
                if importlib.util.find_spec(f"{node.module}.{a.name}") if node.module == "llmcf" else False:
                    out.add(f"{node.module}.{a.name}")
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("llmcf"))
    return {m for m in out if m != "llmcf"}


def test_every_module_imports():
    for name in modules():
        importlib.import_module(name)


def test_every_module_has_a_layer():
    missing = sorted({top(m) for m in modules()} - set(LAYERS) - {""})
    assert not missing, f"modules without a layer in LAYERS: {missing}"


def test_no_import_runs_up_a_layer():
    bad = []
    for name in modules():
        for dep in imports_of(name):
            if LAYERS[top(dep)] > LAYERS[top(name)]:
                bad.append(f"{name} -> {dep}")
    assert not bad, "imports running up a layer:\n" + "\n".join(bad)


def test_no_module_level_import_cycle():
    graph = {}
    for name in modules():
        spec = importlib.util.find_spec(name)
        tree = ast.parse(Path(spec.origin).read_text())
        deps = set()
        for node in tree.body:  # module-level imports only: deferred ones cannot form an import-time cycle
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmcf."):
                deps.add(node.module)
        # a registry package importing its own submodules (which register themselves in it) is the one allowed loop
        graph[name] = {d for d in deps if d in set(modules()) and d != name and not d.startswith(name + ".")}
    state: dict[str, int] = {}

    def visit(n, path):
        state[n] = 1
        for d in graph.get(n, ()):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [n, d]))
            if d not in state:
                visit(d, path + [n])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [])


def test_old_llm_module_paths_name_the_moved_modules():
    from llmcf.llm import _MOVED

    for old, new in _MOVED.items():
        a, b = importlib.import_module(old), importlib.import_module(new)
        assert a is b and b.__spec__.name == new and b.__spec__.origin.endswith(".py")
