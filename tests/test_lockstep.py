"""Lockstep grids (alab.lockstep): stacked fits, and grids whose cells train together."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import pytest
import torch

from alab.backends.mc_dropout import MCDropoutParams, stackable, train_classifier, train_stacked
from alab.compare import CellTask, load_comparison, make_executor, run_comparison
from alab.lockstep import FitGroup, split
from alab.models import build_model

CASES = {  # input shape, settings: each schedule, L2 on one kernel, shifted images (the MLP flattens them)
    "full": ((12,), {}),
    "keras, one kernel's L2": ((12,), {"schedule": "keras", "batch_size": 10, "weight_decay_on": "head_first_weight"}),
    "resampled, shifted": ((1, 6, 6), {"schedule": "resampled", "epoch_samples": 50, "augment_shift": 2}),
}


def data(shape: tuple[int, ...], n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + m)
    return torch.randn((n, *shape), generator=g), torch.randint(0, 4, (n,), generator=g)


def case_params(case: str) -> MCDropoutParams:
    return MCDropoutParams(model="mlp", epochs=1, min_steps=12, **{"batch_size": 8, **CASES[case][1]})


def fit(case: str, members: list[int], n: int = 24) -> tuple[list[torch.nn.Module], list[torch.Generator]]:
    """Networks m in `members` (their own data, init and generators) trained as one stack."""
    shape = CASES[case][0]
    params = case_params(case)
    networks = [build_model("mlp", shape, 4, torch.Generator().manual_seed(m)) for m in members]
    generators = [torch.Generator().manual_seed(500 + m) for m in members]
    xs, ys = zip(*(data(shape, n, m) for m in members))
    train_stacked(networks, list(xs), list(ys), params, generators)
    return networks, generators


@pytest.mark.parametrize("case", list(CASES))
def test_a_network_trains_to_the_same_bits_in_a_stack_of_any_cells(case: str) -> None:
    """What a lockstep grid's exact resume rests on: a cell's fit does not depend on which cells share its stack."""
    alone, _ = fit(case, [1])
    together, _ = fit(case, [0, 1, 2])
    for a, b in zip(alone[0].parameters(), together[1].parameters()):
        assert torch.equal(a, b)
    other = [p for p in together[0].parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(alone[0].parameters(), other))  # the check can fail


@pytest.mark.parametrize("case", list(CASES))
def test_a_stacked_fit_draws_what_the_solo_fit_draws(case: str) -> None:
    """Same batches, shifts and masks as `train_classifier`: the generator ends in the same state, and the
    weights agree to summation order (the stack computes one gradient product in another order)."""
    shape = CASES[case][0]
    stacked, generators = fit(case, [0, 3])
    params = case_params(case)
    solo = build_model("mlp", shape, 4, torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(503)
    train_classifier(solo, *data(shape, 24, 3), params, generator)
    assert torch.equal(generator.get_state(), generators[1].get_state())
    for a, b in zip(solo.parameters(), stacked[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_the_group_trains_when_every_running_cell_has_asked_and_a_stop_wakes_the_waiting() -> None:
    group = FitGroup(2)
    outcome: list[str] = []
    network = build_model("mlp", (12,), 4, torch.Generator().manual_seed(0))
    params = MCDropoutParams(model="mlp", epochs=1, min_steps=3, batch_size=8)

    def cell() -> None:
        try:
            group.fit(network, *data((12,), 16, 0), params, torch.Generator().manual_seed(0))
            outcome.append("trained")
        except KeyboardInterrupt:
            outcome.append("stopped")

    waiting = threading.Thread(target=cell)
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive() and not outcome  # the other cell has not asked yet
    group.leave()  # ... and never will (its run ended): the waiting fit trains
    waiting.join(5)
    assert outcome == ["trained"]
    second = threading.Thread(target=cell)
    second.start()
    group.stop()
    second.join(5)
    assert outcome == ["trained", "stopped"] or outcome == ["trained", "trained"]  # it may have trained alone first
    with pytest.raises(KeyboardInterrupt):
        group.fit(network, *data((12,), 16, 0), params, torch.Generator().manual_seed(0))


def curves(out: Path) -> dict[str, list[dict[str, str]]]:
    skip = {"train_seconds", "score_seconds", "select_seconds"}
    result = {}
    for path in sorted((out / "cells").glob("*/curve.csv")):
        with open(path, newline="") as f:
            result[path.parent.name] = [{k: v for k, v in row.items() if k not in skip} for row in csv.DictReader(f)]
    return result


RECIPE = """
dataset = "digits"
initial = 10
query_size = 5
rounds = 2
samples = 4
[backend]
name = "mc_dropout"
min_steps = 40
epochs = 1
[compare]
strategies = ["bald", "random"]
seeds = 2
"""


def test_a_lockstep_grid_gives_every_cell_the_same_curve_however_its_cells_are_grouped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = tmp_path / "grid.toml"
    recipe.write_text(RECIPE)
    out = {}
    # Scoring and evaluation on one torch thread in both grids (a cell's sums there follow its threads,
    # as under any executor); the stacked fits always train on one.
    monkeypatch.setattr("alab.compare.cpu_cores", lambda: 1)
    for workers in (1, 2):  # one process of 4 cells, or two of 2
        comparison = load_comparison(recipe, {"workers": workers}, out=tmp_path / f"w{workers}")
        assert [len(b) for b in split([CellTask(c.config, comparison.out / c.name) for c in comparison.cells()], workers)] == [4 // workers] * workers
        results = run_comparison(comparison, make_executor("lockstep", workers), echo=lambda line: None)
        assert {r.status for r in results} == {"finished"}
        out[workers] = curves(comparison.out)
    assert len(out[1]) == 4 and out[1] == out[2]
    assert out[1]["bald-s0"] != out[1]["bald-s1"]
    for cell in out[1]:
        journals = [(tmp_path / f"w{w}" / "cells" / cell / "labels.csv").read_bytes() for w in (1, 2)]
        assert journals[0] == journals[1]


def test_cells_of_another_backend_run_one_a_process(tmp_path: Path) -> None:
    recipe = tmp_path / "grid.toml"
    recipe.write_text(RECIPE.replace('name = "mc_dropout"', 'name = "ensemble"\nmembers = 2'))
    comparison = load_comparison(recipe, out=tmp_path / "out")
    tasks = [CellTask(c.config, comparison.out / c.name) for c in comparison.cells()]
    assert [len(b) for b in split(tasks, 2)] == [1, 1, 1, 1]


def test_convolutional_networks_regression_and_early_stopping_do_not_stack() -> None:
    """A grouped convolution's sums depend on the stack's size, torch's Gaussian NLL branches on its
    data (vmap refuses it), and networks that stop early stop apart."""
    mlp = build_model("mlp", (12,), 4, torch.Generator().manual_seed(0))
    validation = data((12,), 8, 0)
    assert stackable(mlp, MCDropoutParams(), None)
    assert stackable(mlp, MCDropoutParams(), validation)
    assert not stackable(mlp, MCDropoutParams(early_stopping=3), validation)
    assert not stackable(build_model("mlp_regression", (12,), 2, torch.Generator(), "regression"), MCDropoutParams(), None)
    for model in ("gal_cnn", "kirsch_cnn"):
        assert not stackable(build_model(model, (1, 28, 28), 4, torch.Generator().manual_seed(0)), MCDropoutParams(), None)
