"""The package layout shows the pipeline: imports only point down the stages (and down the codec's own
stages: tokens -> rule -> restore / format -> settings / interop -> tokenizer), the graph is acyclic,
and no module or function outgrows one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "latok"
CLI = sorted((PACKAGE / "cli").glob("*.py")) if (PACKAGE / "cli").is_dir() else [PACKAGE / "cli.py"]
# io/vae/weights/errors at the bottom, then the codec, then training and evaluation side by side, then corpora
# (which describe clips as evaluation does), then the CLI
STAGES = {"base": 0, "vae": 1, "codec": 2, "training": 3, "evaluation": 3, "corpus": 4, "cli": 5}
# inside latok.codec: plain data and quantisation at the bottom, the facade on top
CODEC_STAGES = {"quantise": 0, "tokens": 1, "rule": 2, "restore": 3, "format": 3, "settings": 4, "interop": 4, "streams": 5, "tokenizer": 6}
PUBLIC_API = ("latok", "latok.merge")  # re-export from every stage
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage(module: str) -> str:
    part = module.split(".")[1] if module.count(".") else "base"
    return part if part in STAGES else "base"


def codec_stage(module: str) -> str:
    return module.split(".")[2]


def imports(typing: bool = False) -> dict[str, set[str]]:
    """Every latok module -> the latok modules it imports (at any depth of the file, lazy imports included;
    with ``typing``, those under ``TYPE_CHECKING`` too)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        found = set()
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block) for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only and not typing:  # annotations only: no import at run time
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
        if module in PUBLIC_API:
            continue
        for target in targets:
            if target == "latok":
                continue
            here, there = stage(module), stage(target)
            if STAGES[there] > STAGES[here] or (STAGES[there] == STAGES[here] and here != there):
                upward.append(f"{module} -> {target}")
            elif here == there == "codec" and module != "latok.codec" and target != "latok.codec":
                inner, outer = codec_stage(module), codec_stage(target)
                if CODEC_STAGES[outer] > CODEC_STAGES[inner] or (CODEC_STAGES[outer] == CODEC_STAGES[inner] and inner != outer):
                    upward.append(f"{module} -> {target}")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(sorted(upward))


def test_every_codec_module_has_a_stage():
    assert {codec_stage(m) for m in _modules() if m.startswith("latok.codec.")} == set(CODEC_STAGES)


def test_import_graph_is_acyclic():
    """Imports inside functions count, and so do those only for type checking (a cycle a reader must follow)."""
    graph = {m: {t for t in targets if t not in ("latok",) and not m == "latok"} for m, targets in imports(typing=True).items()}
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
    source = "".join(path.read_text() for path in CLI)
    for needle in ('== "lit"', '== "auto"', '"lit" in', "fill_name", "psnr(", "ssim(", "* 8 /"):
        assert needle not in source, needle


def test_no_module_or_function_outgrows_one_sitting():
    long_modules = [f"{p.relative_to(PACKAGE.parent)}: {n}" for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    long_functions = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                long_functions.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1}")
    assert not long_modules and not long_functions, f"modules over {MAX_MODULE_LINES} lines: {long_modules}; functions over {MAX_FUNCTION_LINES}: {long_functions}"
