"""The package's layering, read from the import statements of every module (no import runs):

    checks     <- torch and numpy only
    priors     <- checks                      (never operators, guided, experiments, hydra)
    operators  <- checks                      (never priors, guided, experiments, hydra)
    guided     <- checks, priors, operators   (never experiments, hydra)
    experiments: everything; the only user of Hydra

A forbidden import anywhere in a module (also inside a function) fails the test, naming the
module, the line and the rule.
"""

import ast

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("checks", "priors", "operators", "guided", "experiments")
FORBIDDEN = {
    "checks": {"priors", "operators", "guided", "experiments", "hydra", "omegaconf"},
    "priors": {"operators", "guided", "experiments", "hydra", "omegaconf"},
    "operators": {"priors", "guided", "experiments", "hydra", "omegaconf"},
    "guided": {"experiments", "hydra", "omegaconf"},
}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(package: str, root: Path = ROOT) -> list[str]:
    """The imports of ``package``'s modules that its layer forbids."""
    out = []
    for path in sorted((root / package).rglob("*.py")):
        for line, target in imports(path):
            if target in FORBIDDEN[package]:
                out.append(f"{path.relative_to(root)}:{line} imports {target}")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_layer_imports_a_layer_above_it(package):
    assert violations(package) == []


def test_the_check_sees_a_forbidden_import(tmp_path):
    """The rule is not vacuous: an operator module importing priors is caught."""
    (tmp_path / "operators").mkdir()
    (tmp_path / "operators" / "bad.py").write_text(
        "import torch\n\n\ndef f():\n    from priors import Denoiser\n    return Denoiser\n"
    )
    assert violations("operators", tmp_path) == ["operators/bad.py:5 imports priors"]
