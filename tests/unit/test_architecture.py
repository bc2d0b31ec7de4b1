"""The package map of ARCHITECTURE.md, enforced: imports point one way, no cycles, fences hold.

Every `import` in `gan/` and `flows/` is read with `ast` — at module level, inside functions
and under `if TYPE_CHECKING:` alike (a hidden import is still a dependency) — and checked
against the layers below. A package may import its own modules and anything of a *lower*
layer; two packages on the same layer are independent of each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (package prefix, layer). The longest matching prefix decides a module's package.
LAYERS: dict[str, int] = {
    "gan.core": 0,
    "gan.io": 1,
    "gan.data": 2,
    "gan.nets": 2,
    "gan.train": 3,
    "gan.train.ray": 4,
    "gan.eval": 5,
    "gan.registry": 6,
    "gan.apps": 7,
    "gan.stack": 7,
    "gan.mlflow_model": 7,  # compatibility path of the model loader (registered versions)
    "gan.apps.studies": 8,
    "gan.tools": 8,
    "flows": 9,
    "gan.cli": 10,
}
# Third-party imports fenced into one package each (DESIGN: "the only importer of ...").
FENCES = {"ray": ("gan.train.ray",), "mlflow": ("gan.registry",), "prefect": ("flows",),
          "prefect_aws": ("flows",)}
# gan.nets holds pure nn.Modules: torch, the standard library and gan.core only.
NETS_ALLOWED_THIRD_PARTY = {"torch"}
STDLIB = {"__future__", "math", "typing", "dataclasses", "collections", "functools"}


def _modules() -> dict[str, Path]:
    mods = {}
    for top in ("gan", "flows"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in the file, relative ones resolved."""
    found = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            found.append((base, node.lineno))
            # `from gan.apps import sampling` imports the module gan.apps.sampling
            found += [(f"{base}.{a.name}", node.lineno) for a in node.names
                      if f"{base}.{a.name}" in MODULES]
    return found


def _package(module: str) -> str | None:
    best = None
    for prefix in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best):
                best = prefix
    return best


def _internal_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for target, _ in _imports(name, path):
            # a package's __init__ always runs before its modules: not a dependency edge
            if target in MODULES and target != name and not name.startswith(target + "."):
                edges[name].add(target)
    return edges


def test_every_module_has_a_package() -> None:
    homeless = [m for m in MODULES if m not in ("gan",) and _package(m) is None]
    assert homeless == [], f"modules outside the package map (ARCHITECTURE.md): {homeless}"


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for name, path in MODULES.items():
        src = _package(name)
        if src is None:
            continue
        for target, line in _imports(name, path):
            dst = _package(target)
            if dst is None or dst == src:
                continue
            if LAYERS[dst] >= LAYERS[src] and not src.startswith(dst + "."):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {src} (layer {LAYERS[src]}) "
                             f"imports {target} ({dst}, layer {LAYERS[dst]})")
    assert wrong == [], "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    edges = _internal_edges()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [])
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("library", sorted(FENCES))
def test_third_party_fences(library: str) -> None:
    allowed = FENCES[library]
    wrong = [f"{path.relative_to(ROOT)}:{line}: {target}"
             for name, path in MODULES.items() for target, line in _imports(name, path)
             if target.split(".")[0] == library
             and not any(name == a or name.startswith(a + ".") for a in allowed)]
    assert wrong == [], f"{library} imported outside {allowed}:\n" + "\n".join(wrong)


def test_nets_import_only_torch_and_core() -> None:
    wrong = []
    for name, path in MODULES.items():
        if _package(name) != "gan.nets":
            continue
        for target, line in _imports(name, path):
            top = target.split(".")[0]
            if top in NETS_ALLOWED_THIRD_PARTY or top in STDLIB or target.startswith(
                    ("gan.core", "gan.nets")):
                continue
            wrong.append(f"{path.relative_to(ROOT)}:{line}: {target}")
    assert wrong == [], "gan.nets must stay pure (torch + gan.core):\n" + "\n".join(wrong)


def test_the_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    """The rules can fail: an upward import written into a copy of a core module is found."""
    bad = tmp_path / "config.py"
    bad.write_text("def f():\n    from gan.registry.publish import register\n")
    found = _imports("gan.core.config", bad)
    assert ("gan.registry.publish", 2) in found
    assert LAYERS[_package("gan.registry.publish")] > LAYERS[_package("gan.core.config")]
