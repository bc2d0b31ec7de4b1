"""ARCHITECTURE.md cites only what exists: every path, module and name it points a reader at.

What it checks (reading the code's syntax trees, importing nothing):
- every backticked path under gan/, flows/, tests/ or infra/ exists (file or folder);
- every dotted `gan.…` name (also inside `python -m …` and `from gan.x import y`) resolves to
  a module, or to a name defined in one;
- `<section>.<field>` config knobs (`train.stream`, `data.image_size`) and `Class.attr` names
  (`ModelConfig.arch`, `Settings.load()`) name a field/attribute that the class defines;
- `<module>.<name>` (`services.ensure_ray_token`), where a module of that name exists in gan/ or
  flows/, names something defined in it (other dotted words, `fake.detach()`, are not code
  citations);
- in the "Where each concern lives" table, the home column: a bare `file.py` after a path is
  that path's sibling, and each backticked name after a file (`gan/x.py` (`fn`, `Cls`)) is
  defined in the file it follows.
And README.md holds no leftover HTML comment (a merge banner, a note to whoever merges): the
front door shows users text, not the history of how it was put together.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "ARCHITECTURE.md"
README = ROOT / "README.md"
TICKED = re.compile(r"`([^`]+)`")
PATH = re.compile(r"^(gan|flows|tests|infra)/[\w./-]*$")
GAN_DOTTED = re.compile(r"\bgan(?:\.\w+)+")
FILE_NAME = re.compile(r"^[\w-]+\.(py|md|json|txt|yaml|png)$")  # `worker.py`, `model_card.md`
IDENT = re.compile(r"^[A-Za-z_]\w*(?:\(\))?$")
DOTTED = re.compile(r"^([A-Za-z_]\w*)\.([A-Za-z_]\w*)(?:\(\))?$")
SECTIONS = {"data": "DataConfig", "model": "ModelConfig", "train": "TrainConfig",
            "eval": "EvalConfig", "gate": "GateConfig", "registry": "RegistryConfig"}
CONFIG = ROOT / "gan" / "core" / "config.py"


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _defined(node: ast.AST) -> set[str]:
    """Names a module (or class body) defines: defs, classes, assignments, imports."""
    names: set[str] = set()
    for n in ast.iter_child_nodes(node):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, ast.Assign):
            names |= {t.id for t in n.targets if isinstance(t, ast.Name)}
        elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
            names.add(n.target.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in n.names}
    return names


def _anywhere(path: Path) -> set[str]:
    """Every function, method, class and top-level or class-level name in a file."""
    names = _defined(_tree(path))
    for n in ast.walk(_tree(path)):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(n.name)
        elif isinstance(n, ast.ClassDef):
            names |= {n.name, *_defined(n)}
    return names


def _class_attrs(cls: str) -> set[str]:
    """Attributes of a class defined anywhere in gan/ (fields, methods), else empty."""
    for path in sorted((ROOT / "gan").rglob("*.py")):
        for n in ast.walk(_tree(path)):
            if isinstance(n, ast.ClassDef) and n.name == cls:
                return _defined(n)
    return set()


def _module_file(dotted: str) -> Path | None:
    base = ROOT / Path(*dotted.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _check_gan_dotted(name: str) -> str | None:
    """None when `gan.a.b.c` is a module or a name one defines; else the problem."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        mod = _module_file(".".join(parts[:i]))
        if mod is None:
            continue
        rest = parts[i:]
        if not rest or rest[0] in _defined(_tree(mod)):
            return None
        return f"{name}: {mod.relative_to(ROOT)} defines no {rest[0]!r}"
    return f"{name}: no such module"


def _modules_named(stem: str) -> list[Path]:
    return [p for top in ("gan", "flows") for p in (ROOT / top).rglob(f"{stem}.py")]


def _check_dotted(token: str) -> str | None:
    """`train.stream`, `ModelConfig.arch`, `Settings.load()`, `services.ensure_ray_token`."""
    m = DOTTED.match(token)
    assert m
    head, attr = m.groups()
    if head in SECTIONS:
        ok = attr in _class_attrs(SECTIONS[head])
        return None if ok else f"{token}: {SECTIONS[head]} has no field {attr!r}"
    if head[0].isupper():
        ok = attr in _class_attrs(head)
        return None if ok else f"{token}: no class {head} with {attr!r} in gan/"
    modules = _modules_named(head)
    if not modules:  # not our code (a variable: `fake.detach()`)
        return None
    if any(attr in _defined(_tree(p)) for p in modules):
        return None
    return f"{token}: {', '.join(str(p.relative_to(ROOT)) for p in modules)} defines no {attr!r}"


def _cited_tokens() -> list[tuple[int, str]]:
    return [(i, t) for i, line in enumerate(DOC.read_text().splitlines(), 1)
            for t in TICKED.findall(line)]


def _home_cells() -> list[tuple[int, str]]:
    """(line, last cell) of each row of the concerns table (two cells, not the header)."""
    out = []
    for i, line in enumerate(DOC.read_text().splitlines(), 1):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 2 and "`" in cells[1]:
            out.append((i, cells[1]))
    return out


def _check_home(cell: str) -> list[str]:
    """A home cell: paths, sibling files, and names that the file before them defines."""
    problems: list[str] = []
    current: Path | None = None
    folder: Path | None = None
    for token in TICKED.findall(cell):
        if PATH.match(token):
            p = ROOT / token
            folder = p if token.endswith("/") else p.parent
            current = p if p.suffix == ".py" else None
        elif token.endswith(".py") and "/" not in token:
            if folder is None or not (folder / token).is_file():
                problems.append(f"{token}: not a file in {folder}")
                continue
            current = folder / token
        elif IDENT.match(token) and current is not None:
            name = token.removesuffix("()")
            if current.is_file() and name not in _anywhere(current):
                problems.append(f"{token}: not defined in {current.relative_to(ROOT)}")
    return problems


def test_every_cited_path_exists() -> None:
    missing = [f"line {i}: {t}" for i, t in _cited_tokens()
               if PATH.match(t) and not (ROOT / t).exists()]
    assert not missing, "ARCHITECTURE.md cites paths that do not exist:\n" + "\n".join(missing)


def test_every_cited_gan_module_and_name_exists() -> None:
    problems = [f"line {i}: {p}" for i, t in _cited_tokens() for name in GAN_DOTTED.findall(t)
                if (p := _check_gan_dotted(name))]
    for i, t in _cited_tokens():  # `from gan.registry import load_generator`
        m = re.match(r"^from (gan(?:\.\w+)*) import (\w+)$", t)
        if m and (p := _check_gan_dotted(f"{m[1]}.{m[2]}")):
            problems.append(f"line {i}: {p}")
    assert not problems, "ARCHITECTURE.md cites missing modules/names:\n" + "\n".join(problems)


def test_every_cited_dotted_name_exists() -> None:
    problems = [f"line {i}: {p}" for i, t in _cited_tokens()
                if DOTTED.match(t) and not t.startswith("gan.") and not FILE_NAME.match(t)
                and (p := _check_dotted(t))]
    assert not problems, "ARCHITECTURE.md cites missing names:\n" + "\n".join(problems)


def test_every_name_in_the_concerns_table_is_defined_where_it_says() -> None:
    cells = _home_cells()
    assert len(cells) > 40, "the concerns table was not found"
    problems = [f"line {i}: {p}" for i, cell in cells for p in _check_home(cell)]
    assert not problems, "ARCHITECTURE.md's table names code that is not there:\n" + \
        "\n".join(problems)


def test_the_checker_catches_what_it_is_for() -> None:
    """A citation of something gone fails each check (the checks can fail)."""
    assert _check_home("`gan/stack/services.py` (`_ray_service`, `no_such_fn`)") == [
        "no_such_fn: not defined in gan/stack/services.py"]
    assert _check_home("`gan/train/ray/cluster.py`, `nowhere.py`")
    assert _check_dotted("services.ensure_ray_token") and _check_dotted("services.plan") is None
    assert _check_dotted("train.no_such_knob") and _check_dotted("train.stream") is None
    assert _check_dotted("ModelConfig.no_field") and _check_dotted("ModelConfig.arch") is None
    assert _check_gan_dotted("gan.data.prepare.nothing") and _check_gan_dotted("gan.nope")
    assert _check_gan_dotted("gan.data.prepare.prepare") is None


def test_readme_has_no_leftover_comments() -> None:
    found = [f"line {i}: {line.strip()}" for i, line in
             enumerate(README.read_text().splitlines(), 1) if "<!--" in line]
    assert not found, "README.md holds HTML comments (merge leftovers?):\n" + "\n".join(found)
