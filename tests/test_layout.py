"""The package's floors: every module sits on one, imports only its own floor or lower ones, and no
import (deferred ones included) closes a loop. A new module must be given its floor here."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cuptycho"

# lowest first; a module may import modules of its own floor or below, never above
FLOORS = [
    # ground: the standard library, devices, array-free helpers
    {"_version", "atomic", "backend", "geometry", "_build", "_nvrtc", "fft"},
    # the model's pieces: the reference (oracle), the launchers, argument checks, units, schedules
    {"reference", "validation", "units", "schedules", "registration", "budget", "parallel", "patterns", "launchers",
     "launchers._core",
     "launchers.adam", "launchers.exitwave", "launchers.likelihood", "launchers.pie", "launchers.propagate",
     "launchers.sampling"},
    # the model on the kernels, the dispatch, and what works on arrays with them; the containers
    {"model", "ops", "optimiser", "regularisers", "constraints", "metrics", "preprocess", "images", "probes", "scans",
     "objects", "dataset", "result", "patch_means", "memory_plan"},
    # the public functions, initial guesses, the simulator, files, the option schema
    {"api", "initial", "simulate", "io", "io._common", "io.frames", "io.pipeline", "io.cxi", "io.npz", "io.tiff",
     "io.results", "settings", "tables"},
    # the engines
    {"engine", "pie", "checkpoint", "divergence", "detector", "focus", "distributed", "guesses", "position_step",
     "position_search", "data_rows"},
    {"engines"},
    # runs from files, reports
    {"config", "defaults", "run", "report"},
    # the front doors
    {"cli", "__init__", "__main__"},
]
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}


def _modules():
    return {str(p.relative_to(PACKAGE).with_suffix("")).replace("/", ".").removesuffix(".__init__") or "__init__": p
            for p in PACKAGE.rglob("*.py")}


def _imports(name, path):
    """The package modules `name` imports, at the top or deferred inside a function."""
    package = name.rsplit(".", 1)[0] if "." in name and path.name != "__init__.py" else \
        (name if path.name == "__init__.py" and name != "__init__" else "")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("cuptycho"):
                    continue
                base = node.module.removeprefix("cuptycho").lstrip(".")
            else:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                out.add(candidate if candidate in MODULES else base or "__init__")
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("cuptycho.") for a in node.names if a.name.startswith("cuptycho.")}
    return {m for m in out if m in MODULES and m != name}


MODULES = _modules()
GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_every_module_has_a_floor():
    assert sorted(set(MODULES) - set(FLOOR)) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_import_reaches_a_higher_floor(name):
    up = sorted(m for m in GRAPH[name] if FLOOR.get(m, 99) > FLOOR.get(name, -1))
    assert up == [], f"{name} (floor {FLOOR.get(name)}) imports {up} from higher floors"


def test_no_import_loop():
    seen, done = [], set()

    def visit(node):
        if node in seen:
            raise AssertionError("import loop: " + " -> ".join(seen[seen.index(node):] + [node]))
        if node in done:
            return
        seen.append(node)
        for nxt in sorted(GRAPH[node]):
            visit(nxt)
        seen.pop()
        done.add(node)

    for name in sorted(GRAPH):
        visit(name)
