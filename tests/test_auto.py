"""`auto`, the recommended strategy: exactly its documented rule (BatchBALD from the first round),
named in each round's curve row, refused where it does not apply."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from alab.acquisition.auto import RULE
from alab.config import RunConfig, ScheduleStep, config_from_dict
from alab.errors import AlabError
from alab.loop import build_parts, start_run

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(dataset="digits", initial=20, query_size=10, rounds=4, samples=4, backend={"name": "mc_dropout", "epochs": 1, "min_steps": 20})


def config(**kwargs) -> RunConfig:
    return config_from_dict({**SMALL, **kwargs})


def test_auto_is_its_rule_and_names_it_each_round(tmp_path: Path) -> None:
    start_run(config(strategy="auto"), tmp_path / "auto", echo=lambda line: None)
    start_run(config(strategy=RULE), tmp_path / "rule", echo=lambda line: None)
    curve = pd.read_csv(tmp_path / "auto" / "curve.csv")
    assert curve["selected_by"].tolist()[:4] == [RULE] * 4
    assert (tmp_path / "auto" / "labels.csv").read_text() == (tmp_path / "rule" / "labels.csv").read_text()
    assert 'strategy = "auto"' in (tmp_path / "auto" / "config.toml").read_text()


def test_auto_is_refused_with_a_schedule_or_for_regression() -> None:
    steps = config(strategy="auto", schedule=[{"until": 40, "strategy": "random"}])
    assert steps.schedule == (ScheduleStep(40, "random"),)
    with pytest.raises(AlabError, match="strategy = auto is a schedule of its own"):
        build_parts(steps)
    with pytest.raises(AlabError, match="strategy auto is for classification"):
        build_parts(RunConfig(dataset="diabetes", strategy="auto", initial=20))


def alab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "alab", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_alab_strategies_lists_auto_and_a_compare_takes_it(tmp_path: Path) -> None:
    listed = alab("strategies", cwd=tmp_path)
    assert any(line.startswith("auto ") and RULE in line for line in listed.stdout.splitlines())
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('dataset = "diabetes"\ninitial = 20\nquery_size = 10\n[compare]\nstrategies = ["auto", "random"]\n')
    refused = alab("compare", str(recipe), "--rounds", "1", "--out", str(tmp_path / "cmp"), cwd=tmp_path)
    assert refused.returncode == 2 and "strategy auto is for classification" in refused.stderr
    assert not (tmp_path / "cmp").exists()
