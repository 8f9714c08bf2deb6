"""Trust in a run: its columns and trust.json, the curve it leaves alone, --stop, held-out classes, "none of these"."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from alab.cli import app
from alab.config import BackendConfig, RunConfig
from alab.data import load_dataset
from alab.errors import AlabError
from alab.loop import resume_run, start_run
from alab.oracles import NONE_OF_THESE, ORACLES, Label, Query
from alab.oracles import base as oracles_base
from alab.oracles.base import no_options, register_oracle
from alab.report import write_comparison_report

FAST = BackendConfig("mc_dropout", {"epochs": 2, "min_steps": 10})


def _config(**changes: object) -> RunConfig:
    base = RunConfig(strategy="bald", initial=20, query_size=10, rounds=3, samples=4, backend=FAST)
    return dataclasses.replace(base, **changes)


def _run(tmp_path: Path, name: str, **changes: object) -> Path:
    return start_run(_config(**changes), tmp_path / name, echo=lambda _: None)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_each_round_logs_trust_columns_and_trust_json(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "run")
    curve = pd.read_csv(run_dir / "curve.csv")
    for column in ("aurc_total", "aurc_aleatoric", "aurc_epistemic", "test_total", "pool_epistemic",
                   "stop_overall_uncertainty", "stop_max_uncertainty", "stop_expected_accuracy", "outside_bar"):  # fmt: skip
        assert curve[column].notna().all() and (curve[column] >= 0).all(), column
    assert math.isnan(curve["stop_kappa"].iloc[0]) and curve["stop_kappa"].iloc[1:].between(-1, 1).all()
    torch.testing.assert_close(
        torch.tensor(curve["test_total"].to_numpy()), torch.tensor((curve["test_aleatoric"] + curve["test_epistemic"]).to_numpy())
    )
    assert curve["ood_auroc_bald"].isna().all()  # no OOD set named
    rounds = json.loads((run_dir / "trust.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    assert len(rounds[-1]["retention"]["epistemic"]) == len(rounds[-1]["retention"]["fractions"]) == 20
    assert sum(rounds[-1]["reliability"]["count"]) == 599  # digits' whole test set behind the ECE
    report = (run_dir / "report.md").read_text()
    assert "## Can it be trusted yet" in report and "## When it could have stopped" in report
    assert (run_dir / "trust.png").stat().st_size > 10_000


def test_the_trust_pass_leaves_the_learning_curve_alone(tmp_path: Path) -> None:
    small = _run(tmp_path, "small", trust_items=50, stop_items=40)
    large = _run(tmp_path, "large", trust_items=0, stop_items=500)
    columns = ["n_labeled", "accuracy", "nll", "mean_bald"]
    pd.testing.assert_frame_equal(pd.read_csv(small / "curve.csv")[columns], pd.read_csv(large / "curve.csv")[columns])
    assert _rows(small / "labels.csv") == _rows(large / "labels.csv")


def test_stop_ends_the_run_early_and_resume_keeps_it_ended(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "run", rounds=8, stop="kappa:-1")  # met as soon as three kappas exist: after round 3
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "finished" and status["stopped_by"].startswith("stopped by kappa (threshold -1) after round 3")
    assert len(_rows(run_dir / "curve.csv")) == 4
    assert "ended early: stopped by kappa" in (run_dir / "report.md").read_text()
    resume_run(run_dir, echo=lambda _: None)
    assert len(_rows(run_dir / "curve.csv")) == 4
    never = _run(tmp_path, "never", rounds=4, stop="overall_uncertainty:0")
    assert len(_rows(never / "curve.csv")) == 5 and "stopped_by" not in json.loads((never / "run.json").read_text())


def test_a_bad_stop_rule_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--stop", "kapa", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "unknown stopping rule 'kapa'; rules: kappa, overall_uncertainty" in result.output
    assert not (tmp_path / "run").exists()


def test_held_out_classes_leave_the_pool_and_become_the_ood_set() -> None:
    full = load_dataset("digits")
    held = load_dataset("digits", ood="held_out", ood_classes=[5, 6, 7, 8, 9])
    assert held.classes == ("0", "1", "2", "3", "4")
    assert set(held.y_pool.tolist()) == set(held.y_test.tolist()) == {0, 1, 2, 3, 4}
    assert len(held.y_pool) == int((full.y_pool < 5).sum()) and len(held.y_test) == int((full.y_test < 5).sum())
    assert held.x_ood is not None
    torch.testing.assert_close(held.x_ood, full.x_test[full.y_test >= 5])
    renumbered = load_dataset("digits", ood="held_out", ood_classes=[0, 2])
    assert renumbered.classes == ("1", "3", "4", "5", "6", "7", "8", "9")
    torch.testing.assert_close(renumbered.x_pool[renumbered.y_pool == 0], full.x_pool[full.y_pool == 1])
    noise = load_dataset("digits", ood="noise")
    assert noise.x_ood is not None and noise.x_ood.shape == full.x_test.shape
    assert bool((noise.x_ood >= full.x_test.amin(0)).all() and (noise.x_ood <= full.x_test.amax(0)).all())
    with pytest.raises(AlabError, match="leaving at least two classes"):
        load_dataset("digits", ood="held_out", ood_classes=list(range(9)))


def test_a_run_tells_its_held_out_classes_from_the_test_set(tmp_path: Path) -> None:
    trained = BackendConfig("mc_dropout", {})  # the default training: a model that knows 0-4 (93% at 40 labels)
    run_dir = _run(tmp_path, "ood", ood="held_out", ood_classes=[5, 6, 7, 8, 9], initial=10, samples=8, backend=trained)
    curve = pd.read_csv(run_dir / "curve.csv")
    for score in ("max_prob", "entropy", "bald"):
        assert curve[f"ood_auroc_{score}"].between(0, 1).all() and curve[f"ood_fpr95_{score}"].between(0, 1).all()
    assert (curve["ood_auroc_entropy"] > 0.7).all()  # digits 5-9 look unfamiliar to a model of 0-4 (0.75-0.87 measured)
    # the bar marks 1% of the test set's items by construction, and 10-23% of the held-out classes' (measured)
    assert (curve["ood_outside"] > 0.05).all()
    with pytest.raises(AlabError, match="ood = held_out and ood_classes go together"):
        _config(ood="held_out")


class NoneForSome:
    """A test oracle: the data set's labels, but "none of these" for the first query of every round after the initial set."""

    asked: list[list[int]] = []

    def __init__(self, context: object) -> None:
        self.dataset = context.dataset  # type: ignore[attr-defined]
        self.pending: list[Query] = []

    def request(self, items: Sequence[Query]) -> None:
        self.pending = list(items)
        NoneForSome.asked.append([q.index for q in items])

    def collect(self, *, timeout: float | None = None) -> list[Label]:
        first_of_round = self.pending[0].round > 0
        labels = [Label(q.index, int(self.dataset.y_pool[q.index]), "test") for q in self.pending]
        if first_of_round:
            labels[0] = Label(self.pending[0].index, NONE_OF_THESE, "test")
        self.pending = []
        return labels

    def acknowledge(self, labels: Sequence[Label]) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def none_for_some(monkeypatch: pytest.MonkeyPatch) -> None:
    """The NoneForSome oracle, registered for one test only (the registry's names are part of other tests' messages)."""
    monkeypatch.setattr(ORACLES, "_items", dict(ORACLES._items))
    monkeypatch.setattr(ORACLES, "_summaries", dict(ORACLES._summaries))
    monkeypatch.setattr(oracles_base, "_CHECKS", dict(oracles_base._CHECKS))
    register_oracle("none-for-some", "test oracle", no_options("none-for-some"))(NoneForSome)


def test_none_of_these_is_journaled_kept_out_of_training_and_never_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, none_for_some: None
) -> None:
    from alab.backends.mc_dropout import MCDropoutBackend
    from alab.config import OracleConfig

    fitted: list[tuple[int, set[int]]] = []
    fit = MCDropoutBackend.fit

    def spy(self: MCDropoutBackend, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator) -> MCDropoutBackend:
        fitted.append((len(x), set(y.tolist())))
        return fit(self, x, y, generator=generator)

    monkeypatch.setattr(MCDropoutBackend, "fit", spy)
    NoneForSome.asked = []
    run_dir = _run(tmp_path, "run", oracle=OracleConfig("none-for-some"))
    rows = _rows(run_dir / "labels.csv")
    nones = [int(r["index"]) for r in rows if r["label"] == NONE_OF_THESE]
    assert len(nones) == 3 and [int(r["round"]) for r in rows if r["label"] == NONE_OF_THESE] == [1, 2, 3]
    asked = [i for batch in NoneForSome.asked for i in batch]
    assert len(asked) == len(set(asked))  # no item is asked twice, a "none" answer included
    curve = pd.read_csv(run_dir / "curve.csv")
    assert curve["n_none"].tolist() == [0, 1, 2, 3]
    assert curve["n_labeled"].tolist() == [20, 30, 40, 50]  # answers spent, a "none" answer included
    assert [n for n, _ in fitted] == [20, 29, 38, 47]  # trained on the class labels only
    assert all(classes <= set(range(10)) for _, classes in fitted)


def test_a_comparison_report_shows_trust_and_each_rule_per_strategy(tmp_path: Path) -> None:
    from alab.compare import load_comparison, run_comparison

    recipe = tmp_path / "recipe.toml"
    recipe.write_text('dataset = "digits"\ninitial = 20\nquery_size = 10\nsamples = 4\n[backend]\nepochs = 2\nmin_steps = 10\n'
                      '[compare]\nstrategies = ["bald", "random"]\nseeds = 2\nworkers = 1\n')  # fmt: skip
    comparison = load_comparison(recipe, {"rounds": 4}, out=tmp_path / "cmp")
    run_comparison(comparison, echo=lambda line: None)
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Can it be trusted yet" in report and "## When it could have stopped" in report
    assert "![retention, reliability and AURC per strategy](trust.png)" in report
    assert (tmp_path / "cmp" / "trust.png").stat().st_size > 10_000
    for strategy in ("bald", "random"):
        for rule in ("kappa", "overall_uncertainty", "max_uncertainty", "accuracy_change"):
            assert f"| digits | mc_dropout | {strategy} | {rule} |" in report
    # a run report's table and the comparison's agree on one cell: the rule's stop point is read from its curve alone
    curves = pd.read_csv(tmp_path / "cmp" / "curves.csv")
    assert {"stop_kappa", "aurc_epistemic"} <= set(curves.columns)
    write_comparison_report(tmp_path / "cmp")  # a rebuild from the cells gives the same report
    assert (tmp_path / "cmp" / "report.md").read_text() == report


def test_a_comparison_without_acquisition_rounds_still_reports_trust_and_ood(tmp_path: Path) -> None:
    from alab.compare import load_comparison, run_comparison

    recipe = tmp_path / "recipe.toml"
    recipe.write_text('dataset = "digits"\nood = "held_out"\nood_classes = [5, 6, 7, 8, 9]\ninitial = 40\nrounds = 0\nsamples = 4\n'
                      '[backend]\nepochs = 2\nmin_steps = 10\n[compare]\nstrategies = ["random"]\nseeds = 2\nworkers = 1\n')  # fmt: skip
    run_comparison(load_comparison(recipe, {}, out=tmp_path / "cmp"), echo=lambda line: None)
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "| data set | backend | strategy | seeds | ece | aurc_total |" in report  # kappa needs two rounds; the rest does not
    assert "ood_auroc_bald" in report and "ood_fpr95_bald" in report


def test_a_cell_that_failed_before_its_first_row_is_reported_as_not_finished(tmp_path: Path) -> None:
    import shutil

    from alab.compare import load_comparison, run_comparison

    recipe = tmp_path / "recipe.toml"
    recipe.write_text('dataset = "digits"\nrounds = 0\nsamples = 4\n[backend]\nepochs = 1\nmin_steps = 5\n'
                      '[compare]\nstrategies = ["random"]\nseeds = 1\nworkers = 1\n')  # fmt: skip
    run_comparison(load_comparison(recipe, {}, out=tmp_path / "cmp"), echo=lambda line: None)
    failed = tmp_path / "cmp" / "cells" / "random-s9"
    failed.mkdir()
    shutil.copy(tmp_path / "cmp" / "cells" / "random-s0" / "config.toml", failed / "config.toml")
    (failed / "run.json").write_text(json.dumps({"status": "failed", "error": "AlabError: training diverged in round 0"}))
    write_comparison_report(tmp_path / "cmp")
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "Cells: 1 of 2 finished" in report and "Not finished (left out of every number below): random-s9" in report
