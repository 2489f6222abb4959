"""The package's layering, read from the import statements of every module (no import runs):

    checks      <- torch and numpy only
    priors      <- checks                     (never operators, guided, evaluation, experiments)
    operators   <- checks                     (never priors, guided, evaluation, experiments)
    guided      <- checks, priors, operators  (never evaluation, experiments)
    evaluation  <- checks, priors             (never operators, guided, experiments)
    experiments: everything; the only user of Hydra

Inside ``experiments``, an app is a module that runs on its own (``if __name__ ==
"__main__"``); no module imports an app, so what two apps share lives in the helper modules
(``experiments.shared`` and the helpers of a use's package). Library tests (every test
folder but ``tests/experiments`` and ``tests/adversarial``) never import ``experiments``.

A forbidden import anywhere in a module (also inside a function) fails the test, naming the
module, the line and the rule; so does a cycle among the modules of ``experiments``.
"""

import ast

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HYDRA = {"hydra", "omegaconf"}
FORBIDDEN = {
    "checks": {"priors", "operators", "guided", "evaluation", "experiments"} | HYDRA,
    "priors": {"operators", "guided", "evaluation", "experiments"} | HYDRA,
    "operators": {"priors", "guided", "evaluation", "experiments"} | HYDRA,
    "guided": {"evaluation", "experiments"} | HYDRA,
    "evaluation": {"operators", "guided", "experiments"} | HYDRA,
}
#: Test folders that test the apps (and so import them).
APP_TESTS = ("experiments", "adversarial")


def imports(path: Path, whole: bool = False) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in the file (the full dotted
    name with ``whole``; ``from a import b`` counts as ``a.b``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = (
                [f"{node.module}.{alias.name}" for alias in node.names] if whole else [node.module]
            )
        else:
            continue
        found += [(node.lineno, n if whole else n.split(".")[0]) for n in names]
    return found


def violations(package: str, root: Path = ROOT) -> list[str]:
    """The imports of ``package``'s modules that its layer forbids."""
    out = []
    for path in sorted((root / package).rglob("*.py")):
        for line, target in imports(path):
            if target in FORBIDDEN[package]:
                out.append(f"{path.relative_to(root)}:{line} imports {target}")
    return out


def _module(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_app(path: Path) -> bool:
    """A module that runs on its own."""
    return 'if __name__ == "__main__":' in path.read_text()


def app_violations(root: Path = ROOT) -> list[str]:
    """Imports of an app by any module of ``experiments``."""
    paths = sorted((root / "experiments").rglob("*.py"))
    apps = {_module(p, root) for p in paths if is_app(p)}
    out = []
    for path in paths:
        for line, target in imports(path, whole=True):
            hit = next((a for a in apps if target == a or target.startswith(a + ".")), None)
            if hit is not None:
                out.append(f"{path.relative_to(root)}:{line} imports the app {hit}")
    return out


def cycles(root: Path = ROOT) -> list[list[str]]:
    """Import cycles among the modules of ``experiments`` (each as the modules on it)."""
    paths = {_module(p, root): p for p in sorted((root / "experiments").rglob("*.py"))}
    graph = {
        module: {
            next((m for m in paths if t == m or t.startswith(m + ".")), "")
            for _, t in imports(path, whole=True)
        }
        - {"", module}
        for module, path in paths.items()
    }
    found, state = [], {}

    def visit(module, stack):
        state[module] = "open"
        for nxt in sorted(graph[module]):
            if nxt not in graph or (nxt.startswith(module + ".") or module.startswith(nxt)):
                continue  # a package and its own modules
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_exactly_the_apps_are_runnable():
    """The rule below sees the apps: the main job and the RL app are among them, and no
    helper module is."""
    apps = {_module(p, ROOT) for p in (ROOT / "experiments").rglob("*.py") if is_app(p)}
    assert {"experiments.inverse.restore", "experiments.rl.steering"} <= apps
    assert not {a for a in apps if a.startswith("experiments.shared")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_layer_imports_a_layer_above_it(package):
    assert violations(package) == []


def test_no_module_imports_an_app():
    assert app_violations() == []


def test_experiments_has_no_import_cycle():
    assert cycles() == []


def test_library_tests_never_import_experiments():
    out = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.relative_to(ROOT / "tests").parts[0] in APP_TESTS:
            continue
        out += [
            f"{path.relative_to(ROOT)}:{line}"
            for line, target in imports(path)
            if target == "experiments"
        ]
    assert out == []


def test_the_check_sees_a_forbidden_import(tmp_path):
    """The rule is not vacuous: an operator module importing priors is caught."""
    (tmp_path / "operators").mkdir()
    (tmp_path / "operators" / "bad.py").write_text(
        "import torch\n\n\ndef f():\n    from priors import Denoiser\n    return Denoiser\n"
    )
    assert violations("operators", tmp_path) == ["operators/bad.py:5 imports priors"]


def test_the_checks_see_an_app_imported_and_a_cycle(tmp_path):
    """Planted: a helper importing an app, and two helpers importing each other."""
    shared = tmp_path / "experiments" / "shared"
    shared.mkdir(parents=True)
    (tmp_path / "experiments" / "app.py").write_text(
        'import experiments.shared.a\n\nif __name__ == "__main__":\n    pass\n'
    )
    (shared / "a.py").write_text("from experiments.shared import b\n")
    (shared / "b.py").write_text("def f():\n    from experiments.shared.a import x\n")
    (shared / "c.py").write_text("from experiments import app\n")
    assert app_violations(tmp_path) == [
        "experiments/shared/c.py:1 imports the app experiments.app"
    ]
    assert cycles(tmp_path) == [
        ["experiments.shared.a", "experiments.shared.b", "experiments.shared.a"]
    ]
