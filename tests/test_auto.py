"""`auto`, the recommended strategy and the default: exactly its documented rule (BatchBALD from the
first round; epistemic variance for regression), named in each round's curve row, after a run's own
[[schedule]] steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from alab.acquisition.auto import RULES
from alab.config import RunConfig, config_from_dict
from alab.loop import build_parts, start_run

ROOT = Path(__file__).resolve().parents[1]
RULE = RULES["classification"]
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


def test_auto_is_the_default_follows_a_schedule_and_suits_regression() -> None:
    assert build_parts(config()).final == RULE  # no strategy named: auto's rule
    steps = build_parts(config(strategy="auto", schedule=[{"until": 40, "strategy": "random"}]))
    assert steps.strategy_at(30)[0] == "random" and steps.strategy_at(40)[0] == RULE
    regression = build_parts(RunConfig(dataset="diabetes", strategy="auto", initial=20, rounds=5))
    assert regression.final == RULES["regression"] == "epistemic_variance"


def alab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "alab", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_alab_strategies_lists_auto_and_a_regression_compare_takes_it(tmp_path: Path) -> None:
    listed = alab("strategies", cwd=tmp_path)
    assert any(line.startswith("auto ") and RULE in line and RULES["regression"] in line for line in listed.stdout.splitlines())
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('dataset = "diabetes"\ninitial = 20\nquery_size = 10\n[backend]\nmin_steps = 50\nepochs = 1\n[compare]\nstrategies = ["auto", "random"]\nseeds = 1\nworkers = 1\n')
    done = alab("compare", str(recipe), "--rounds", "1", "--out", str(tmp_path / "cmp"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    curve = pd.read_csv(tmp_path / "cmp" / "cells" / "auto-s0" / "curve.csv")
    assert curve["selected_by"].iloc[0] == "epistemic_variance"
