"""The package layout shows the pipeline: imports only point down the stages, and the graph is acyclic."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "latok"
# io/vae/weights/errors at the bottom, then the codec, then training and evaluation side by side, then the CLI
STAGES = {"base": 0, "vae": 1, "codec": 2, "training": 3, "evaluation": 3, "cli": 4}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage(module: str) -> str:
    part = module.split(".")[1] if module.count(".") else "base"
    return part if part in STAGES else "base"


def imports() -> dict[str, set[str]]:
    """Every latok module -> the latok modules it imports (at any depth of the file, lazy imports included)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        found = set()
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block) for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:  # annotations only: no import at run time
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("latok"):
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("latok"))
        graph[name] = {m for m in found if m in _modules()} - {name}
    return graph


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _modules() -> set[str]:
    return {module_name(path) for path in PACKAGE.rglob("*.py")}


def test_imports_only_point_down_the_pipeline():
    upward = []
    for module, targets in imports().items():
        if module == "latok":  # the public API re-exports from every stage, lazily
            continue
        for target in targets:
            if target == "latok":
                continue
            here, there = stage(module), stage(target)
            if STAGES[there] > STAGES[here] or (STAGES[there] == STAGES[here] and here != there):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(sorted(upward))


def test_import_graph_is_acyclic():
    graph = {m: {t for t in targets if t not in ("latok",) and not m == "latok"} for m, targets in imports().items()}
    graph = {m: {t for t in targets if not m.startswith(t + ".") and t != m.rsplit(".", 1)[0]} for m, targets in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in graph.get(node, ()):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, node, target]))
            if not state.get(target):
                visit(target, [*path, node])
        state[node] = 2

    for node in graph:
        if not state.get(node):
            visit(node, [])


def test_cli_only_parses_and_dispatches():
    """No fill or restoration name is compared in the CLI; no report is computed there."""
    source = (PACKAGE / "cli.py").read_text()
    for needle in ('== "lit"', '== "auto"', '"lit" in', "fill_name", "psnr(", "ssim(", "* 8 /"):
        assert needle not in source, needle
