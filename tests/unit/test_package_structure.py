"""The package keeps the shape its design promises: imports flow one way, from the CLI down to the
constants (function-level imports included), with no cycle between folders, and no function
grows past 80 lines."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "transduce"

# Lowest first. A module imports from its own folder and from the layers below; pieces that share a
# layer do not import each other.
LAYERS = [
    {"constants"},
    {"config"},
    {"assets"},
    {"data"},
    {"kernels"},
    {"models"},
    {"decoding"},
    {"model_folder"},
    {"evaluation"},
    {"inference", "training"},  # peers: neither imports the other
    {"export"},
    {"serving"},
    {"quickstart", "demo"},
    {"cli"},
    {"__init__", "__main__"},
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
MAX_FUNCTION_LINES = 80


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, (".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))


def _part(module: str) -> str:
    """The top-level piece a module belongs to: transduce.models.rnn -> models, transduce -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """The transduce modules a file imports anywhere in it (`from transduce import kernels` names
    transduce.kernels; relative imports resolved)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] == "transduce"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            if base == "transduce" or (node.level and not node.module):  # names may be modules
                names |= {f"{base}.{a.name}" for a in node.names}
            elif base.split(".")[0] == "transduce":
                names.add(base)
    return names


def _edges():
    for path, module in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for target in _imported(tree, module, path.name == "__init__.py"):
            yield path, module, target


def test_every_top_level_piece_has_a_layer():
    pieces = {_part(module) for _, module in _modules()}
    assert pieces <= set(RANK), f"give these a layer: {sorted(pieces - set(RANK))}"


def test_no_module_imports_from_a_layer_above_it():
    upward = [f"{path.relative_to(PACKAGE.parent)}: imports {target}"
              for path, module, target in _edges()
              if _part(target) != _part(module) and RANK[_part(target)] >= RANK[_part(module)]]
    assert not upward, "\n".join(upward)


def test_no_cycle_between_folders():
    graph: dict[str, set[str]] = {}
    for _, module, target in _edges():
        if _part(target) != _part(module):
            graph.setdefault(_part(module), set()).add(_part(target))
    done, stack = set(), []

    def visit(node):
        assert node not in stack, f"import cycle: {' -> '.join(stack[stack.index(node):] + [node])}"
        if node in done:
            return
        stack.append(node)
        for nxt in graph.get(node, ()):
            visit(nxt)
        stack.pop()
        done.add(node)

    for node in list(graph):
        visit(node)


def test_the_checks_catch_an_upward_import():
    tree = ast.parse("def f():\n    from transduce import inference\n    import transduce.serving.app\n")
    assert _imported(tree, "transduce.models.rnn", False) == {"transduce.inference", "transduce.serving.app"}
    assert RANK[_part("transduce.inference")] > RANK[_part("transduce.models.rnn")]
    tree = ast.parse("from . import rnn\nfrom ..config import Config\n")
    assert _imported(tree, "transduce.models.pointer", False) == {"transduce.models.rnn", "transduce.config"}


def test_no_function_is_over_80_lines():
    long = []
    for path, _ in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "\n".join(long)
