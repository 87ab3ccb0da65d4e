"""The shape of the code: imports run one way, without cycles, and no module reaches into
another's private names.

Every module of the installed ``atrous``, ``crf`` and ``nets`` is parsed (not imported), and
every import counts, the function-local ones too (a lazy import hides a cycle from Python, not
from a reader). The layers and what each may import:

==============  ===========================================================
component       may import (besides itself)
==============  ===========================================================
atrous          nothing of the project
crf             nothing of the project
nets.caffe      nothing of the project (file formats only: no layer maths, no PIL)
nets.layers     atrous
nets.engine     nets.layers, nets.caffe, atrous, crf
nets.deeplab    nets.engine and below
nets.app        nets.deeplab and below
nets            (the package's lazy names, ``python -m nets``) anything
==============  ===========================================================

So ``caffe <- engine <- deeplab <- app`` and ``layers <- engine``; a layer may use any
layer below it, never one above.
"""
import ast
import importlib.util
from pathlib import Path

PACKAGES = ("atrous", "crf", "nets")

ALLOWED = {
    "atrous": set(),
    "crf": set(),
    "nets.caffe": set(),
    "nets.layers": {"atrous"},
    "nets.engine": {"nets.layers", "nets.caffe", "atrous", "crf"},
    "nets.deeplab": {"nets.engine", "nets.layers", "nets.caffe", "atrous", "crf"},
    "nets.app": {"nets.deeplab", "nets.engine", "nets.layers", "nets.caffe", "atrous", "crf"},
    "nets": {"nets.app", "nets.deeplab", "nets.engine", "nets.layers", "nets.caffe", "atrous", "crf"},
}

#: Private-looking names that are public API of the standard library (namedtuple's).
PUBLIC_UNDERSCORE = {"_replace", "_asdict", "_fields", "_make"}

#: The only modules that may ask whether kernels run in the CUDA simulator: choosing the
#: backend ("auto" never picks the simulator) and reporting it (``deeplab info``, ``check``).
SIMULATOR_AWARE = {"atrous.backend", "crf.backend", "nets.app.environment", "nets.app.selfcheck"}


def _modules():
    """``{module name: (path, is_package)}`` for every module of the installed packages."""
    modules = {}
    for package in PACKAGES:
        root = Path(importlib.util.find_spec(package).submodule_search_locations[0])
        for path in sorted(root.rglob("*.py")):
            parts = (package,) + path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, (path, _) in MODULES.items()}


def _resolve(module, is_package, node):
    """The project modules an import statement names (the closest existing module for each)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module
        targets = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in MODULES else prefix
                   for alias in node.names]
    resolved = []
    for target in targets:
        if target.split(".")[0] not in PACKAGES:
            continue
        while target not in MODULES and "." in target:
            target = target.rsplit(".", 1)[0]
        resolved.append(target)
    return resolved


def _edges():
    edges = {}
    for name, tree in TREES.items():
        is_package = MODULES[name][1]
        edges[name] = {t for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                       for t in _resolve(name, is_package, node) if t != name}
    return edges


EDGES = _edges()


def _component(module):
    """The layer a module belongs to: the longest key of ALLOWED that prefixes it."""
    return max((c for c in ALLOWED if module == c or module.startswith(c + ".")), key=len)


def test_every_package_module_is_parsed():
    for expected in ("atrous.conv", "crf.lattice", "nets.caffe.wire", "nets.layers.pooling", "nets.engine.net",
                     "nets.deeplab.model", "nets.app.cli"):
        assert expected in MODULES, sorted(MODULES)


def test_no_import_cycles():
    # Tarjan's strongly connected components; any component of more than one module is a cycle.
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(EDGES[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(EDGES):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_follow_the_layers():
    wrong = []
    for module, targets in sorted(EDGES.items()):
        source = _component(module)
        for target in sorted(targets):
            destination = _component(target)
            if destination != source and destination not in ALLOWED[source]:
                wrong.append(f"{module} -> {target} ({source} may import only {sorted(ALLOWED[source])})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_caffe_formats_need_no_image_library():
    for module, tree in TREES.items():
        if _component(module) != "nets.caffe":
            continue
        names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
        names |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not names & {"PIL", "matplotlib", "numba"}, f"{module} imports {names & {'PIL', 'matplotlib', 'numba'}}"


def _own_private_names(tree):
    """Private names a module defines itself: its top-level names, and its classes' attributes and methods."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            own.add(node.name)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
    return {name for name in own if name.startswith("_")}


def test_no_module_reaches_into_another_modules_private_names():
    found = []
    for module, tree in sorted(TREES.items()):
        own = _own_private_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{module}:{node.lineno}: from {node.module or '.'} import {alias.name}")
            elif isinstance(node, ast.Attribute):
                name = node.attr
                if (not name.startswith("_") or name.startswith("__") or name in PUBLIC_UNDERSCORE
                        or name in own or (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                    continue
                found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "private names of other modules used:\n" + "\n".join(found)


def test_production_code_does_not_branch_on_the_simulator():
    branching = [m for m, (path, _) in sorted(MODULES.items())
                 if m not in SIMULATOR_AWARE and "ENABLE_CUDASIM" in path.read_text()]
    assert not branching, (
        f"{branching} ask whether they run in the CUDA simulator: put the launch shape in the package's "
        f"config module, and let the tests set the simulator's (tests/conftest.py)")
