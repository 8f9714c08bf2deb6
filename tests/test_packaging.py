"""What pyproject.toml promises: every module alab imports is installed by `pip install -e .`, install
hints name installable things, and the Python floor it states is the one it works on."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Imported only behind a one-line hint, for the features their extra names: module -> distribution.
OPTIONAL_IMPORTS = {"ray": "ray", "label_studio_sdk": "label-studio-sdk", "httpx": "httpx"}


def _distribution(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_modules() -> dict[str, str]:
    """Top-level name of every absolute import under alab/ -> a file that imports it."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "alab").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    return found


def test_every_module_alab_imports_comes_with_the_plain_install() -> None:
    core = {_distribution(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = {_distribution(r) for group in PYPROJECT["project"]["optional-dependencies"].values() for r in group}
    providers = importlib.metadata.packages_distributions()
    for module, where in _imported_modules().items():
        if module in sys.stdlib_module_names or module in ("alab", "__future__"):
            continue
        distributions = {d.lower().replace("_", "-") for d in providers.get(module, [module])}
        if module in OPTIONAL_IMPORTS:
            assert OPTIONAL_IMPORTS[module] in extras, f"{module} ({where}) is optional but no extra installs it"
        else:
            assert distributions & core, f"{where} imports {module}, which `pip install -e .` does not install ({sorted(distributions)})"


def test_install_hints_never_name_the_unrelated_alab_on_pypi() -> None:
    """The name `alab` on PyPI is someone else's project: a hint installs extras from the clone, or the real package."""
    bad = re.compile(r"pip install\s+['\"]?alab\b")
    for path in [*REPO.glob("*.md"), *REPO.glob("docs/*.md"), *REPO.rglob("alab/**/*.py"), *REPO.glob("tests/*.py"), *REPO.glob("benchmarks/*.py")]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if path.name != Path(__file__).name:
                assert not bad.search(line), f"{path.relative_to(REPO)}:{number}: {line.strip()}"


def _floor() -> tuple[int, int]:
    match = re.fullmatch(r">=\s*3\.(\d+)", PYPROJECT["project"]["requires-python"].split("#")[0].strip())
    assert match, "requires-python should read >=3.N"
    return 3, int(match.group(1))


def test_the_python_floor_is_the_one_the_readme_states_and_the_code_runs_on() -> None:
    floor = _floor()
    assert f"Python {floor[0]}.{floor[1]}+" in (REPO / "README.md").read_text()
    assert sys.version_info[:2] >= floor
    # tomllib is the newest standard module alab needs (3.11); a floor below it fails at import.
    if "tomllib" in _imported_modules():
        assert floor >= (3, 11)


def _python_below_the_floor() -> Path | None:
    minor = _floor()[1] - 1
    candidates = [Path.home() / ".pyenv" / "versions", Path("/usr/bin"), Path("/usr/local/bin")]
    for root in candidates:
        for path in sorted(root.glob(f"3.{minor}.*/bin/python3.{minor}")) + sorted(root.glob(f"python3.{minor}")):
            if path.is_file():
                return path
    return None


@pytest.mark.skipif(_python_below_the_floor() is None, reason="no Python below the stated floor on this machine")
def test_pip_on_a_python_below_the_floor_refuses_to_install(tmp_path: Path) -> None:
    """A user of an older Python gets pip's clear refusal at install time, not an ImportError at the first command."""
    python = _python_below_the_floor()
    subprocess.run([str(python), "-m", "venv", str(tmp_path / "venv")], check=True)
    result = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "python"), "-m", "pip", "install", "--dry-run", "--no-deps", "--quiet", str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "requires a different Python" in result.stderr, result.stderr
