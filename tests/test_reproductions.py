"""The reproduction recipes run end to end on the real MNIST files, in small: one round, one seed, short fits.

The full runs are commands in the README (hours of CPU); this checks that each recipe's protocol
validates and runs through `alab compare`, and that its report counts in the paper's unit beside the
authors' numbers and lists the protocol in force.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import MNIST_DIR

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--rounds", "1", "--seeds", "1", "--workers", "2", "--set", "samples=4", "--set", "pool_subsample=300",
         "--set", "backend.epochs=1"]  # fmt: skip


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"MNIST files not found at {MNIST_DIR}")
@pytest.mark.parametrize(
    "recipe",
    # CI runs one recipe of each model and protocol family; the other two share them (-m slow runs them)
    ["gal2017-table1", pytest.param("gal2017-q10", marks=pytest.mark.slow), "kirsch2019-mnist",
     pytest.param("kirsch2019-repeated-mnist", marks=pytest.mark.slow)],
)  # fmt: skip
def test_a_reproduction_recipe_runs_and_reports_in_the_papers_unit(tmp_path: Path, recipe: str) -> None:
    path = REPO / "strategies" / f"{recipe}.toml"
    paper = tomllib.loads(path.read_text())["compare"]["paper"]
    strategies = ",".join(list(paper["labels_to_reach"]["0.90"])[:2])
    out = tmp_path / recipe
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "alab", "compare", str(path), "--data-dir", str(MNIST_DIR), "--strategies", strategies, *SMALL,
         "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert f"## Beside the paper: {paper['source']}" in report
    assert f"| strategy | paper, {paper['unit']} | paper's range | ours, {paper['unit']} | ours per seed | seeds reached | ours, total labels |" in report
    protocol = next(line for line in report.splitlines() if line.startswith("Protocol in force"))
    recipe_keys = tomllib.loads(path.read_text())
    for key in ("initial", "query_size", "evaluation", "input_scaling"):
        assert f"{key} = {recipe_keys[key]}" in protocol
    for key in ("schedule", "weight_decay", "model"):
        assert f"{key} = {recipe_keys['backend'][key]}" in protocol
