"""No import cycle anywhere in our Python, and every import between our packages is declared.

The import graph is built statically with `ast` from every module of the packages under
ros2_ws/src/*/ and training/ (tests and launch files are not modules of the design), counting
function-level imports too: an import deferred into a function still ties the two modules together,
it only hides the cycle from the interpreter. Edges:

- `import a.b.c` and `from a.b.c import name`: to a.b.c (the nearest module of ours it names);
- `from a.b import c` where a.b.c is a module: to a.b.c alone (the package's __init__ runs first,
  as for any import of a submodule, and is not counted as a dependency of its own).

A cycle is reported with every module in it (strongly connected components, Tarjan's algorithm).
"""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "ros2_ws" / "src"
# Python top-level package -> the ROS package that installs it (training is pip-only: no manifest).
ROS_PACKAGE_OF = {
    "fastwam": "fastwam_policy",
    "fastwam_policy": "fastwam_policy",
    "fastwam_sim": "fastwam_sim",
    "fastwam_bringup": "fastwam_bringup",
    "fastwam_experiments": "fastwam_experiments",
    "fastwam_msgs": "fastwam_msgs",
}


def package_roots() -> list[Path]:
    """Directories whose children are our top-level Python packages."""
    return [*sorted(p for p in SRC.iterdir() if (p / "package.xml").is_file()), ROOT / "training"]


def our_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of our Python packages."""
    modules = {}
    for root in package_roots():
        for top in sorted(p for p in root.iterdir() if (p / "__init__.py").is_file()):
            for path in sorted(top.rglob("*.py")):
                parts = list(path.relative_to(root).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                modules[".".join(parts)] = path
    return modules


def _nearest(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ours that `module` imports anywhere in its file (module or function level)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
            plain = len(submodules) < len(node.names)  # some names are attributes of `base` itself
            targets = submodules + ([base] if plain else [])
        for target in targets:
            nearest = _nearest(target, modules)
            if nearest is not None and nearest != module:
                found.add(nearest)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = our_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (or with a self edge)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_the_finder_sees_a_cycle_through_a_function_level_import(tmp_path):
    """The checker itself: a cycle closed by an import inside a function is found, a chain is not."""
    modules = {"p": tmp_path / "p/__init__.py", "p.a": tmp_path / "p/a.py", "p.b": tmp_path / "p/b.py"}
    (tmp_path / "p").mkdir()
    modules["p"].write_text("")
    modules["p.a"].write_text("from p import b\n")
    modules["p.b"].write_text("def f():\n    from p.a import x\n    return x\n")
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert graph == {"p": set(), "p.a": {"p.b"}, "p.b": {"p.a"}}
    assert cycles(graph) == [["p.a", "p.b"]]
    modules["p.b"].write_text("import os\n")
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert cycles(graph) == []


def test_the_graph_covers_every_package():
    graph = import_graph()
    tops = {name.split(".")[0] for name in graph}
    assert {"fastwam", "fastwam_policy", "fastwam_sim", "fastwam_bringup", "fastwam_experiments"} <= tops
    assert "fastwam_training" in tops
    # one edge that is only a function-level import, so the walk reaches inside functions
    assert "fastwam_bringup.sim_episodes" in graph["fastwam_experiments.sim_towel_fold"]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (each line: the modules of one cycle):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def _declared(package: Path) -> set[str]:
    root = ET.parse(package / "package.xml").getroot()
    tags = ("depend", "exec_depend", "build_depend", "test_depend", "build_export_depend")
    return {element.text.strip() for tag in tags for element in root.iter(tag)}


def _imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imports_between_our_packages_are_declared_in_package_xml():
    """A ROS package whose Python (modules, launch files, tests) imports another of ours declares it,
    and the declared dependencies between our packages form no cycle (rosdep / colcon order)."""
    problems, depends = [], {}
    for package in sorted(p for p in SRC.iterdir() if (p / "package.xml").is_file()):
        declared = _declared(package)
        depends[package.name] = {d for d in declared if d in ROS_PACKAGE_OF.values()}
        for path in sorted(package.rglob("*.py")):
            if path.name == "setup.py":
                continue
            for name in sorted(_imported_packages(path)):
                needed = ROS_PACKAGE_OF.get(name)
                if needed and needed != package.name and needed not in declared:
                    problems.append(
                        f"{path.relative_to(ROOT)}: imports {name} ({needed}), not in package.xml"
                    )
    assert not problems, "\n".join(problems)
    assert not cycles(depends), f"package.xml dependencies in a cycle: {cycles(depends)}"
