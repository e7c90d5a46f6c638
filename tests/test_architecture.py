"""ARCHITECTURE.md against the code: each module's "knows about" cell lists exactly the package modules it imports,
every module has a row, and no module imports from a layer above its own.  No import circles either."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "lowlight_gpu"


def module_name(path):
    """'synth/native' for lowlight_gpu/synth/native.py, 'synth' for its __init__.py, '__init__' for the package's."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return "/".join(parts)


def imports():
    """{module: set of package modules it imports} from every import statement, lazy ones included."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name.split("/") if path.name == "__init__.py" and name != "__init__" else name.split("/")[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[:len(package) - node.level + 1]
                mod = "/".join(base + (node.module.split(".") if node.module else []))
                targets = [f"{mod}/{a.name}".strip("/") if f"{mod}/{a.name}".strip("/") in files else mod
                           for a in node.names]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                targets = ["/".join(m.split(".")[1:]) or "__init__" for m in mods if m.split(".")[0] == "lowlight_gpu"]
            for t in targets:
                t = t or "__init__"
                while t and t not in files:
                    t = t.rpartition("/")[0]
                if t and t != name:
                    found.add(t)
        graph[name] = found
    return graph


def documented():
    """[(layer number, module, set of modules its 'knows about' cell names)] from ARCHITECTURE.md's tables."""
    rows, layer = [], None
    for line in (REPO / "ARCHITECTURE.md").read_text().splitlines():
        heading = re.match(r"### (\d+)\. ", line)
        if heading:
            layer = int(heading.group(1))
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| `") else None
        if layer is None or not cells or len(cells) != 3:
            continue
        module = cells[0].strip("`").removesuffix(".py").removesuffix("/__init__")
        rows.append((layer, module, set(re.findall(r"`([^`]+)`", cells[2]))))
    return rows


def test_every_module_has_one_row_and_its_imports_are_its_cell():
    graph, rows = imports(), documented()
    modules = [m for _, m, _ in rows]
    assert sorted(modules) == sorted(graph), f"rows missing: {set(graph) - set(modules)}; extra: {set(modules) - set(graph)}"
    wrong = [f"{m}: documented {sorted(cell)}, imports {sorted(graph[m])}" for _, m, cell in rows if cell != graph[m]]
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_from_a_higher_layer():
    layer = {m: n for n, m, _ in documented()}
    up = [f"{m} (layer {layer[m]}) imports {d} (layer {layer[d]})" for m, deps in imports().items()
          for d in deps if layer[d] > layer[m]]
    assert not up, "\n".join(up)


def test_no_import_circles():
    graph = imports()
    seen, on_path = set(), []

    def visit(m):
        if m in on_path:
            raise AssertionError("import circle: " + " -> ".join(on_path[on_path.index(m):] + [m]))
        if m in seen:
            return
        on_path.append(m)
        for d in sorted(graph[m]):
            visit(d)
        on_path.pop()
        seen.add(m)

    for m in sorted(graph):
        visit(m)
