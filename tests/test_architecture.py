"""The house rules of docs/contributing.md, checked on the source with `ast` so they stay true.

- The shared hall never asks which track it is: no comparison with, dict keyed by, or other
  use of a track name outside the wings (abaw/<track>/) and the registry (abaw/track.py),
  and no module outside a wing imports one.
- Wings sit below the pipeline stages: no wing imports a stage (cli, tune, ensemble, submit,
  report, demo, synth, train, extract).
- argparse lives in the CLI layer (abaw/cli/) only; no library function takes a Namespace.
- No import cycle among abaw's modules, imports inside functions included.
- Rooms stay readable: no module over 600 lines, at most two functions over 100 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from abaw.track import TRACKS

PKG = Path(__file__).resolve().parents[1] / "abaw"
WINGS = tuple(TRACKS)  # abaw/<name>/ is the wing of track <name>
STAGES = ("cli", "tune", "ensemble", "submit", "report", "demo", "synth", "train", "extract")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100
MAX_LONG_FUNCTIONS = 2


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in WINGS else None


def _imports(module: str) -> list[tuple[str, int]]:
    """(imported abaw module, line) for every import in `module`, anywhere in the file."""
    out = []
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "abaw"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "abaw":
                continue
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.append((sub if sub in MODULES else node.module, node.lineno))
    return out


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the constant nodes that are docstrings (free to mention a track)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def test_the_rules_see_the_whole_package():
    assert "abaw.track" in MODULES and "abaw.cli" in MODULES
    for name in WINGS:
        assert f"abaw.{name}" in MODULES, f"no wing folder abaw/{name}/ for track {name!r}"


def test_no_track_name_outside_the_wings_and_the_registry():
    found = []
    for module, tree in TREES.items():
        if _wing(module) or module == "abaw.track":
            continue
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in WINGS
                and id(node) not in docs
            ):
                found.append(f"{MODULES[module].relative_to(PKG.parent)}:{node.lineno}")
    assert not found, f"track names in the shared hall (ask the Track instead): {found}"


def test_only_a_wing_imports_its_wing():
    found = [
        f"{module} imports {target} (line {line})"
        for module in TREES
        for target, line in _imports(module)
        if _wing(target) and _wing(target) != _wing(module)
    ]
    assert not found, f"reach a wing through abaw.track.get_track, not an import: {found}"


def test_no_wing_imports_a_pipeline_stage():
    stages = tuple(f"abaw.{s}" for s in STAGES)
    found = [
        f"{module} imports {target} (line {line})"
        for module in TREES
        if _wing(module)
        for target, line in _imports(module)
        if target in stages or target.startswith(tuple(s + "." for s in stages))
    ]
    assert not found, f"wings sit below the stages; move the shared piece to a base module: {found}"


def test_argparse_only_in_the_cli_layer():
    found = []
    for module, tree in TREES.items():
        if module == "abaw.cli" or module.startswith("abaw.cli."):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
                found.append(f"{module}:{node.lineno} imports argparse")
            elif isinstance(node, ast.ImportFrom) and node.module == "argparse":
                found.append(f"{module}:{node.lineno} imports from argparse")
            elif isinstance(node, ast.Name | ast.Attribute) and (
                getattr(node, "id", None) == "Namespace"
                or getattr(node, "attr", None) == "Namespace"
            ):
                found.append(f"{module}:{node.lineno} uses Namespace")
            elif isinstance(node, ast.Constant) and node.value == "argparse.Namespace":
                found.append(f"{module}:{node.lineno} annotates with argparse.Namespace")
    assert not found, f"library functions take typed keyword arguments: {found}"


def test_no_import_cycle():
    graph = {m: sorted({t for t, _ in _imports(m) if t in MODULES and t != m}) for m in MODULES}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                return path[path.index(t) :] + [t]
            if t not in state:
                cycle = visit(t)
                if cycle:
                    return cycle
        path.pop()
        state[m] = 2
        return None

    for m in graph:
        if m not in state:
            cycle = visit(m)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_rooms_stay_readable():
    long_modules = {
        str(p.relative_to(PKG.parent)): n
        for p in MODULES.values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    long_functions = sorted(
        f"{module}.{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for module, tree in TREES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    )
    assert len(long_functions) <= MAX_LONG_FUNCTIONS, (
        f"more than {MAX_LONG_FUNCTIONS} functions over {MAX_FUNCTION_LINES} lines: "
        f"{long_functions}"
    )


@pytest.mark.parametrize("rule", ["track name", "wing import", "stage import", "cycle"])
def test_the_checks_catch_what_they_are_for(rule, monkeypatch):
    """Each check fails on a planted violation (so a green run means something)."""
    planted = {
        "track name": ("abaw.planted", f"X = {WINGS[0]!r} == 1\n"),
        "wing import": ("abaw.planted", f"import abaw.{WINGS[0]}\n"),
        "stage import": (f"abaw.{WINGS[0]}.planted", "from abaw.submit import submit\n"),
        "cycle": ("abaw.planted", "import abaw.planted2\n"),
    }[rule]
    module, source = planted
    monkeypatch.setitem(TREES, module, ast.parse(source))
    monkeypatch.setitem(MODULES, module, PKG / "planted.py")
    if rule == "cycle":
        monkeypatch.setitem(TREES, "abaw.planted2", ast.parse("import abaw.planted\n"))
        monkeypatch.setitem(MODULES, "abaw.planted2", PKG / "planted2.py")
    check = {
        "track name": test_no_track_name_outside_the_wings_and_the_registry,
        "wing import": test_only_a_wing_imports_its_wing,
        "stage import": test_no_wing_imports_a_pipeline_stage,
        "cycle": test_no_import_cycle,
    }[rule]
    with pytest.raises(AssertionError):
        check()
