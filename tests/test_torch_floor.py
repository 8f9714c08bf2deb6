"""The torch floor pyproject.toml states is a torch the code works with: slow (a fresh venv, ~5 GB).

    python -m pytest -m slow tests/test_torch_floor.py

Builds a virtual environment with exactly the stated floor (`torch>=X.Y` -> torch==X.Y.0; from PyPI
that is a CUDA build, which runs on the CPU here), installs alab into it, and runs the tests of the
backends, the loop and scoring there. The ensemble's fused CPU Adam is what sets the floor at 2.4.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def stated_floor() -> str:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch,) = [d for d in dependencies if re.match(r"torch\b", d)]
    match = re.fullmatch(r"torch>=(\d+\.\d+)", torch.replace(" ", ""))
    assert match, f"the torch requirement should read torch>=X.Y, got {torch!r}"
    return match.group(1)


@pytest.mark.slow
def test_the_suite_passes_on_the_stated_torch_floor(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", f"torch=={stated_floor()}.0"], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "-e", f"{REPO}[dev]"], check=True)
    version = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith(f"{stated_floor()}.0"), version.stdout
    result = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_backends.py", "tests/test_loop.py", "tests/test_scoring.py"],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
