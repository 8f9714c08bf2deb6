"""Divergence: a non-finite loss or score stops the run cleanly (checkpoint intact, resumable), never acquires on NaN."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from alab.backends.mc_dropout import MCDropoutBackend
from alab.cli import app
from alab.config import RunConfig
from alab.errors import AlabError
from alab.loop import non_finite_tensors, resume_run, start_run
from alab.acquisition.base import TopK
from alab.acquisition.strategies import STRATEGIES

QUIET = staticmethod(lambda line: None)
TIMING = ["train_seconds", "score_seconds", "select_seconds"]  # wall times: never equal between two runs


def curve(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "curve.csv").drop(columns=TIMING)


def test_non_finite_tensors_names_every_bad_tensor_in_a_nested_state() -> None:
    state = {
        "network": {"w": torch.tensor([1.0, float("nan")]), "b": torch.zeros(2), "steps": torch.tensor([3])},
        "members": [torch.ones(1), torch.tensor([float("-inf")])],
        "params": {"lr": 0.1},
    }
    assert non_finite_tensors(state) == ["network.w", "members.1"]
    assert non_finite_tensors({"w": torch.zeros(3)}) == []


def test_a_fit_that_diverges_in_round_2_stops_with_round_1_checkpoint_and_resumes_to_the_same_curve(
    tmp_path: Path, small_config: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_run(small_config, tmp_path / "reference", echo=lambda line: None)
    fit = MCDropoutBackend.fit
    fits = []

    def diverging_fit(self: MCDropoutBackend, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator) -> MCDropoutBackend:
        fit(self, x, y, generator=generator)
        fits.append(len(y))
        if len(fits) == 3:  # round 2: what Adam leaves after a NaN loss
            with torch.no_grad():
                next(self._fitted().parameters()).fill_(float("nan"))
        return self

    monkeypatch.setattr(MCDropoutBackend, "fit", diverging_fit)
    run_dir = tmp_path / "run"
    with pytest.raises(AlabError, match=r"training diverged in round 2 \(NaN or inf in network\..*alab resume"):
        start_run(small_config, run_dir, echo=lambda line: None)

    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["round"] == 1 and checkpoint["queries"] is not None  # the last good one, not the NaN fit
    assert non_finite_tensors(checkpoint["backend"]) == []
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert len(pd.read_csv(run_dir / "curve.csv")) == 2  # rounds 0 and 1: nothing was scored with NaN weights

    monkeypatch.setattr(MCDropoutBackend, "fit", fit)
    resume_run(run_dir, echo=lambda line: None)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    pd.testing.assert_frame_equal(curve(run_dir), curve(tmp_path / "reference"), check_exact=True)
    assert (run_dir / "labels.csv").read_bytes() == (tmp_path / "reference" / "labels.csv").read_bytes()


def test_non_finite_scores_stop_the_run_before_acquiring(
    tmp_path: Path, small_config: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def nan_scores(log_probs_K_N_C: torch.Tensor) -> torch.Tensor:
        return torch.full(log_probs_K_N_C.shape[1:2], float("nan"))

    monkeypatch.setitem(STRATEGIES._items, "nan_scores", TopK(acquisition="nan_scores"))
    from alab.acquisition.scores import ACQUISITIONS

    monkeypatch.setitem(ACQUISITIONS._items, "nan_scores", nan_scores)
    config = dataclasses.replace(small_config, strategy="nan_scores")
    run_dir = tmp_path / "run"
    with pytest.raises(AlabError, match="non-finite acquisition scores"):
        start_run(config, run_dir, echo=lambda line: None)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["round"] == 0 and checkpoint["queries"] is None  # fitted, nothing acquired
    assert list(pd.read_csv(run_dir / "labels.csv")["round"].unique()) == [0]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_a_real_divergence_on_the_command_line_is_one_line_exit_2_and_resumable_after_a_fix(tmp_path: Path) -> None:
    config = tmp_path / "diverge.toml"
    config.write_text('dataset = "digits"\nrounds = 1\nsamples = 4\n[backend]\nlr = 1e30\nmin_steps = 40\n')
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--out", str(run_dir)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alab: error: training diverged in round 0"), result.stderr
    assert "Traceback" not in result.output + result.stderr

    # The fix the message names: a sane learning rate in the run's config.toml, then resume.
    saved = (run_dir / "config.toml").read_text()
    assert tomllib.loads(saved)["backend"]["lr"] == 1e30
    (run_dir / "config.toml").write_text(saved.replace("lr = 1e+30", "lr = 0.001"))
    result = CliRunner().invoke(app, ["resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    assert pd.read_csv(run_dir / "curve.csv")["accuracy"].notna().all()
