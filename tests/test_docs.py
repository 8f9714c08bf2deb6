"""The docs say what the code does: backend defaults, run statuses, what `-m slow` runs, the crash check's time."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from alab.backends.ensemble import EnsembleParams
from alab.backends.hmc import HMCParams
from alab.backends.laplace import LaplaceParams
from alab.backends.mc_dropout import MCDropoutParams
from alab.backends.sgmcmc import SGMCMCParams
from alab.backends.swag import SWAGParams
from alab.backends.vi import VIParams
from alab.loop import STATUSES

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _value(text: str) -> object:
    text = text.strip().strip("`")
    if text in ("true", "false"):
        return text == "true"
    if text == "{}":
        return {}
    try:
        return float(text)
    except ValueError:
        return text


def documented_defaults(section: str) -> dict[str, object]:
    """key -> default from the `| key | default | meaning |` table under `## `section``."""
    text = (REPO / "docs" / "backends.md").read_text()
    body = text.split(f"## `{section}`", 1)[1].split("\n## ", 1)[0]
    defaults: dict[str, object] = {}
    for row in re.findall(r"^\| (`.+?) \| (.+?) \|", body, flags=re.M):
        keys = re.findall(r"`(\w+)`", row[0])
        values = [v for v in row[1].split(",")] if len(keys) > 1 else [row[1]]
        assert len(values) == len(keys), row
        defaults.update((k, _value(v)) for k, v in zip(keys, values))
    return defaults


BACKEND_PARAMS = {
    "mc_dropout": MCDropoutParams, "ensemble": EnsembleParams, "vi": VIParams,
    "laplace": LaplaceParams, "swag": SWAGParams, "sgmcmc": SGMCMCParams, "hmc": HMCParams,
}  # fmt: skip


def test_every_backend_has_a_defaults_table() -> None:
    from alab.backends import BACKENDS

    assert sorted(BACKEND_PARAMS) == BACKENDS.names()


@pytest.mark.parametrize(("section", "params"), BACKEND_PARAMS.items())
def test_backend_defaults_in_the_docs_are_the_code_defaults(section: str, params: type) -> None:
    code = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default for f in dataclasses.fields(params)}  # type: ignore[misc]
    code = {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for k, v in code.items()}
    assert documented_defaults(section) == code


def test_the_readme_lists_every_run_status() -> None:
    (row,) = [line for line in README.splitlines() if line.startswith("| `run.json` |")]
    assert tuple(re.findall(r"`(\w+)`", row.split("status", 1)[1])) == STATUSES


def test_the_readme_names_every_slow_test_file() -> None:
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "slow", "-n", "0", "-p", "no:cacheprovider"],  # -n 0: one process lists the tests
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    files = {line.split("::")[0] for line in collected.splitlines() if "::" in line}
    assert files
    (line,) = [line for line in README.splitlines() if line.startswith("python -m pytest -m slow")]
    assert {f for f in files if f not in line} == set(), line


def test_the_crash_check_takes_as_long_in_the_readme_as_in_the_harness() -> None:
    docstring = (REPO / "tests" / "crash_harness.py").read_text().split('"""')[1]
    minutes = [re.search(r"([\d.]+) min", text).group(1) for text in (  # type: ignore[union-attr]
        next(line for line in docstring.splitlines() if "--kills 500" in line),
        next(line for line in README.splitlines() if "crash_harness.py --kills 500" in line),
    )]  # fmt: skip
    assert minutes[0] == minutes[1]
