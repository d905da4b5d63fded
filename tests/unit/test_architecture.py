"""The shape of the package: imports run one way, modules stay small, store paths live in plash/store.

Read from the source (ast), not by importing: a function-local import
counts as much as a top-level one, an import under `if TYPE_CHECKING:`
(never run) does not.
"""

from __future__ import annotations

import ast
import graphlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "plash"
MAX_LINES = 400


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imported(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The plash modules a module imports, anywhere in it but under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for sub in node.orelse:
                visit(sub)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif base in known:
                    found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(path, name, known) for name, path in known.items()}


def test_the_import_graph_finds_imports_everywhere(tmp_path: Path) -> None:
    # the walker itself: function-local imports count, TYPE_CHECKING ones do not
    (tmp_path / "a.py").write_text("TYPE_CHECKING = False\nif TYPE_CHECKING:\n    import plash.b\n"
                                   "def f():\n    from plash import c\n")
    known = {"plash.a": tmp_path / "a.py", "plash.b": tmp_path / "a.py", "plash.c": tmp_path / "a.py"}
    assert imported(tmp_path / "a.py", "plash.a", known) == {"plash.c"}


def test_no_import_cycle() -> None:
    edges = graph()
    try:
        graphlib.TopologicalSorter(edges).prepare()
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_too_long(name: str) -> None:
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES}): split it along its seams"


def test_only_the_store_names_a_staging_dirs_inside() -> None:
    # the names inside a staging dir (img, img/root, residue, step.json) and the store's mnt are plash/store's
    pattern = re.compile(r"""["'](img|img/root|mnt|residue|step\.json)["']""")
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
                 for path in sorted(PACKAGE.rglob("*.py")) if "store" not in path.relative_to(PACKAGE).parts[:1]
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_no_private_name_is_imported_from_another_package() -> None:
    known = modules()
    offenders = []
    for name, path in known.items():
        own = name.split(".")[:2]
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("plash")
                    and node.module.split(".")[:2] != own):
                offenders += [f"{name}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and a.name != "__version__"]
    assert offenders == []


def test_only_the_engine_imports_httpx() -> None:
    # plash/engine/__init__.py keeps httpx from importing its command-line client: it must run first
    offenders = []
    for name, path in modules().items():
        if name == "plash.engine" or name.startswith("plash.engine."):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{name}: {n}" for n in names if n == "httpx" or n.startswith("httpx.")]
    assert offenders == []


def test_httpx_comes_without_its_command_line_client() -> None:
    # the engine's httpx works, and does not pull in rich, pygments or click (httpx's CLI needs them)
    code = ("import sys; import plash.engine.fetch.http as h; import httpx; "
            "c = h.client(); r = c.build_request('GET', 'http://127.0.0.1/'); "
            "print(r.url, sorted(m for m in ('pygments', 'rich', 'click', 'rich.syntax') if m in sys.modules)); "
            "print(sys.modules['httpx._main'], httpx.main.__module__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert r.returncode == 0, r.stderr
    # the client was never imported: httpx.main is the stub httpx's own __init__ defines in its place
    assert r.stdout.splitlines() == ["http://127.0.0.1/ []", "None httpx"]
