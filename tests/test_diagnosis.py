"""The diagnosis of what a strategy picked: closed forms for its measures, a run's and a comparison's
report sections, and which measures a trailing strategy is said to have moved."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from alab.diagnosis import MEASURES, class_entropy, mean_pairwise_cosine, pick_columns, run_diagnosis, trailing_lines

ROOT = Path(__file__).resolve().parents[1]


def test_mean_pairwise_cosine_closed_forms() -> None:
    assert mean_pairwise_cosine(torch.eye(4)) == pytest.approx(0.0)  # orthogonal
    assert mean_pairwise_cosine(torch.ones(3, 5) * torch.tensor([[1.0], [2.0], [7.0]])) == pytest.approx(1.0)  # one direction
    # [1,0], [0,1], [1,1]: cosines 0, 1/sqrt2, 1/sqrt2 -> mean 2 / (3 sqrt 2)
    assert mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])) == pytest.approx(2 / (3 * math.sqrt(2)))
    assert math.isnan(mean_pairwise_cosine(torch.ones(1, 3)))
    assert mean_pairwise_cosine(torch.ones(2, 1, 2, 2)) == pytest.approx(1.0)  # images are flattened


def test_class_entropy_closed_forms() -> None:
    assert class_entropy([3, 3, 7, 7]) == pytest.approx(math.log(2))
    assert class_entropy(["1"] * 5) == 0.0
    assert class_entropy(list(range(10))) == pytest.approx(math.log(10))
    assert math.isnan(class_entropy([]))


def test_pick_columns_average_the_picks_and_compare_embeddings() -> None:
    def uncertainty(x):
        return {"epistemic": x[:, 0], "aleatoric": x[:, 1]}

    picked, random = torch.tensor([[1.0, 3.0], [3.0, 5.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    columns = pick_columns(uncertainty, lambda x: x, picked, random)
    assert columns["pick_epistemic"] == 2.0 and columns["pick_aleatoric"] == 4.0
    assert columns["pick_similarity"] == pytest.approx(18 / math.sqrt(10 * 34)) and columns["random_similarity"] == pytest.approx(0.0)


def write_run(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    pd.DataFrame({
        "round": [0, 1, 2], "n_labeled": [4, 6, 8], "accuracy": [0.5, 0.6, 0.7], "nll": [1.0, 0.9, 0.8],
        "pick_epistemic": [0.1, 0.3, math.nan], "pick_aleatoric": [0.3, 0.1, math.nan],
        "pick_similarity": [0.5, 0.9, math.nan], "random_similarity": [0.4, 0.2, math.nan],
    }).to_csv(run_dir / "curve.csv", index=False)  # fmt: skip
    labels = [(0, 0, 0), (1, 1, 0), (2, 0, 0), (3, 1, 0), (4, 2, 1), (5, 2, 1), (6, 0, 2), (7, "none", 2), (8, 1, 2)]
    pd.DataFrame(labels, columns=["index", "label", "round"]).assign(source="simulated").to_csv(run_dir / "labels.csv", index=False)


def test_run_diagnosis_reads_the_batch_each_round_picked(tmp_path: Path) -> None:
    write_run(tmp_path / "run")
    diagnosis = run_diagnosis(tmp_path / "run")
    assert diagnosis["round"].tolist() == [0, 1]  # the last round selects nothing
    # round 0 picked the batch labelled in round 1 (two 2s), round 1 the batch of round 2 ("none" left out)
    assert diagnosis["class_entropy"].tolist() == pytest.approx([0.0, math.log(2)])
    assert diagnosis["redundancy"].tolist() == pytest.approx([0.1, 0.7])
    assert diagnosis["epistemic_share"].tolist() == pytest.approx([0.25, 0.75])
    assert diagnosis["nll"].tolist() == [1.0, 0.9]


def test_trailing_lines_name_the_measures_that_moved() -> None:
    rows = []
    for seed in range(3):
        jitter = 0.01 * seed
        rows.append({"strategy": "random", "seed": seed, "class_entropy": 2.2 + jitter, "redundancy": jitter,
                     "epistemic_share": 0.5 + jitter, "nll": 0.7 + jitter})  # fmt: skip
        rows.append({"strategy": "bald", "seed": seed, "class_entropy": 1.5 + jitter, "redundancy": 0.2 + jitter,
                     "epistemic_share": 0.5 + jitter, "nll": 0.7 + jitter})  # fmt: skip
        rows.append({"strategy": "powerbald", "seed": seed, "class_entropy": 2.2 + jitter, "redundancy": jitter,
                     "epistemic_share": 0.5 + jitter, "nll": 0.7 + jitter})  # fmt: skip
    diagnosis = pd.DataFrame(rows).assign(dataset="d", backend="b")
    summary = pd.DataFrame({"dataset": "d", "backend": "b", "strategy": ["random", "bald", "powerbald"], "auc_mean": [0.70, 0.68, 0.69]})
    lines = trailing_lines(summary, diagnosis, "auc")
    assert len(lines) == 2
    bald, power = lines
    assert "**bald** trails random" in bald and MEASURES["class_entropy"][0] in bald and MEASURES["redundancy"][0] in bald
    assert MEASURES["nll"][0] not in bald and MEASURES["epistemic_share"][0] not in bald
    assert "none of the four measures moved" in power
    assert trailing_lines(summary.assign(auc_mean=[0.6, 0.68, 0.69]), diagnosis, "auc") == []  # nothing trails
    assert len(trailing_lines(summary, diagnosis, "auc", higher_is_better=False)) == 0  # lower is better: random is worst


def alab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "alab", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_a_comparison_report_shows_what_each_strategy_picked(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('dataset = "digits"\ninitial = 20\nquery_size = 10\nsamples = 4\n[backend]\nepochs = 1\nmin_steps = 20\n'
                      '[compare]\nstrategies = ["bald", "random"]\nseeds = 1\nworkers = 1\n')  # fmt: skip
    result = alab("compare", str(recipe), "--rounds", "2", "--out", str(tmp_path / "cmp"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    curve = pd.read_csv(tmp_path / "cmp" / "cells" / "bald-s0" / "curve.csv")
    assert curve["pick_similarity"].iloc[:2].between(-1, 1).all() and curve["pick_similarity"].iloc[2:].isna().all()
    assert (curve["pick_epistemic"].iloc[:2] >= 0).all() and (curve["pick_aleatoric"].iloc[:2] > 0).all()
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "## What each strategy picked" in report and "| digits | mc_dropout | bald |" in report.split("## What each")[1]
    assert (tmp_path / "cmp" / "diagnosis.png").stat().st_size > 0
    per_round = pd.read_csv(tmp_path / "cmp" / "diagnosis.csv")
    assert sorted(per_round["strategy"].unique()) == ["bald", "random"] and per_round["round"].max() == 1
    run_report = (tmp_path / "cmp" / "cells" / "random-s0" / "report.md").read_text()
    assert "## What it picked" in run_report
