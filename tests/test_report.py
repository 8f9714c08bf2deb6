"""Report: summary numbers against a hand-made curves frame, report files that exist and open."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
import tomli_w
from PIL import Image

from alab.errors import AlabError
from alab.report import cell_table, summarize, write_comparison_report, write_report

# Two strategies x two seeds, three points each (10, 20, 30 labels).
CURVES = {
    ("bald", 0): [0.5, 0.7, 0.9],
    ("bald", 1): [0.6, 0.8, 0.8],
    ("random", 0): [0.4, 0.5, 0.6],
    ("random", 1): [0.5, 0.5, 0.7],
}
N_LABELED = [10, 20, 30]


def curves_frame() -> pd.DataFrame:
    rows = [
        {"round": r, "n_labeled": n, "accuracy": a, "strategy": s, "seed": seed}
        for (s, seed), accs in CURVES.items()
        for r, (n, a) in enumerate(zip(N_LABELED, accs))
    ]
    return pd.DataFrame(rows)


def test_summary_against_hand_computed_numbers() -> None:
    summary = summarize(curves_frame(), [0.8, 0.9]).set_index("strategy")
    bald = summary.loc["bald"]
    # Trapezoids over 20 labels: seed 0 (6 + 8) / 20 = 0.70, seed 1 (7 + 8) / 20 = 0.75.
    assert bald["auc_mean"] == pytest.approx(0.725, abs=1e-12)
    assert bald["auc_std"] == pytest.approx(math.sqrt(2 * 0.025**2), abs=1e-12)
    assert bald["final_accuracy_mean"] == pytest.approx(0.85, abs=1e-12)
    assert bald["seeds"] == 2 and bald["final_labels"] == 30
    # The seed-mean curve is 0.55, 0.75, 0.85: 80% at 30 labels, 90% never, though seed 0 gets there at 30.
    assert bald["labels_to_0.80_mean_curve"] == 30 and bald["reached_0.80"] == 2  # seeds at 30 and 20
    assert math.isnan(bald["labels_to_0.90_mean_curve"]) and bald["reached_0.90"] == 1
    assert bald["labels_to_0.80_median"] == 25 and math.isinf(bald["labels_to_0.90_median"])  # (30 + 20) / 2; (30 + inf) / 2
    random = summary.loc["random"]
    # seed 0 (4.5 + 5.5) / 20 = 0.5, seed 1 (5 + 6) / 20 = 0.55.
    assert random["auc_mean"] == pytest.approx(0.525, abs=1e-12)
    assert random["reached_0.80"] == 0 and math.isnan(random["labels_to_0.80_mean_curve"])


def test_cell_table_has_one_row_per_seed() -> None:
    cells = cell_table(curves_frame(), [0.8])
    assert len(cells) == 4
    row = cells[(cells["strategy"] == "bald") & (cells["seed"] == 1)].iloc[0]
    assert row["auc"] == pytest.approx(0.75, abs=1e-12) and row["labels_to_0.80"] == 20


def test_summary_refuses_a_frame_without_the_grid_columns() -> None:
    with pytest.raises(AlabError, match="columns"):
        summarize(curves_frame().drop(columns="seed"), [0.8])


def fake_comparison(root: Path, *, unfinished: str | None = None) -> Path:
    """A comparison directory as `alab compare` leaves it, written by hand."""
    paper = {"source": "A paper, Table 1", "unit": "acquired", "statistic": "mean_curve", "runs": 3,
             "labels_to_reach": {"0.80": {"bald": {"value": 15, "low": 10, "high": 20}, "random": 30}}}
    recipe = {"dataset": "digits", "initial": 10, "query_size": 10, "compare": {"strategies": ["bald", "random"], "seeds": 2,
              "targets": [0.9], "paper": paper}}  # fmt: skip
    (root / "compare.toml").parent.mkdir(parents=True, exist_ok=True)
    (root / "compare.toml").write_text(tomli_w.dumps(recipe))
    for (strategy, seed), accs in CURVES.items():
        cell = root / "cells" / f"{strategy}-s{seed}"
        cell.mkdir(parents=True)
        (cell / "config.toml").write_text(tomli_w.dumps({"strategy": strategy, "seed": seed, "dataset": "digits", "backend": {"name": "mc_dropout"}}))
        status = "running" if cell.name == unfinished else "finished"
        (cell / "run.json").write_text(json.dumps({"status": status}))
        (cell / "timing.json").write_text(json.dumps({"wall_seconds": 10.0, "cpu_seconds": 4.0}))
        pd.DataFrame({"round": range(3), "n_labeled": N_LABELED, "accuracy": accs}).to_csv(cell / "curve.csv", index=False)
    return root


def test_comparison_report_files_exist_and_open(tmp_path: Path) -> None:
    out = fake_comparison(tmp_path / "cmp")
    summary = write_comparison_report(out)
    for name in ("curves.csv", "cells.csv", "summary.csv", "report.md", "learning_curves.png", "learning_curves.svg"):
        assert (out / name).stat().st_size > 0, name
    with Image.open(out / "learning_curves.png") as image:
        image.verify()
    assert ET.parse(out / "learning_curves.svg").getroot().tag.endswith("svg")
    curves = pd.read_csv(out / "curves.csv")
    assert {"strategy", "seed", "backend", "dataset", "cell", "accuracy", "n_labeled"} <= set(curves.columns)
    assert len(curves) == 12
    assert set(summary["strategy"]) == {"bald", "random"}
    report = (out / "report.md").read_text()
    assert "A paper, Table 1" in report
    assert "| strategy | paper, acquired | paper's range | ours, acquired | ours per seed | seeds reached | ours, total labels |" in report
    # 80%: the seed-mean curve reaches it at 30 labels in all, 20 acquired after the 10 initial; seeds at 30 and 20
    assert "| bald | 15 | 10–20 | 20 | 10–20 | 2/2 | 30 |" in report
    assert "| random | 30 | – | not reached | – | 0/2 | not reached |" in report
    assert "| bald | 2 |" in report and "not reached (1/2 seeds)" in report  # the summary's 90%: the mean curve never gets there
    assert "| all cells | 40 | 16 |" in report  # cost summed over the four cells


def test_unfinished_cells_are_named_and_left_out(tmp_path: Path) -> None:
    out = fake_comparison(tmp_path / "cmp", unfinished="bald-s1")
    summary = write_comparison_report(out).set_index("strategy")
    assert summary.loc["bald", "seeds"] == 1 and summary.loc["bald", "auc_mean"] == pytest.approx(0.7, abs=1e-12)
    assert "Not finished (left out of every number below): bald-s1" in (out / "report.md").read_text()


def test_report_of_a_single_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pd.DataFrame({"round": range(3), "n_labeled": N_LABELED, "accuracy": CURVES[("bald", 0)], "nll": [1.0, 0.8, 0.5]}).to_csv(
        run_dir / "curve.csv", index=False
    )
    assert write_report(run_dir) == "run"
    with Image.open(run_dir / "curve.png") as image:
        image.verify()
    row = pd.read_csv(run_dir / "summary.csv").iloc[0]
    assert row["auc"] == pytest.approx(0.7, abs=1e-12) and row["labels_to_0.90"] == 30


def test_report_of_something_else_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(AlabError, match="neither a run directory"):
        write_report(tmp_path)


# ---------------------------------------------------------------- regression: RMSE, lower is better

RMSE_CURVES = {("bald", 0): [9.0, 6.0, 5.0], ("bald", 1): [9.0, 7.0, 4.0], ("random", 0): [9.0, 8.0, 7.0]}


def regression_cell(cell: Path, rmse: list[float]) -> None:
    cell.mkdir(parents=True)
    curve = {"round": range(3), "n_labeled": N_LABELED, "rmse": rmse, "nll": [3.0, 2.5, 2.0],
             "coverage_50": [0.5] * 3, "coverage_90": [0.7, 0.8, 0.85], "coverage_95": [0.8, 0.9, 0.93]}  # fmt: skip
    pd.DataFrame(curve).to_csv(cell / "curve.csv", index=False)


def test_regression_summary_against_hand_computed_numbers(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    (out / "cells").mkdir(parents=True)
    (out / "compare.toml").write_text(tomli_w.dumps({"dataset": "diabetes", "compare": {"targets": [0.9]}}))
    for (strategy, seed), rmse in RMSE_CURVES.items():
        cell = out / "cells" / f"{strategy}-s{seed}"
        regression_cell(cell, rmse)
        (cell / "config.toml").write_text(tomli_w.dumps({"strategy": strategy, "seed": seed, "dataset": "diabetes", "backend": {"name": "mc_dropout"}}))
        (cell / "run.json").write_text(json.dumps({"status": "finished"}))
    summary = write_comparison_report(out).set_index("strategy")
    # Trapezoids over 20 labels: bald seed 0 (75 + 55) / 20 = 6.5, seed 1 (80 + 55) / 20 = 6.75; random (85 + 75) / 20 = 8.
    assert summary.loc["bald", "rmse_auc_mean"] == pytest.approx(6.625, abs=1e-12)
    assert summary.loc["bald", "rmse_auc_std"] == pytest.approx(math.sqrt(2 * 0.125**2), abs=1e-12)
    assert summary.loc["bald", "final_rmse_mean"] == pytest.approx(4.5, abs=1e-12)
    assert summary.loc["random", "final_coverage_95_mean"] == pytest.approx(0.93, abs=1e-12)
    assert not any(c.startswith(("labels_to", "reached", "auc", "final_accuracy")) for c in summary.columns)
    report = (out / "report.md").read_text()
    header = ("| data set | backend | strategy | seeds | AUC of RMSE (lower is better) | final RMSE | final NLL "
              "| final coverage 90% (nominal 0.90) | final coverage 95% (nominal 0.95) |")  # fmt: skip
    assert header in report and "labels to" not in report and "not used for regression" in report
    assert report.index("| diabetes | mc_dropout | bald | 2 | 6.6250 ± 0.1768 | 4.5000 ± 0.7071 |") < report.index("| random |")
    cells = pd.read_csv(out / "cells.csv")
    assert list(cells.columns[:11]) == ["dataset", "backend", "strategy", "seed", "n_rounds", "final_labels", "rmse_auc",
                                        "final_rmse", "final_nll", "final_coverage_90", "final_coverage_95"]  # fmt: skip
    with Image.open(out / "learning_curves.png") as image:
        image.verify()


def test_report_of_a_single_regression_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    regression_cell(run_dir, RMSE_CURVES[("bald", 0)])
    assert write_report(run_dir) == "run"
    summary = pd.read_csv(run_dir / "summary.csv")
    assert list(summary.columns) == ["rounds", "final_labels", "rmse_auc", "final_rmse", "final_nll", "final_coverage_90", "final_coverage_95"]
    assert summary["rmse_auc"].iloc[0] == pytest.approx(6.5, abs=1e-12) and summary["final_coverage_90"].iloc[0] == 0.85


@pytest.mark.parametrize("columns", [["n_labeled", "nll"], ["n_labeled", "accuracy", "rmse"]], ids=["neither", "both"])
def test_a_curve_must_be_of_one_task(columns: list[str]) -> None:
    frame = pd.DataFrame({c: [0.5] for c in columns}).assign(strategy="bald", seed=0)
    with pytest.raises(AlabError, match="accuracy \\(classification\\) or rmse \\(regression\\)"):
        summarize(frame, [0.8])


# Four seeds at 10, 20, 30 labels; the mean curves of their four triples worked by hand below.
FOUR_SEEDS = {0: [0.5, 0.9, 0.9], 1: [0.5, 0.6, 0.9], 2: [0.5, 0.6, 0.6], 3: [0.9, 0.9, 0.9]}


def four_seed_curves() -> pd.DataFrame:
    return pd.DataFrame([{"strategy": "bald", "seed": seed, "n_labeled": n, "accuracy": a}
                         for seed, accs in FOUR_SEEDS.items() for n, a in zip(N_LABELED, accs)])  # fmt: skip


def test_the_mean_curve_of_every_three_seeds_against_hand_computed_crossings() -> None:
    from alab.reproduction import on_mean_curves_of_subsets

    # Triples (0,1,2): 0.5, 0.7, 0.8; (0,1,3): 0.63, 0.8, 0.9; (0,2,3): 0.63, 0.8, 0.8; (1,2,3): 0.63, 0.7, 0.8.
    assert on_mean_curves_of_subsets(four_seed_curves(), 0.72, 3) == [30, 20, 20, 30]
    assert on_mean_curves_of_subsets(four_seed_curves(), 0.85, 3) == [None, 30, None, None]
    assert on_mean_curves_of_subsets(four_seed_curves(), 0.8, 4) == [30]  # all four: 0.6, 0.75, 0.825
    # A seed cut short at 20 labels: only the label counts every seed reached (10, 20) are averaged.
    short = four_seed_curves().query("not (seed == 3 and n_labeled == 30)")
    assert on_mean_curves_of_subsets(short, 0.72, 3) == [None, 20, 20, None]


def test_the_paper_section_shows_the_statistic_over_every_choice_of_runs() -> None:
    from alab.reproduction import paper_section, parse_paper

    paper = parse_paper({"source": "A paper", "unit": "acquired", "statistic": "mean_curve", "runs": 3,
                         "labels_to_reach": {"0.72": {"bald": {"value": 12, "low": 10, "high": 20}}}})  # fmt: skip
    report = "\n".join(paper_section(paper, four_seed_curves(), 10, 10))
    assert "ours, mean curve of every 3 of our seeds: median (min–max)" in report
    # Acquired after the 10 initial: the four seeds' mean curve (0.6, 0.75, 0.825) at 10; seeds at 10, 20, never, 0;
    # the triples at 20, 10, 10, 20 -> median 15.
    assert "| bald | 12 | 10–20 | 10 | 0–20 | 3/4 | 20 | 15 (10–20), 4 of 4 reach it |" in report
    three = four_seed_curves().query("seed != 3")
    assert "every 3 of our seeds" not in "\n".join(paper_section(paper, three, 10, 10))  # no more seeds than the paper's runs
