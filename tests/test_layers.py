"""The package's import structure: a core at the bottom, evaluation/ above it, the method
families above that, the CLI, API and study runner on top; no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import backdoorlab

PKG = Path(backdoorlab.__file__).parent
FAMILIES = ("attacks", "analysis", "scan", "defenses", "detect")
#: the modules that put the methods together for users: they may import anything
APP = {"cli", "api", "commands", "catalog", "experiment", "report", "zoo", "__main__",
       "__init__"}
#: what each family may import besides the core and evaluation/
ALLOWED = {"attacks": {"attacks"}, "analysis": {"analysis"}, "scan": {"scan"},
           "defenses": {"defenses", "analysis"}, "detect": {"detect"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every backdoorlab module ``path`` imports, at the top or inside a function."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("backdoorlab"):
                found.add(mod)
                # ``from .analysis import consistency`` imports the submodule
                for alias in node.names:
                    if (PKG.parent / (mod.replace(".", "/") + "/" + alias.name + ".py")).exists():
                        found.add(f"{mod}.{alias.name}")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("backdoorlab")}
    return found - {me}


def layer(mod: str) -> tuple[str, str]:
    """(layer, family) of a module: app, family, evaluation or core."""
    parts = mod.split(".")[1:] or ["__init__"]
    if parts[0] in APP and len(parts) == 1:
        return "app", ""
    if parts[0] in FAMILIES:
        return "family", parts[0]
    if parts[0] == "evaluation":
        return "evaluation", ""
    return "core", ""


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PKG.rglob("*.py")}


def violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in g.items():
        kind, fam = layer(mod)
        for dep in deps:
            dkind, dfam = layer(dep)
            if kind == "app":
                continue
            ok = (dkind == "core" or (dkind == "evaluation" and kind != "core")
                  or (dkind == "family" and kind == "family" and dfam in ALLOWED[fam]))
            if not ok:
                bad.append(f"{mod} imports {dep}")
    return sorted(bad)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (a package's __init__ re-exporting its own modules is
    not counted as a cycle with them)."""
    found, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if m.startswith(d + ".") or d not in g:  # a module's own package
                continue
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    return found


def test_no_upward_or_sideways_imports() -> None:
    assert violations(graph()) == []


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_check_catches_a_bad_import() -> None:
    g = graph()
    g["backdoorlab.analysis.probe"] = g["backdoorlab.analysis.probe"] | {
        "backdoorlab.attacks.poison"}
    g["backdoorlab.scoring"] = g["backdoorlab.scoring"] | {"backdoorlab.evaluation.metrics"}
    g["backdoorlab.evaluation.metrics"] = g["backdoorlab.evaluation.metrics"] | {
        "backdoorlab.scoring"}
    assert violations(g) == ["backdoorlab.analysis.probe imports backdoorlab.attacks.poison",
                             "backdoorlab.scoring imports backdoorlab.evaluation.metrics"]
    assert cycles(g)
