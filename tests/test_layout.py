"""The package's shape, checked from its source: no import circle, functions of a
readable length, names mapped to objects in their registries only."""

import ast
import pathlib

import pytest


PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "jaxmirror"
MAX_CODE_LINES = 80


def _modules() -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every module of the package."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(modules) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its body."""
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                for alias in node.names:
                    # `from . import x` imports the submodule x when x is one.
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_circle():
    """Counting imports inside functions too: no import is placed in a function to
    hide a circle."""
    cycle = _cycle(_imports(_modules()))
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_circles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def _code_lines(node: ast.FunctionDef) -> int:
    """Lines holding code in a function, its docstring and comments excluded."""
    lines = set()
    body = node.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    for statement in body:
        for child in ast.walk(statement):
            if hasattr(child, "lineno") and not (
                isinstance(child, ast.Constant) and isinstance(child.value, str)
            ):
                lines.update(range(child.lineno, child.end_lineno + 1))
    return len(lines)


def test_no_function_is_longer_than_80_code_lines():
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                count = _code_lines(node)
                if count > MAX_CODE_LINES:
                    long.append(f"{name}.{node.name}: {count}")
    assert not long, long


# The user's names for strategies and backends; a comparison against one of them
# outside the registries would branch on a string instead of an object.
_CHOICE_NAMES = {"vmap", "batched", "kernel", "xla", "pallas"}
_REGISTRIES = {"jaxmirror._sweep._strategies", "jaxmirror._kernels._backends"}


def _name_comparisons(tree) -> int:
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for operand in operands:
                values = (
                    [operand]
                    if isinstance(operand, ast.Constant)
                    else list(operand.elts)
                    if isinstance(operand, ast.Tuple | ast.List | ast.Set)
                    else []
                )
                if any(
                    isinstance(v, ast.Constant) and v.value in _CHOICE_NAMES
                    for v in values
                ):
                    count += 1
    return count


def test_strategies_and_backends_are_objects_not_strings():
    counts = {
        name: _name_comparisons(ast.parse(path.read_text()))
        for name, path in _modules().items()
        if name not in _REGISTRIES
    }
    outside = {name: count for name, count in counts.items() if count}
    assert sum(outside.values()) <= 2, outside


@pytest.mark.parametrize("package", ["_sweep", "_kernels"])
def test_the_wings_are_packages(package):
    assert (PACKAGE / package / "__init__.py").is_file()


def test_every_cited_document_is_in_the_repository():
    """Docstrings, help texts and the README cite pages under docs/ that exist, and
    never a file outside the repository (the design notes beside it)."""
    import re

    root = pathlib.Path(__file__).parents[1]
    sources = [*root.joinpath("jaxmirror").rglob("*.py"), root / "README.md"]
    cited = set()
    for path in sources:
        text = path.read_text()
        assert "THEORY.md" not in text and "../shared" not in text, path
        cited |= set(re.findall(r"docs/[\w./-]+\.md", text))
    assert "docs/theory.md" in cited and "docs/configuration.md" in cited
    for page in cited:
        assert (root / page).exists(), page
