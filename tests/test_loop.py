from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

import alab.tasks
from alab.config import OracleConfig, RunConfig
from alab.errors import AlabError
from alab.loop import load_run_config, resume_run, start_run
from alab.oracles import ORACLES
from alab.oracles.simulated import SimulatedOracle

QUIET = staticmethod(lambda line: None)


def run(config: RunConfig, out: Path) -> pd.DataFrame:
    start_run(config, out, echo=lambda line: None)
    return pd.read_csv(out / "curve.csv")


def test_a_run_writes_the_four_files(tmp_path: Path, small_config: RunConfig) -> None:
    curve = run(small_config, tmp_path / "run")
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.toml", "curve.csv", "labels.csv", "run.json", "curve.png"} <= files
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"
    assert list(curve["n_labeled"]) == [20, 30, 40, 50]
    for column in ("round", "accuracy", "nll", "brier", "ece", "train_seconds", "score_seconds", "mean_bald", "mean_entropy"):
        assert column in curve
    assert ((curve["mean_bald"] >= 0) & (curve["mean_bald"] <= curve["mean_entropy"] + 1e-6)).all()
    labels = pd.read_csv(tmp_path / "run" / "labels.csv")
    assert list(labels.columns) == ["index", "label", "round", "source"]
    assert len(labels) == 50 and labels["index"].is_unique
    assert labels.groupby("round").size().tolist() == [20, 10, 10, 10]
    assert labels[labels["round"] == 0]["label"].value_counts().tolist() == [2] * 10  # balanced initial set


def test_same_seed_same_curve_other_seed_other_curve(tmp_path: Path, small_config: RunConfig) -> None:
    a = run(small_config, tmp_path / "a")
    b = run(small_config, tmp_path / "b")
    c = run(dataclasses.replace(small_config, seed=1), tmp_path / "c")
    columns = ["accuracy", "nll", "brier", "ece", "mean_bald"]
    pd.testing.assert_frame_equal(a[columns], b[columns], check_exact=True)
    assert (tmp_path / "a" / "labels.csv").read_text() == (tmp_path / "b" / "labels.csv").read_text()
    assert not a[columns].equals(c[columns])


class CrashingOracle(SimulatedOracle):
    """Answers some labels, then dies like a killed process would (after journaling what it gave)."""

    budget = 0

    def collect(self, *, timeout: float | None = None):
        labels = super().collect(timeout=timeout)
        if CrashingOracle.budget < len(labels) or not labels:  # asked again after a partial answer: die
            given, CrashingOracle.budget = labels[: CrashingOracle.budget], 0
            self._pending = []
            if given:
                return given
            raise KeyboardInterrupt
        CrashingOracle.budget -= len(labels)
        return labels


@pytest.mark.parametrize("crash_after", [25, 34, 40])
def test_resume_after_a_crash_gives_the_uninterrupted_curve(tmp_path: Path, small_config: RunConfig, crash_after: int, monkeypatch) -> None:
    reference = run(small_config, tmp_path / "reference")
    monkeypatch.setitem(ORACLES._items, "crashing", lambda context: CrashingOracle(context.dataset.y_pool))
    CrashingOracle.budget = crash_after
    crashed = dataclasses.replace(small_config, oracle=OracleConfig("crashing"))
    with pytest.raises(KeyboardInterrupt):
        start_run(crashed, tmp_path / "run", echo=lambda line: None)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "stopped"
    assert len(pd.read_csv(tmp_path / "run" / "labels.csv")) == crash_after
    CrashingOracle.budget = 10**6
    resume_run(tmp_path / "run", echo=lambda line: None)
    resumed = pd.read_csv(tmp_path / "run" / "curve.csv")
    pd.testing.assert_frame_equal(resumed[["n_labeled", "accuracy", "nll"]], reference[["n_labeled", "accuracy", "nll"]], check_exact=True)
    assert pd.read_csv(tmp_path / "run" / "labels.csv").equals(pd.read_csv(tmp_path / "reference" / "labels.csv").assign())


def test_resume_does_not_refit_the_rounds_before_its_checkpoint(tmp_path: Path, small_config: RunConfig, monkeypatch) -> None:
    from alab.backends.mc_dropout import MCDropoutBackend

    monkeypatch.setitem(ORACLES._items, "crashing", lambda context: CrashingOracle(context.dataset.y_pool))
    CrashingOracle.budget = 40  # 20 initial, 10 in each of rounds 1 and 2: stops while round 3 is asked
    crashed = dataclasses.replace(small_config, oracle=OracleConfig("crashing"))
    with pytest.raises(KeyboardInterrupt):
        start_run(crashed, tmp_path / "run", echo=lambda line: None)
    fitted: list[int] = []
    fit = MCDropoutBackend.fit
    monkeypatch.setattr(MCDropoutBackend, "fit", lambda self, x, y, *, generator: fitted.append(len(y)) or fit(self, x, y, generator=generator))
    CrashingOracle.budget = 10**6
    resume_run(tmp_path / "run", echo=lambda line: None)
    assert fitted == [50]  # round 3 only: rounds 0-2 were fitted before the stop


def test_a_run_checkpointed_on_a_gpu_resumes_on_a_cpu(tmp_path: Path, small_config: RunConfig, monkeypatch) -> None:
    import pickle

    import torch
    import torch.serialization

    reference = run(small_config, tmp_path / "reference")
    monkeypatch.setitem(ORACLES._items, "crashing", lambda context: CrashingOracle(context.dataset.y_pool))
    CrashingOracle.budget = 34
    with pytest.raises(KeyboardInterrupt):
        start_run(dataclasses.replace(small_config, oracle=OracleConfig("crashing")), tmp_path / "run", echo=lambda line: None)
    checkpoint_path = tmp_path / "run" / "checkpoint.pt"
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    with monkeypatch.context() as patch:  # saved as a CUDA run saves it: every storage tagged "cuda:0"
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(checkpoint, checkpoint_path)
    if not torch.cuda.is_available():
        with pytest.raises((RuntimeError, pickle.UnpicklingError), match="CUDA"):  # torch < 2.6 raises the latter
            torch.load(checkpoint_path, weights_only=True)
    CrashingOracle.budget = 10**6
    resume_run(tmp_path / "run", echo=lambda line: None)
    resumed = pd.read_csv(tmp_path / "run" / "curve.csv")
    pd.testing.assert_frame_equal(resumed[["n_labeled", "accuracy", "nll"]], reference[["n_labeled", "accuracy", "nll"]], check_exact=True)


def test_autocast_from_the_config_reaches_pool_scoring_only(tmp_path: Path, small_config: RunConfig) -> None:
    full = run(dataclasses.replace(small_config, rounds=0), tmp_path / "full")
    low = run(dataclasses.replace(small_config, rounds=0, autocast="bfloat16"), tmp_path / "bf16")
    assert low["accuracy"][0] == full["accuracy"][0] and low["nll"][0] == full["nll"][0]  # evaluation stays float32
    relative = abs(low["mean_bald"][0] - full["mean_bald"][0]) / full["mean_bald"][0]
    assert 0 < relative < 0.05  # bf16 rounding of the products: changed, not broken
    assert 'autocast = "bfloat16"' in (tmp_path / "bf16" / "config.toml").read_text()


def test_resume_of_a_finished_run_changes_nothing(tmp_path: Path, small_config: RunConfig) -> None:
    run(small_config, tmp_path / "run")
    before = (tmp_path / "run" / "curve.csv").read_text()
    resume_run(tmp_path / "run", echo=lambda line: None)
    assert (tmp_path / "run" / "curve.csv").read_text() == before


def test_a_second_run_into_the_same_directory_is_refused(tmp_path: Path, small_config: RunConfig) -> None:
    run(dataclasses.replace(small_config, rounds=0), tmp_path / "run")
    with pytest.raises(AlabError, match="already holds a run"):
        start_run(small_config, tmp_path / "run", echo=lambda line: None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"initial": 5000}, "larger than the pool"),
        ({"rounds": 200, "query_size": 10}, "lower --rounds or --query-size"),
        ({"strategy": "nope"}, "unknown strategy 'nope'; choose one of: badge, bald"),
        ({"oracle": OracleConfig("nope")}, "unknown oracle"),
        ({"dataset": "nope"}, "unknown dataset"),
    ],
)
def test_impossible_runs_are_refused_before_any_file_is_written(tmp_path: Path, small_config: RunConfig, change: dict, message: str) -> None:
    with pytest.raises(AlabError, match=message):
        start_run(dataclasses.replace(small_config, **change), tmp_path / "run", echo=lambda line: None)
    assert not (tmp_path / "run").exists()


def test_pool_subsample_scores_only_that_many(tmp_path: Path, small_config: RunConfig, monkeypatch) -> None:
    """Each round scores exactly pool_subsample unlabeled items, and asks for some of those."""
    scored: list[list[int]] = []  # per round, the pool indices the loop sent to be scored
    score_pool = alab.tasks.score_pool

    def recording_score_pool(networks, x, indices_N, *args, **kwargs):
        scored.append(indices_N.tolist())
        return score_pool(networks, x, indices_N, *args, **kwargs)

    monkeypatch.setattr(alab.tasks, "score_pool", recording_score_pool)
    curve = run(dataclasses.replace(small_config, pool_subsample=50, rounds=1), tmp_path / "run")
    assert len(curve) == 2 and curve["accuracy"].between(0, 1).all()
    labels = pd.read_csv(tmp_path / "run" / "labels.csv")
    assert len(scored) == 2  # rounds 0 and 1
    for r, indices in enumerate(scored):
        assert len(indices) == len(set(indices)) == 50
        assert not set(indices) & set(labels[labels["round"] <= r]["index"])  # only unlabeled items
    assert set(labels[labels["round"] == 1]["index"]) <= set(scored[0])  # round 1's queries come from round 0's subsample


def test_a_schedule_selects_with_its_strategy_below_until_and_the_curve_says_which(tmp_path: Path, small_config: RunConfig) -> None:
    from alab.config import ScheduleStep

    scheduled = dataclasses.replace(small_config, strategy="coreset", schedule=(ScheduleStep(40, "typiclust"),))
    curve = run(scheduled, tmp_path / "scheduled")
    assert curve["n_labeled"].tolist() == [20, 30, 40, 50]
    assert curve["selected_by"].tolist()[:3] == ["typiclust", "typiclust", "coreset"] and pd.isna(curve["selected_by"].iloc[3])
    assert (curve["select_seconds"].iloc[:3] >= 0).all() and pd.isna(curve["select_seconds"].iloc[3])
    assert load_run_config(tmp_path / "scheduled").schedule == scheduled.schedule  # config.toml holds it, enough to rerun
    # Rounds 0 and 1 chose as a typiclust run does (every step before round 2's selection is the same)
    alone = run(dataclasses.replace(small_config, strategy="typiclust"), tmp_path / "typiclust")
    assert alone["selected_by"].tolist()[:3] == ["typiclust"] * 3
    labels = pd.read_csv(tmp_path / "scheduled" / "labels.csv")
    labels_alone = pd.read_csv(tmp_path / "typiclust" / "labels.csv")
    early = lambda frame: frame[frame["round"] <= 2].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(early(labels), early(labels_alone))
    assert not labels[labels["round"] == 3].equals(labels_alone[labels_alone["round"] == 3])


@pytest.mark.parametrize("strategy", ["epig", "badge", "coreset", "cluster_margin", "probcover"])
def test_the_new_rules_resume_after_a_crash_to_the_uninterrupted_picks(tmp_path: Path, small_config: RunConfig, strategy: str, monkeypatch) -> None:
    from alab.config import ScheduleStep

    config = dataclasses.replace(small_config, strategy=strategy, schedule=(ScheduleStep(30, "typiclust"),) if strategy == "coreset" else ())
    reference = run(config, tmp_path / "reference")
    monkeypatch.setitem(ORACLES._items, "crashing", lambda context: CrashingOracle(context.dataset.y_pool))
    CrashingOracle.budget = 34
    with pytest.raises(KeyboardInterrupt):
        start_run(dataclasses.replace(config, oracle=OracleConfig("crashing")), tmp_path / "run", echo=lambda line: None)
    CrashingOracle.budget = 10**6
    resume_run(tmp_path / "run", echo=lambda line: None)
    resumed = pd.read_csv(tmp_path / "run" / "curve.csv")
    columns = ["n_labeled", "accuracy", "nll", "selected_by"]
    pd.testing.assert_frame_equal(resumed[columns], reference[columns], check_exact=True)
    assert (tmp_path / "run" / "labels.csv").read_text() == (tmp_path / "reference" / "labels.csv").read_text()


@pytest.mark.parametrize("source", ["pool", "validation", "test", "file"])
def test_epig_scores_against_the_targets_the_run_names(tmp_path: Path, small_config: RunConfig, source: str, monkeypatch) -> None:
    """Each round draws `epig_targets` of the named set by the seed; their labels are never read."""
    import numpy as np
    import torch

    import alab.selecting
    from alab.data import load_dataset

    dataset = load_dataset("digits", validation=200)
    sets = {"pool": dataset.x_pool, "validation": dataset.x_val, "test": dataset.x_test, "file": dataset.x_test[:30] + 1}
    np.save(tmp_path / "targets.npy", sets["file"].numpy())
    named = str(tmp_path / "targets.npy") if source == "file" else source
    drawn: list[torch.Tensor] = []
    round_scorer = alab.selecting.round_scorer

    def recording(strategy, task, networks, targets, chunk_size):  # type: ignore[no-untyped-def]
        drawn.append(targets)
        return round_scorer(strategy, task, networks, targets, chunk_size)

    monkeypatch.setattr(alab.loop, "round_scorer", recording)
    config = dataclasses.replace(small_config, strategy="epig", validation=200, epig_targets=25, epig_target_inputs=named, rounds=2)
    run(config, tmp_path / "run")
    assert len(drawn) == 2 and all(len(t) == 25 for t in drawn)
    pool_rows = {tuple(row.tolist()) for row in sets[source]}
    assert all(tuple(row.tolist()) in pool_rows for t in drawn for row in t)
    assert not torch.equal(drawn[0], drawn[1])  # a fresh draw each round
