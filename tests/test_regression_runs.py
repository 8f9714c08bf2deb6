"""Regression end to end: data loaders, the Task seam, the loop on toy1d, every strategy, the CLI on a user's CSV, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from alab.config import BackendConfig, RunConfig
from alab.data import load_dataset
from alab.data.regression import TOY_GAP, TOY_NOISY, toy1d_raw
from alab.errors import AlabError
from alab.loop import start_run
from alab.acquisition.strategies import STRATEGIES
from alab.storage import LabelsJournal
from alab.tasks import Regression, unsupported
from test_cli import alab

REGRESSION_COLUMNS = [
    "round", "n_labeled", "rmse", "nll", "coverage_50", "coverage_90", "coverage_95",
    "train_seconds", "score_seconds", "mean_epistemic", "mean_aleatoric", "selected_by", "select_seconds",
    "pick_epistemic", "pick_aleatoric", "pick_similarity", "random_similarity",
]  # fmt: skip


@pytest.mark.parametrize("name", ["toy1d", "diabetes"])
def test_embedded_regression_sets_load_standardized_inputs_and_raw_targets(name: str) -> None:
    data = load_dataset(name)
    assert data.task == "regression" and data.classes == ()
    assert data.y_pool.dtype == torch.float32 and data.y_pool.shape == (len(data.x_pool),)
    torch.testing.assert_close(data.x_pool.mean(dim=0), torch.zeros(data.input_shape), atol=1e-5, rtol=0)
    assert data.target_mean == pytest.approx(float(data.y_pool.double().mean()))
    assert data.target_std == pytest.approx(float(data.y_pool.double().std()))
    assert load_dataset(name, seed=5).checksum == data.checksum  # the test split is fixed, not seeded
    torch.testing.assert_close(load_dataset(name, seed=5).y_test, data.y_test)


def test_diabetes_is_scikit_learns_with_a_fixed_third_held_out() -> None:
    from sklearn.datasets import load_diabetes

    _, y = load_diabetes(return_X_y=True)
    data = load_dataset("diabetes")
    assert len(data.y_pool) + len(data.y_test) == len(y) == 442 and len(data.y_test) == 147
    assert sorted(np.concatenate([data.y_pool.numpy(), data.y_test.numpy()])) == pytest.approx(sorted(y))


def test_toy1d_has_a_noisy_region_and_a_sparse_gap() -> None:
    x_pool, y_pool, x_test, _ = toy1d_raw()
    in_gap = (x_pool > TOY_GAP[0]) & (x_pool < TOY_GAP[1])
    assert 0 < in_gap.sum() < 0.05 * len(x_pool)
    assert ((x_test > TOY_GAP[0]) & (x_test < TOY_GAP[1])).mean() > 0.2  # the test set covers the gap
    noisy = (x_pool > TOY_NOISY[0] + 0.5) & (x_pool < TOY_NOISY[1] - 0.5)
    residual = y_pool - (np.sin(2 * x_pool) + 0.5 * x_pool)
    quiet = (x_pool < TOY_NOISY[0]) | (x_pool > TOY_NOISY[1])
    assert residual[noisy].std() > 5 * residual[quiet].std()


def test_csv_with_a_target_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"a": rng.normal(size=30), "b": rng.normal(size=30) * 100})
    table["price"] = 3 * table["a"] + 1000
    table.to_csv(tmp_path / "t.csv", index=False)
    data = load_dataset(f"csv:{tmp_path / 't.csv'}", target="price")
    assert data.task == "regression" and data.input_shape == (2,) and len(data.y_pool) == 20 and len(data.y_test) == 10
    assert float(data.y_pool.mean()) == pytest.approx(1000, abs=10)
    with pytest.raises(AlabError, match="no column 'cost'; columns: a, b, price"):
        load_dataset(f"csv:{tmp_path / 't.csv'}", target="cost")
    with pytest.raises(AlabError, match="needs --target COL"):
        load_dataset(f"csv:{tmp_path / 't.csv'}")
    table.assign(b=["x"] * 30).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(AlabError, match="column 'b' is not numeric"):
        load_dataset(f"csv:{tmp_path / 'bad.csv'}", target="price")


def test_regression_targets_are_standardized_by_the_pool_and_metrics_come_back_in_original_units() -> None:
    data = load_dataset("diabetes")
    task = Regression(data)
    z = task.targets([data.target_mean, data.target_mean + data.target_std])
    torch.testing.assert_close(z, torch.tensor([0.0, 1.0]))
    # a network that predicts z = 0 with unit variance: mean target_mean, variance target_std^2
    raw_one = float(np.log(np.expm1(1.0 - 1e-6)))
    networks = lambda x: torch.tensor([0.0, raw_one]).expand(3, len(x), 2)  # noqa: E731
    metrics, _ = task.evaluate(networks, chunk_size=50)
    expected_rmse = float((data.y_test.double() - data.target_mean).square().mean().sqrt())
    assert metrics["rmse"] == pytest.approx(expected_rmse, rel=1e-6)
    scored = task.score(networks, data.x_pool, torch.arange(10), None, chunk_size=4)
    assert scored.summary["mean_aleatoric"] == pytest.approx(data.target_std**2, rel=1e-5)
    assert scored.summary["mean_epistemic"] == pytest.approx(0.0, abs=1e-9)


def test_float_labels_round_trip_through_the_journal(tmp_path: Path) -> None:
    from alab.oracles import Label

    journal = LabelsJournal(tmp_path / "labels.csv")
    journal.append([Label(3, 0.1 + 0.2, "simulated"), Label(4, -151.0, "simulated"), Label(5, 2, "simulated")], 0)
    again = LabelsJournal(tmp_path / "labels.csv").labeled
    assert again[3].label == 0.1 + 0.2 and again[4].label == -151.0 and again[5].label == 2


TOY_RUN = dict(dataset="toy1d", initial=20, query_size=10, rounds=3, samples=20,
               backend=BackendConfig("mc_dropout", {"epochs": 1, "min_steps": 500}))  # fmt: skip


def toy_acquired_x(strategy: str, seed: int, out: Path) -> np.ndarray:
    start_run(RunConfig(strategy=strategy, seed=seed, **TOY_RUN), out, echo=lambda line: None)
    labels = pd.read_csv(out / "labels.csv")
    assert list(pd.read_csv(out / "curve.csv").columns) == REGRESSION_COLUMNS
    return toy1d_raw()[0][labels[labels["round"] > 0]["index"].to_numpy()]


def test_on_the_toy_epistemic_variance_asks_in_the_gap_and_total_variance_in_the_noise(tmp_path: Path) -> None:
    """Total variance chases the noise (aleatoric, which labels cannot reduce); epistemic variance does not."""
    counts = {}
    for strategy in ("epistemic_variance", "total_variance"):
        x = toy_acquired_x(strategy, 0, tmp_path / strategy)
        counts[strategy] = {
            "noisy": int(((x > TOY_NOISY[0]) & (x < TOY_NOISY[1])).sum()),
            "gap": int(((x > TOY_GAP[0]) & (x < TOY_GAP[1])).sum()),
        }
    assert counts["epistemic_variance"]["noisy"] < counts["total_variance"]["noisy"], counts
    assert counts["epistemic_variance"]["gap"] > counts["total_variance"]["gap"], counts


def test_regression_run_via_the_cli_on_a_users_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(90, 2))
    table = pd.DataFrame({"u": x[:, 0], "v": x[:, 1], "y": 50 + 10 * np.sin(x[:, 0]) + x[:, 1] + rng.normal(size=90)})
    table.to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "fast.toml").write_text("[backend]\nepochs = 1\nmin_steps = 60\n")
    args = ["run", "--dataset", f"csv:{tmp_path / 'data.csv'}", "--target", "y", "--strategy", "bald",
            "--initial", "10", "--query-size", "5", "--rounds", "2", "--samples", "8", "--config", str(tmp_path / "fast.toml")]  # fmt: skip
    result = alab(*args, "--out", str(tmp_path / "run"), cwd=tmp_path, check=True)
    assert "finished" in result.stdout
    curve = pd.read_csv(tmp_path / "run" / "curve.csv")
    assert list(curve.columns) == REGRESSION_COLUMNS and list(curve["n_labeled"]) == [10, 15, 20]
    assert curve["rmse"].between(0.1, 50).all() and curve[["coverage_50", "coverage_90"]].stack().between(0, 1).all()
    labels = pd.read_csv(tmp_path / "run" / "labels.csv")
    assert labels["label"].dtype == float and len(labels) == 20
    assert 'target = "y"' in (tmp_path / "run" / "config.toml").read_text()
    mistake = alab("run", "--dataset", "diabetes", "--strategy", "margin", "--out", str(tmp_path / "no"), cwd=tmp_path)
    assert mistake.returncode == 2 and "a regression data set does not support" in mistake.stderr
    assert not (tmp_path / "no").exists()


# One posterior sample: every BALD score is 0 up to the quadrature's rounding, the edge a rule must survive.
DIABETES_RUN = dict(dataset="diabetes", initial=10, query_size=5, rounds=1, samples=1,
                    backend=BackendConfig("mc_dropout", {"epochs": 1, "min_steps": 20}))  # fmt: skip


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_every_strategy_runs_on_a_regression_data_set_or_is_refused_before_it_starts(strategy: str, tmp_path: Path) -> None:
    """What `alab.tasks.unsupported` admits runs to the end; what it refuses never starts (no directory)."""
    config = RunConfig(strategy=strategy, seed=0, **DIABETES_RUN)
    out = tmp_path / "run"
    if unsupported(Regression(load_dataset("diabetes")), STRATEGIES.get(strategy)) is not None:
        with pytest.raises(AlabError, match=rf"^strategy '{strategy}' .*, which a regression data set does not support; choose one of: bald, "):
            start_run(config, out, echo=lambda line: None)
        assert not out.exists()
        return
    start_run(config, out, echo=lambda line: None)
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    labels = pd.read_csv(out / "labels.csv")
    assert len(labels) == labels["index"].nunique() == 15
    assert list(pd.read_csv(out / "curve.csv")["n_labeled"]) == [10, 15]


def test_the_stochastic_rules_serve_regression_and_joint_ones_do_not() -> None:
    task = Regression(load_dataset("diabetes"))
    admitted = {name for name in STRATEGIES.names() if unsupported(task, STRATEGIES.get(name)) is None}
    assert {"powerbald", "softmaxbald", "softrankbald", "bald", "random"} <= admitted
    assert "batchbald" not in admitted and "powerentropy" not in admitted  # joint; max_entropy is classification's


def test_report_of_a_regression_run_via_the_cli(tmp_path: Path) -> None:
    start_run(RunConfig(strategy="bald", seed=0, **{**DIABETES_RUN, "rounds": 2, "samples": 4}), tmp_path / "run", echo=lambda line: None)
    result = alab("report", str(tmp_path / "run"), cwd=tmp_path, check=True)
    assert "run report in" in result.stdout
    curve, summary = pd.read_csv(tmp_path / "run" / "curve.csv"), pd.read_csv(tmp_path / "run" / "summary.csv")
    assert list(summary.columns) == ["rounds", "final_labels", "rmse_auc", "final_rmse", "final_nll", "final_coverage_90", "final_coverage_95"]
    n, rmse = curve["n_labeled"].to_numpy(float), curve["rmse"].to_numpy()
    trapezoids = float(np.sum(np.diff(n) * (rmse[1:] + rmse[:-1]) / 2)) / (n[-1] - n[0])  # the mean RMSE over the labels
    assert summary["rmse_auc"].iloc[0] == pytest.approx(trapezoids, rel=1e-12)
    assert summary["final_rmse"].iloc[0] == pytest.approx(rmse[-1], rel=1e-12)
    assert summary["final_coverage_95"].iloc[0] == pytest.approx(curve["coverage_95"].iloc[-1], rel=1e-12)
    assert (tmp_path / "run" / "curve.png").stat().st_size > 0
