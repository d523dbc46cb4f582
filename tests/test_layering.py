"""The project's structure: every module imports alone, no import cycle, the layers point one way,
and the CLI starts without its heavy libraries."""
from __future__ import annotations

import ast
import doctest
import json
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("denoise_core", "studies", "reports", "denoise_study")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that `name` imports, at module level or inside functions (both count: a
    function-level import that closes a cycle is still a cycle, only deferred)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `from pkg import name`: the module pkg.name, else pkg itself
                t = t.rpartition(".")[0]
            # importing pkg.sub runs pkg/__init__ first: the parent packages are imported too
            while t:
                if t != name:
                    found.add(t)
                t = t.rpartition(".")[0]
    return found


def graph() -> dict[str, set[str]]:
    """Every import edge, parent packages included: `import a.b.c` in module m makes m depend on a, a.b
    and a.b.c. A package whose __init__ imports its own modules then closes a cycle with each of them
    (they import the package's names through it), which is why registries discover their modules on use."""
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_the_import_graph_has_no_cycle():
    g = graph()
    assert len(g) > 30 and "denoise_core.tasks" in g["denoise_core.tasks.denoise"] & g["studies.trainable"]
    assert find_cycle(g) is None, " -> ".join(find_cycle(g))


def test_a_package_that_imports_its_own_modules_is_a_cycle(tmp_path):
    """The shape denoise_core.models had: __init__ imports unets, unets imports MODELS from the package."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from pkg.base import MODELS\nfrom pkg import unets\n")
    (pkg / "base.py").write_text("MODELS = {}\n")
    (pkg / "unets.py").write_text("from pkg.base import MODELS\n")
    known = {"pkg", "pkg.base", "pkg.unets"}
    g = {n: imports_of(n, p, known) for n, p in
         (("pkg", pkg / "__init__.py"), ("pkg.base", pkg / "base.py"), ("pkg.unets", pkg / "unets.py"))}
    assert find_cycle(g) is not None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def reachable(g: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in g.get(todo.pop(), ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def test_layers_point_one_way():
    g = graph()
    for name, deps in g.items():
        if name.startswith("denoise_core"):  # the science imports neither the service nor the report
            assert not {d for d in deps if d.startswith(("studies", "reports"))}, name
    ray_users = {n for n, p in modules().items() if "ray" in {i.split(".")[0] for i in _external(p)}}
    assert ray_users == {"studies.records", "studies.recovery", "studies.scheduler", "studies.searcher",
                         "studies.runner", "studies.trainable", "studies.packing", "studies.baseline_run"}, ray_users
    for reader in ("reports.build", "studies.store", "studies.apply"):  # what status, report, denoise load
        assert not (reachable(g, reader) | {reader}) & ray_users, (reader, reachable(g, reader) & ray_users)
    # denoise_core <- studies <- reports <- denoise_study (the CLI), and the CLI <- studies: no exception
    below = {"denoise_core": (), "studies": ("denoise_core",), "reports": ("denoise_core", "studies"),
             "denoise_study": ("denoise_core", "studies", "reports")}
    for name, deps in g.items():
        layer = name.split(".")[0]
        wrong = {d for d in deps if d.split(".")[0] not in (layer, *below[layer])}
        assert not wrong, (name, wrong)


def _external(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module)
    return out


# one interpreter imports the third-party libraries once, then forks a fresh child per project module: each project
# module still imports alone (no other project module loaded before it), without paying torch's 2 s import 48 times.
# Third-party packages are preloaded whole, so a module that uses a third-party submodule it never imports (say
# scipy.stats) could pass here; project modules and their order, what this test is for, are never preloaded.
_FORK_IMPORT = """
import importlib, json, os, sys, traceback
for lib in os.environ.get("PRELOAD", "numpy torch torchvision pandas scipy sklearn skimage PIL pydantic yaml click "
                          "optuna plotly torchmetrics statsmodels pyarrow ray bm3d").split():
    importlib.import_module(lib)
assert not [m for m in sys.modules if m.split(".")[0] in ("denoise_core", "studies", "reports", "denoise_study")]
failures = {}
for name in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(name)
            msg = ""
        except BaseException:
            msg = traceback.format_exc()[-2000:]
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.waitpid(pid, 0)
    if out:
        failures[name] = out.decode()
print(json.dumps(failures))
"""


def test_every_module_imports_alone():
    """Each project module in a fresh process of its own, so no earlier import hides a missing one or an order
    dependence (forked from one interpreter that preloaded only third-party libraries)."""
    names = sorted(modules())
    r = subprocess.run([sys.executable, "-c", _FORK_IMPORT, *names], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    failures = json.loads(r.stdout.strip().splitlines()[-1])
    assert failures == {}, "\n".join(f"{k}:\n{v}" for k, v in failures.items())


def test_the_import_check_finds_a_module_that_cannot_import_alone(tmp_path):
    """The forked check fails a module whose import raises."""
    (tmp_path / "broken_mod.py").write_text("import denoise_core.no_such_module\n")
    r = subprocess.run([sys.executable, "-c", _FORK_IMPORT, "broken_mod"], cwd=ROOT, capture_output=True, text=True,
                       env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{ROOT}", "PRELOAD": "numpy"})
    assert "No module named 'denoise_core.no_such_module'" in json.loads(r.stdout.strip().splitlines()[-1])["broken_mod"]


def test_reading_a_study_loads_no_ray():
    code = ("import sys, studies.store, studies.apply, reports.build, denoise_study.cli; "
            "print(sorted(m for m in ('ray', 'optuna') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_cli_help_loads_no_heavy_library():
    code = ("import sys; from denoise_study.cli import main\n"
            "try: main(['--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'ray', 'optuna', 'plotly', 'pandas') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip().endswith("[]"), r.stdout + r.stderr


DOCTESTED = ["denoise_core.noise", "denoise_core.losses", "denoise_core.diffusion", "denoise_core.trial",
             "denoise_core.models", "denoise_core.results", "studies.cells", "denoise_core.protocol", "studies.evaluate",
             "studies.spec", "studies.reference", "reports.html"]


@pytest.mark.parametrize("name", DOCTESTED)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, result


MAX_FUNCTION_LINES = 50


def test_every_function_of_the_packages_reads_on_one_screen():
    """No function of the product's packages reaches MAX_FUNCTION_LINES lines (signature, docstring and body): a
    longer one wants splitting where its steps are (score_baselines was 56)."""
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines >= MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long
